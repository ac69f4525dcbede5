"""Licence-plate reads from camera devices: normalisation, fuzzy search, visits and watchlists."""
