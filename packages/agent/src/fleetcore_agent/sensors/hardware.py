"""Real sensors on a Raspberry Pi: DHT22 (temperature, humidity) and a PIR motion sensor.

They need the `hardware` extra (`pip install fleetcore-agent[hardware]`); without it,
loading one says so instead of failing on import.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from fleetcore_agent.sensors.base import SensorError, Value, register


def _needs(module: str, sensor: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SensorError(
            f"sensors.{sensor}: needs {module}; install fleetcore-agent[hardware]"
        ) from None


class Dht22Sensor:
    """A DHT22 on one GPIO pin (adafruit-circuitpython-dht); a failed read is left out."""

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        self.name = name
        dht = _needs("adafruit_dht", name)
        board = _needs("board", name)
        pin = options.get("pin", "D4")
        if not isinstance(pin, str) or not hasattr(board, pin):
            raise SensorError(f"sensors.{name}.options.pin: a board pin name such as D4")
        self._device = dht.DHT22(getattr(board, pin), use_pulseio=False)

    def read(self) -> dict[str, Value]:
        """Temperature (°C) and humidity (%); the DHT22 often misses a read: none then."""
        try:
            temperature = self._device.temperature
            humidity = self._device.humidity
        except RuntimeError:
            return {}
        out: dict[str, Value] = {}
        if temperature is not None:
            out["temperature"] = float(temperature)
        if humidity is not None:
            out["humidity"] = float(humidity)
        return out

    def close(self) -> None:
        """Release the pin."""
        self._device.exit()


class PirSensor:
    """A PIR motion sensor on one GPIO pin (gpiozero): motion true or false."""

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        self.name = name
        gpiozero = _needs("gpiozero", name)
        pin = options.get("pin", 17)
        if isinstance(pin, bool) or not isinstance(pin, int):
            raise SensorError(f"sensors.{name}.options.pin: a BCM pin number such as 17")
        self._device = gpiozero.MotionSensor(pin)

    def read(self) -> dict[str, Value]:
        """Whether motion is seen now."""
        return {"motion": bool(self._device.motion_detected)}

    def close(self) -> None:
        """Release the pin."""
        self._device.close()


@register("dht22")
def _dht22(name: str, options: Mapping[str, Any]) -> Dht22Sensor:
    return Dht22Sensor(name, options)


@register("pir")
def _pir(name: str, options: Mapping[str, Any]) -> PirSensor:
    return PirSensor(name, options)
