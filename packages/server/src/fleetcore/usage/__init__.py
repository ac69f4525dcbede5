"""Usage metering per organization and UTC day (issue 22): counters, storage, roll-ups."""
