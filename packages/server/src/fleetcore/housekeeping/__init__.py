"""Housekeeping: retention of every table that grows, beside telemetry's own."""
