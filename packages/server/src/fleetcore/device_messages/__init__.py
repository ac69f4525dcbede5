"""What a device said and what we say back, whatever carried it (ThingsBoard's transport API).

The topic grammar and payload encoding are pure (fleetcore_protocol.messages); here a
decoded message from an authenticated device reaches the domain services
(`inbound.DeviceMessages`), and outbound messages leave through a `ports.DeviceOutbox`
that a broker adapter implements (fleetcore.mqtt.transport.EmbeddedTransport today).
"""
