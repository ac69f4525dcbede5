"""The HTTP authentication and authorization endpoints an external broker (EMQX,
mosquitto-go-auth) calls, so a cluster checks devices against Fleetcore directly."""
