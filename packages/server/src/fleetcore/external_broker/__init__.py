"""Devices on an external broker (Mosquitto, EMQX): the platform's own MQTT clients."""
