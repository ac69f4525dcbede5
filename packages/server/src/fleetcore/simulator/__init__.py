"""`fleetcore simulate`: a fleet of simulated devices sending realistic telemetry.

signals.py (pure, seeded signal models per device kind), provision.py (devices sim-0001…
in an organization, through the database like the other CLI commands), links.py (a device's
MQTT or HTTP connection), runner.py (the fleet at a total rate), status.py (the live status
line), cli.py (the command), inprocess.py (the `serve --demo` fleet).
"""
