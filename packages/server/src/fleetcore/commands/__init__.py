"""Device commands: queued, sent over MQTT (native or ThingsBoard RPC) or HTTP long-poll,
answered by the device, or expired or cancelled."""
