"""Archives: closed days of telemetry as Parquet files an organization can read itself."""
