"""The advisory web side: recommendations people approve or reject. Approval turns one into a
command through the commands service and its safety gate (fleetcore.commands.safety_gate);
the analytics that propose them cannot (tests/test_analytics_imports.py)."""
