"""Fleetcore device protocol: topic grammar and payload codecs shared by server and agent."""

__version__ = "0.1.0"
