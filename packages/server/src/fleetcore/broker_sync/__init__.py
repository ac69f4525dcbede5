"""Device credentials in an external Mosquitto's dynamic-security plugin, kept in step with
the database through an outbox (outbox.py, dispatcher.py) and checked by `fleetcore mqtt sync`.
"""
