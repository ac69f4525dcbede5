"""`fleetcore simulate`: a fleet of simulated devices sending realistic telemetry.

signals.py (pure, seeded signal models per device kind), provision.py (devices sim-0001…
in an organization, through the database like the other CLI commands), runner.py (drives
them concurrently over MQTT or HTTP at a total rate), status.py (the live status line).
"""
