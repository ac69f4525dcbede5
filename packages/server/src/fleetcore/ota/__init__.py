"""Over-the-air updates: packages, signing keys, rollouts and device downloads (issue 23)."""
