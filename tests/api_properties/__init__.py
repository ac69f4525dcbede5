"""Schemathesis over the whole OpenAPI schema (tests/support/api_properties.py)."""
