"""Ingest: decode a payload, check it against the device's profile, hand it to the pipeline.

Policy for a partly bad payload: the good readings are stored and each bad one is named in
the answer (a device retrying a batch forever because of one bad value would lose the rest).
A payload with no usable reading at all is refused whole (4xx), and so is one that is not
telemetry (malformed JSON, wrong shape, too big).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from fleetcore.devices.auth_cache import IngestDevice
from fleetcore.errors import Invalid, PayloadTooLarge
from fleetcore.telemetry import metrics
from fleetcore.telemetry.pipeline import IngestPipeline
from fleetcore.telemetry.writer import DeviceReadings
from fleetcore_protocol.telemetry import (
    Kind,
    Limits,
    PayloadError,
    Problem,
    Reading,
    decode_telemetry,
)

LIMITS = Limits()
_KIND_OF_TYPE = {
    "number": Kind.NUMBER,
    "string": Kind.TEXT,
    "boolean": Kind.BOOLEAN,
    "json": Kind.JSON,
}


@dataclass(slots=True)
class Checked:
    """Readings fit to store, problems with the others, and readings kept but flagged."""

    readings: list[Reading] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    flagged: list[Problem] = field(default_factory=list)


class Rules(Protocol):
    """A device profile's ingest rules (the ORM row or a cached copy)."""

    @property
    def telemetry_keys(self) -> list[dict[str, Any]]:
        """Declared keys: {"key", "type", "unit", "min", "max"}."""

    @property
    def out_of_range(self) -> str:
        """ "reject" or "flag"."""


def check_against_profile(readings: list[Reading], profile: Rules | None, checked: Checked) -> None:
    """Known key, right type, in range (out of range: refused or flagged, per profile)."""
    declared = {k["key"]: k for k in profile.telemetry_keys} if profile else {}
    if not declared:  # a profile without keys accepts any key
        checked.readings.extend(readings)
        return
    assert profile is not None
    for r in readings:
        spec = declared.get(r.key)
        if spec is None:
            checked.problems.append(
                Problem("KEY_UNKNOWN", "the device profile does not declare this key", key=r.key)
            )
            continue
        expected = _KIND_OF_TYPE[spec.get("type", "number")]
        if r.kind is not expected:
            checked.problems.append(
                Problem("TYPE_MISMATCH", f"expected a {spec.get('type', 'number')}", key=r.key)
            )
            continue
        low, high = spec.get("min"), spec.get("max")
        if r.kind is Kind.NUMBER and (
            (low is not None and r.value < low) or (high is not None and r.value > high)
        ):
            problem = Problem("OUT_OF_RANGE", f"{r.value} is outside [{low}, {high}]", key=r.key)
            if profile.out_of_range == "flag":
                checked.flagged.append(problem)
            else:
                checked.problems.append(problem)
                continue
        checked.readings.append(r)


def decode_and_check(payload: bytes, profile: Rules | None, *, now_ms: int) -> Checked:
    """Pure: payload bytes to readings fit for this profile, with every problem named."""
    try:
        decoded = decode_telemetry(payload, now_ms=now_ms, limits=LIMITS, loads=orjson.loads)
    except PayloadError as exc:
        metrics.REJECTED.labels(exc.code).inc()
        if exc.code == "PAYLOAD_TOO_LARGE":
            raise PayloadTooLarge(exc.message, code=exc.code) from None
        raise Invalid(exc.message, code=exc.code) from None
    checked = Checked(problems=list(decoded.problems))
    check_against_profile(decoded.readings, profile, checked)
    return checked


_ACCEPTED: dict[str, Any] = {}


def _accepted(transport: str) -> Any:
    """The accepted counter of a transport (a labelled child found once, not per request)."""
    counter = _ACCEPTED.get(transport)
    if counter is None:
        counter = _ACCEPTED[transport] = metrics.ACCEPTED.labels(transport)
    return counter


async def ingest(
    pipeline: IngestPipeline,
    *,
    device: IngestDevice,
    payload: bytes,
    transport: str,
    admit: Callable[[uuid.UUID, int], None] | None = None,
) -> dict[str, Any]:
    """Store a device's payload; returns after the commit with what was stored and refused.
    `admit(organization_id, readings)` may refuse the readings (a plan's quota) by raising."""
    checked = decode_and_check(payload, device.profile, now_ms=int(time.time() * 1000))
    for problem in checked.problems:
        metrics.REJECTED.labels(problem.code).inc()
    if not checked.readings:
        raise Invalid(
            "no reading in the payload could be accepted",
            code="NO_VALID_READINGS",
            details={"rejected": [p.as_dict() for p in checked.problems]},
        )
    if admit is not None:
        admit(device.organization_id, len(checked.readings))
    _accepted(transport).inc(len(checked.readings))
    outcome = await pipeline.submit(
        DeviceReadings(device.id, device.organization_id, checked.readings, transport)
    )
    return {
        "stored": outcome.stored,
        "duplicates": outcome.duplicates,
        "rejected": [p.as_dict() for p in checked.problems],
        "flagged": [p.as_dict() for p in checked.flagged],
    }
