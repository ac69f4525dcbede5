"""Self-update: download, verify, install beside, switch, health-check, roll back."""
