"""Streaming anomaly detectors, one per series (device, key): bounded work per reading,
state that survives a restart, six switchable methods (fleetcore.analytics.findings.Method).

`SeriesDetector(key, Sensitivity(...))`, then `observe(reading) -> list[Finding]` for each
reading in time order; `state()` / `SeriesDetector.from_state(...)` to persist it.
"""

from fleetcore.analytics.detect.sensitivity import Sensitivity
from fleetcore.analytics.detect.series import MAX_ABS, SeriesDetector

__all__ = ["MAX_ABS", "Sensitivity", "SeriesDetector"]
