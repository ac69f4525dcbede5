"""Sensor plug-ins, loaded by name from the config (`sensors: [{type, name, options}]`)."""

from fleetcore_agent.sensors import hardware, simulated, system
from fleetcore_agent.sensors.base import Sensor, SensorError, create, kinds, register

__all__ = [
    "Sensor",
    "SensorError",
    "create",
    "hardware",
    "kinds",
    "register",
    "simulated",
    "system",
]
