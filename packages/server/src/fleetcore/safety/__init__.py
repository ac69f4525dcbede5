"""The safety validator: the control side's gate between an approved recommendation and a
device command. A profile's policy (policy.py) bounds what any approved action may do; the
validator (validator.py) checks one request against it and the device's state, as a pure
function. Nothing here imports the analytics, the commands service or the database: the
caller gathers the context and acts on the verdict (docs/safety.md)."""
