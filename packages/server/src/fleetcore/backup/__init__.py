"""`fleetcore backup` and `fleetcore restore`: a consistent snapshot while ingest runs, a
manifest that describes it, and restores that refuse rather than half-happen."""
