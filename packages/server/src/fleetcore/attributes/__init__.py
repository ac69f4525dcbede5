"""Device attributes: server, shared (desired, versioned) and client (reported) scopes."""
