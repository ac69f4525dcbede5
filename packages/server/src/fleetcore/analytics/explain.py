"""Findings in words: a plug-in interface and the deterministic template that is the default.

An explainer turns a finding into one sentence for people (the findings list, the
recommendation's rationale). The template needs nothing and always answers. A plug-in (for
example one calling a language model) is named by FLEETCORE_ANALYTICS_EXPLAINER
("package.module:attribute", off by default); it gets a time budget and the template answers
whenever it is slow, fails or says nothing, so no finding ever waits on it.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import Protocol

import structlog

from fleetcore.analytics.findings import Finding, Method

log = structlog.get_logger(__name__)
PLUGIN_TIMEOUT_S = 2.0
MAX_SENTENCE = 1000

_WHAT = {
    Method.ROBUST_Z: "is far from its recent median",
    Method.EWMA: "departs from its usual level for this time of day",
    Method.SPIKE: "jumped for a single reading and came back",
    Method.STUCK: "has not changed for {score:.0f} readings although it normally varies",
    Method.DRIFT: "has shifted its level and stayed there",
    Method.RANGE: "is outside the profile's range",
}


def _number(value: float | None) -> str:
    return "?" if value is None else f"{value:.4g}"


def template(finding: Finding) -> str:
    """The default sentence: what the key did, the value, the band it was expected in."""
    what = _WHAT.get(finding.method, "is anomalous").format(score=finding.score)
    last = finding.evidence[-1].value if finding.evidence else None
    text = f"{finding.key} {what}"
    if finding.method is not Method.STUCK and last is not None:
        text += f": {_number(last)}"
    if finding.expected_low is not None or finding.expected_high is not None:
        text += f", expected {_number(finding.expected_low)} to {_number(finding.expected_high)}"
    if finding.method not in (Method.STUCK, Method.RANGE):
        text += f" (score {finding.score:.1f}, threshold {finding.threshold:.1f})"
    return text + "."


class Explainer(Protocol):
    """A plug-in: one sentence for a finding, or None to leave it to the template."""

    async def explain(self, finding: Finding, device_name: str) -> str | None: ...


def load(spec: str | None) -> Explainer | None:
    """The plug-in named "module:attribute" (an instance or a class made without arguments)."""
    if not spec:
        return None
    module_name, _, attribute = spec.partition(":")
    target = getattr(importlib.import_module(module_name), attribute)
    return target() if isinstance(target, type) else target  # type: ignore[no-any-return]


async def explain(plugin: Explainer | None, finding: Finding, device_name: str) -> str:
    """The plug-in's sentence within PLUGIN_TIMEOUT_S, else the template's."""
    if plugin is not None:
        try:
            text = await asyncio.wait_for(plugin.explain(finding, device_name), PLUGIN_TIMEOUT_S)
        except Exception as error:  # a plug-in's failure is never the finding's
            log.warning("explainer_failed", error=type(error).__name__)
        else:
            if isinstance(text, str) and text.strip():
                return text.strip()[:MAX_SENTENCE]
    return template(finding)
