"""What the detectors report: a finding with its method, score, expected band and evidence.

Pure data, shared by the detectors (fleetcore.analytics.detect), health and wear
(fleetcore.analytics.wear) and the services that store and show findings.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

Severity = Literal["info", "warning", "critical"]
MAX_EVIDENCE = 20  # readings kept with a finding


class Method(StrEnum):
    """How a finding was detected."""

    ROBUST_Z = "robust_z"  # far from the rolling median, in MADs
    EWMA = "ewma"  # residual against an EWMA (with a daily baseline where the key has one)
    SPIKE = "spike"  # a single reading far from both neighbours' level
    STUCK = "stuck"  # no change for N samples where the key normally varies
    DRIFT = "drift"  # a sustained shift of the mean (CUSUM / Page-Hinkley)
    RANGE = "range"  # outside the profile's range for the key


@dataclass(frozen=True, slots=True)
class Reading:
    """One numeric reading of a series: epoch milliseconds and value."""

    ts: int
    value: float


@dataclass(frozen=True, slots=True)
class Finding:
    """One anomaly on one series: what, how sure (score), what was expected, and why."""

    method: Method
    key: str
    ts: int  # the reading that completed the evidence (epoch ms)
    score: float  # method-specific, larger = more anomalous; the threshold it crossed below
    threshold: float
    expected_low: float | None  # the band the value was expected in, when the method has one
    expected_high: float | None
    evidence: tuple[Reading, ...]  # the readings that caused it (at most MAX_EVIDENCE)
    severity: Severity = "warning"
