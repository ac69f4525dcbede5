"""The analytics engine: watches committed telemetry and advises. It finds anomalies, keeps
each device's health and wear estimates, and proposes recommendations; it never acts.

It is an after-commit handler of the ingest pipeline, with its own task behind a bounded
queue (as the rules engine): ingest waits only when the engine is a whole queue behind, and
then slows rather than skipping anything. Only numeric keys a device's profile watches
(DeviceProfile.analytics) are judged; a batch of unwatched devices costs a dict look-up.

State: one SeriesDetector (and, for degrading keys, one WearState) per watched series, loaded
lazily the first time the series is seen, and flushed to analytics_series every
`flush_interval_s` and at stop. After a crash, the readings stored since the last flush are
replayed from the telemetry tables before new ones (the telemetry tables are the log), so a
restart neither skips nor judges twice; a finding the replay repeats (same key, method and
timestamp as a stored one) is not stored again.

Outputs, in one transaction per batch: findings, the devices' health rows and proposed
recommendations (at most one proposed per device and topic); then, after the commit, findings
on the live channel "analytics" and each changed health score as the telemetry key
`analytics.health` (so rules can open alerts on it, and charts show its history).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from operator import attrgetter
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.analytics import config as settings
from fleetcore.analytics import explain, proposals
from fleetcore.analytics.findings import Finding, Method, Reading
from fleetcore.analytics.health import WINDOW_MS, Health, health
from fleetcore.analytics.host import HostLost, InlineRunner, Judged, Runner, SeriesId, Setup
from fleetcore.analytics.models import (
    AnalyticsFinding,
    AnalyticsSeries,
    DeviceHealth,
    Recommendation,
    RecommendationStatus,
)
from fleetcore.analytics.wear import Estimate
from fleetcore.db import Database, utcnow
from fleetcore.devices.models import Device, DeviceProfile
from fleetcore.live.hub import LiveEvent, LiveHub
from fleetcore.telemetry.pipeline import IngestPipeline, Overloaded
from fleetcore.telemetry.queries import SeriesRef, device_series, latest_values, read_rows
from fleetcore.telemetry.query_schemas import now_ms
from fleetcore.telemetry.writer import DeviceReadings, DeviceRun, Sample, Stored, device_runs
from fleetcore_protocol.telemetry import Kind
from fleetcore_protocol.telemetry import Reading as Raw

log = structlog.get_logger(__name__)

_TS = attrgetter("ts")
HEALTH_KEY = "analytics.health"
CHANNEL = "analytics"
DEVICE_TTL_S = 30.0  # profile settings are re-read this often (a profile edit takes effect)
REPLAY_MAX = 100_000  # readings replayed per series after a restart; older ones are skipped
RECENT_FINDINGS = 500  # per device, kept for health (7 days at most)
HEALTH_STEP = 0.005  # a smaller change is not written as analytics.health

Call = tuple[SeriesId, list[int], list[float]]  # a series' timestamps and values, to judge
HealthSink = Callable[[uuid.UUID, uuid.UUID, int, float], None]


@dataclass(slots=True)
class _Series:
    """What the engine knows of a series the host judges."""

    wear_spec: settings.WearSpec | None
    last_ts: int  # the latest reading sent to the host
    estimate: Estimate | None = None
    dirty: bool = False  # judged since the last flush


@dataclass(slots=True)
class _Device:
    organization_id: uuid.UUID
    name: str
    config: settings.AnalyticsConfig
    ranges: dict[str, dict[str, Any]]  # the profile's telemetry keys by name
    loaded_at: float
    hex: str  # the device id as the host's series ids spell it
    findings: deque[Finding] = field(default_factory=lambda: deque(maxlen=RECENT_FINDINGS))
    series: dict[str, _Series] = field(default_factory=dict)  # by key, those loaded
    wanted: frozenset[str] = frozenset()  # keys whose current value a proposal may need
    current: dict[str, float] = field(default_factory=dict)  # their latest values seen
    health: float | None = None
    changed: bool = False
    by_clock: bool = False  # the next health is as of the clock, not the latest reading


@dataclass(slots=True)
class _Batch:
    """What one batch produced, written in one transaction."""

    findings: list[tuple[uuid.UUID, Finding]] = field(default_factory=list)
    triggers: list[tuple[uuid.UUID, proposals.Trigger]] = field(default_factory=list)


class AnalyticsEngine:
    """One per process that ingests (as the rules engine)."""

    name = "analytics-engine"

    def __init__(
        self,
        database: Database,
        live: LiveHub,
        *,
        flush_interval_s: float = 30.0,
        max_batches: int = 64,
        explainer: explain.Explainer | None = None,
        health_sink: HealthSink | None = None,
        runner: Runner | None = None,
    ) -> None:
        self.database = database
        self.live = live
        self.flush_interval_s = flush_interval_s
        self.explainer = explainer
        self.health_sink = health_sink
        self.runner: Runner = runner or InlineRunner()
        self._changed: set[uuid.UUID] = set()  # devices whose health must be written
        self._dropped: list[SeriesId] = []  # series the host should forget at the next flush
        # Series judged by this process before: loaded again (host lost, settings changed),
        # they replay the stored readings since their saved state, or all if none was saved.
        self._known: set[tuple[uuid.UUID, str]] = set()
        self._devices: dict[uuid.UUID, _Device | None] = {}  # None: nothing watched
        self._checked: dict[uuid.UUID, float] = {}  # when a device's settings were read
        self._queue: asyncio.Queue[list[DeviceRun] | None] = asyncio.Queue(max_batches)
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._flushed_at = time.monotonic()
        self._inflight = 0
        self.readings = 0  # judged since start (for tests and metrics)

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """False on a database that allows no background writes."""
        return self.database.background_writes_allowed

    @property
    def idle(self) -> bool:
        """Nothing queued or being judged."""
        return self._inflight == 0

    async def start(self) -> None:
        """Start judging committed batches."""
        if self.enabled:
            self._task = asyncio.create_task(self._run(), name="analytics-engine")

    async def stop(self) -> None:
        """Judge what was already committed, save every series' state, then stop."""
        if self._task is not None:
            await self._queue.put(None)
            await self._task
            self._task = None
        if self.enabled:
            async with self._lock:
                try:
                    await self._flush()
                finally:
                    await self.runner.close()

    def forget_settings(self) -> None:
        """Re-read every device's profile settings at its next batch (a profile changed)."""
        self._checked.clear()

    async def on_committed(self, stored: Sequence[Stored]) -> None:
        """After-commit handler: queue the runs of devices that may be watched."""
        if self._task is None:
            return
        runs = [run for run in device_runs(stored) if self._maybe_watched(run[0])]
        if runs:
            self._inflight += 1
            await self._queue.put(runs)

    def _maybe_watched(self, device_id: uuid.UUID) -> bool:
        if device_id not in self._devices:
            return True
        if self._devices[device_id] is not None:
            return True
        # Known to watch nothing: look again once its settings are stale.
        return time.monotonic() - self._checked.get(device_id, 0.0) > DEVICE_TTL_S

    # -- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            timeout = max(self.flush_interval_s - (time.monotonic() - self._flushed_at), 0.05)
            try:
                runs = await asyncio.wait_for(self._queue.get(), timeout)
            except TimeoutError:
                runs = []
            if runs is None:
                return
            try:
                async with self._lock:
                    if runs:
                        await self._judge(runs)
                    if time.monotonic() - self._flushed_at >= self.flush_interval_s:
                        await self._flush()
            except Exception:
                log.exception("analytics_batch_failed")
            finally:
                if runs:
                    self._inflight -= 1

    async def _judge(self, runs: list[DeviceRun]) -> None:
        # The hot path (every reading of a watched device passes here, in the ingest
        # process): plain loops, str-keyed dicts, no per-reading objects beyond a list slot.
        by_device: dict[uuid.UUID, list[Sample]] = {}
        for device_id, _, readings in runs:
            by_device.setdefault(device_id, []).extend(readings)
        await self._load_devices(list(by_device))
        batch = _Batch()
        calls: list[Call] = []
        number = Kind.NUMBER
        for device_id, readings in by_device.items():
            device = self._devices.get(device_id)
            if device is None:
                continue
            watched, wanted = device.config.keys, device.wanted
            per_key: dict[str, list[Sample]] = {}
            for reading in readings:
                key = reading.key
                if reading.kind is not number:
                    continue
                if key in watched:
                    per_key.setdefault(key, []).append(reading)
                if key in wanted:
                    device.current[key] = float(reading.value)  # type: ignore[arg-type]  # NUMBER
            if not per_key:
                continue
            series_of = device.series
            missing = {k: min(r.ts for r in v) for k, v in per_key.items() if k not in series_of}
            if missing:
                await self._load_series(device_id, device, missing)
            for key, items in per_key.items():
                series = device.series.get(key)
                if series is None:
                    continue
                if len(items) > 1:
                    items.sort(key=_TS)
                if items[0].ts <= series.last_ts:  # judged before (replayed, or late)
                    items = [r for r in items if r.ts > series.last_ts]
                    if not items:
                        continue
                series.last_ts = items[-1].ts
                series.dirty = True
                self.readings += len(items)
                calls.append(((device.hex, key), [r.ts for r in items], [r.value for r in items]))  # type: ignore[misc]  # NUMBER
        await self._send(calls, batch)
        if batch.findings or batch.triggers or self._changed:
            await self._persist(batch)

    async def _send(self, calls: list[Call], batch: _Batch) -> None:
        """Have the host judge the readings; take in what it found."""
        if not calls:
            return
        try:
            results: list[Judged] = await self.runner.call("judge", calls)
        except HostLost:
            self._host_lost()
            raise
        for judged in results:
            device_id, key = uuid.UUID(judged.sid[0]), judged.sid[1]
            device = self._devices.get(device_id)
            series = device.series.get(key) if device is not None else None
            if device is None or series is None:
                continue
            known = {(f.key, f.method, f.ts) for f in device.findings if f.key == key}
            for finding in judged.findings:
                if (finding.key, finding.method, finding.ts) in known:
                    continue  # judged before a crash, stored then: not twice
                device.findings.append(finding)
                batch.findings.append((device_id, finding))
                self._changed.add(device_id)
                batch.triggers.append((device_id, _finding_trigger(finding)))
            if judged.estimate is not None and series.wear_spec is not None:
                series.estimate = judged.estimate
                self._changed.add(device_id)
                trigger = proposals.wear_trigger(
                    key, judged.estimate, series.wear_spec.warn_within_ms
                )
                if trigger is not None:
                    batch.triggers.append((device_id, trigger))

    def _host_lost(self) -> None:
        """The host died: every series loads again (saved state, then the stored readings
        since), at its device's next batch."""
        loaded = [d for d in self._devices.values() if d is not None]
        log.error("analytics_host_lost", series=sum(len(d.series) for d in loaded))
        for device in loaded:
            device.series.clear()

    # -- loading -------------------------------------------------------------------------

    async def _load_devices(self, device_ids: list[uuid.UUID]) -> None:
        """Read the profile settings of devices not seen or stale."""
        clock = time.monotonic()
        stale = [d for d in device_ids if clock - self._checked.get(d, 0.0) > DEVICE_TTL_S]
        if not stale:
            return
        async with self.database.session() as session:
            rows = (
                await session.execute(
                    select(
                        Device.id,
                        Device.organization_id,
                        Device.name,
                        DeviceProfile.analytics,
                        DeviceProfile.telemetry_keys,
                    )
                    .join(DeviceProfile, DeviceProfile.id == Device.profile_id)
                    .where(Device.id.in_(stale), Device.deleted_at.is_(None))
                )
            ).all()
            found = {row[0]: row for row in rows}
            for device_id in stale:
                self._checked[device_id] = clock
                row = found.get(device_id)
                config = settings.parse(row[3]) if row is not None else None
                if row is None or config is None or not config.watching:
                    self._drop_device(device_id)
                    continue
                ranges = {k["key"]: k for k in row[4] or [] if isinstance(k, dict) and "key" in k}
                old = self._devices.get(device_id)
                if old is not None and old.config == config and old.ranges == ranges:
                    continue
                device = _Device(row[1], row[2], config, ranges, clock, device_id.hex)
                device.wanted = frozenset(
                    value.from_key
                    for rule in config.recommend
                    for value in rule.params.values()
                    if isinstance(value, settings.ParamFrom)
                )
                since = now_ms() - WINDOW_MS
                stored = (
                    await session.scalars(
                        select(AnalyticsFinding)
                        .where(AnalyticsFinding.device_id == device_id, AnalyticsFinding.ts > since)
                        .order_by(AnalyticsFinding.ts.desc())
                        .limit(RECENT_FINDINGS)
                    )
                ).all()
                device.findings.extend(_finding_of(row) for row in reversed(stored))
                # The old entry goes only now, with no await before the new one is in:
                # on_committed runs during the reads above, and an entry of None (watches
                # nothing) just checked would make it skip the device's batches.
                self._drop_device(device_id)
                self._devices[device_id] = device

    def _drop_device(self, device_id: uuid.UUID) -> None:
        """Forget a device's settings and series (their state since the last flush is
        replayed from telemetry when they are loaded again)."""
        device = self._devices.get(device_id)
        self._devices[device_id] = None
        self._changed.discard(device_id)
        if device is not None:
            self._dropped.extend((device.hex, key) for key in device.series)

    async def _load_series(
        self, device_id: uuid.UUID, device: _Device, first_ts: dict[str, int]
    ) -> None:
        """Load (or start) the series not in memory, replaying what their state missed."""
        missing = [key for key in first_ts if key not in device.series]
        if not missing:
            return
        async with self.database.session() as session:
            saved = {
                row.key: row
                for row in (
                    await session.scalars(
                        select(AnalyticsSeries).where(
                            AnalyticsSeries.device_id == device_id,
                            AnalyticsSeries.key.in_(missing),
                        )
                    )
                ).all()
            }
            refs = {
                ref.key: ref
                for ref in await device_series(
                    session, device_id, device.organization_id, missing, kind=Kind.NUMBER
                )
            }
            setups = []
            for key in missing:
                key_settings = device.config.keys[key]
                spec = key_settings.wear
                row = saved.get(key)
                setups.append(
                    Setup(
                        sid=(device_id.hex, key),
                        sensitivity=settings.sensitivity(
                            key_settings, device.ranges.get(key)
                        ).to_dict(),
                        wear=spec.config() if spec is not None else None,
                        detector_state=row.detector if row is not None else None,
                        wear_state=row.wear if row is not None else None,
                    )
                )
                device.series[key] = _Series(spec, -1 if row is None else row.last_ts)
            try:
                fresh = await self.runner.call("setup", setups)
            except HostLost:
                self._host_lost()
                raise
            for _, key in fresh:
                log.warning("analytics_state_unreadable", device_id=str(device_id), key=key)
            for key in missing:
                ref = refs.get(key)
                last_ts = device.series[key].last_ts
                judged_before = key in saved or (device_id, key) in self._known
                self._known.add((device_id, key))
                if judged_before and ref is not None and last_ts < first_ts[key] - 1:
                    await self._replay(session, device_id, device, key, ref, first_ts[key])

    async def _replay(
        self,
        session: AsyncSession,
        device_id: uuid.UUID,
        device: _Device,
        key: str,
        ref: SeriesRef,
        until: int,
    ) -> None:
        """Judge the stored readings between the saved state and this batch."""
        series = device.series[key]
        rows = await read_rows(session, [ref], series.last_ts + 1, until, limit=REPLAY_MAX)
        if not rows:
            return
        log.info("analytics_replay", device_id=str(device_id), key=key, readings=len(rows))
        series.last_ts = rows[-1].ts
        series.dirty = True
        self.readings += len(rows)
        batch = _Batch()
        call = ((device.hex, key), [r.ts for r in rows], [float(r.value) for r in rows])
        await self._send([call], batch)
        if batch.findings or batch.triggers:
            await self._persist(batch)

    # -- writing -------------------------------------------------------------------------

    async def _persist(self, batch: _Batch) -> None:
        """Findings, health and proposals in one transaction; then tell the live hub."""
        now = now_ms()
        stored: list[tuple[uuid.UUID, AnalyticsFinding]] = []
        healths: dict[uuid.UUID, Health] = {}
        async with self.database.session(write=True) as session:
            for device_id, finding in batch.findings:
                device = self._devices.get(device_id)
                if device is None:
                    continue
                row = _finding_row(device_id, device.organization_id, finding)
                row.explanation = await explain.explain(self.explainer, finding, device.name)
                session.add(row)
                stored.append((device_id, row))
            changed, self._changed = self._changed, set()
            for device_id in changed:
                device = self._devices.get(device_id)
                if device is not None:
                    healths[device_id] = await self._save_health(session, device_id, device, now)
            await session.flush()
            for device_id, trigger in batch.triggers:
                device = self._devices.get(device_id)
                if device is not None:
                    await self._propose(session, device_id, device, trigger, stored)
            await session.commit()
        for device_id, row in stored:
            self._publish(device_id, row)
        for device_id, result in healths.items():
            device = self._devices.get(device_id)
            if device is None or self.health_sink is None:
                continue
            if device.health is None or abs(result.score - device.health) >= HEALTH_STEP:
                device.health = result.score
                self.health_sink(device_id, device.organization_id, now, round(result.score, 4))

    async def _save_health(
        self, session: AsyncSession, device_id: uuid.UUID, device: _Device, now: int
    ) -> Health:
        estimates = {key: s.estimate for key, s in device.series.items() if s.estimate is not None}
        latest = max((s.last_ts for s in device.series.values()), default=0)
        # As of the device's latest reading (history sent late is judged as of its time);
        # the periodic refresh ages it by the clock.
        now = max(now, latest) if device.by_clock else latest
        device.by_clock = False
        result = health(device.findings, estimates, now)
        wear = {
            key: {**proposals.estimate_dict(e), "threshold": self._threshold(device, key)}
            for key, e in estimates.items()
        }
        open_findings = sum(1 for f in device.findings if now - f.ts <= WINDOW_MS)
        values: dict[str, Any] = {
            "device_id": device_id,
            "organization_id": device.organization_id,
            "score": result.score,
            "score_day_ago": result.score_day_ago,
            "trend": result.trend,
            "contributors": [
                {"key": c.key, "source": c.source, "reason": c.reason, "penalty": c.penalty}
                for c in result.contributors
            ],
            "wear": wear,
            "open_findings": open_findings,
            "updated_at": utcnow(),
        }
        insert = (postgresql.insert if self.database.dialect == "postgresql" else sqlite.insert)(
            DeviceHealth
        ).values(**values)
        await session.execute(
            insert.on_conflict_do_update(
                index_elements=[DeviceHealth.device_id],
                set_={k: insert.excluded[k] for k in values if k != "device_id"},
            )
        )
        return result

    @staticmethod
    def _threshold(device: _Device, key: str) -> float | None:
        spec = device.config.keys[key].wear if key in device.config.keys else None
        return spec.threshold if spec is not None else None

    async def _propose(
        self,
        session: AsyncSession,
        device_id: uuid.UUID,
        device: _Device,
        trigger: proposals.Trigger,
        stored: list[tuple[uuid.UUID, AnalyticsFinding]],
    ) -> None:
        """Insert each proposal unless one on its topic is already waiting."""
        rules = device.config.recommend
        if device.wanted - device.current.keys():
            latest = await latest_values(session, device.organization_id, [device_id])
            for name, value in latest.get(device_id, {}).items():
                if isinstance(value.value, int | float) and not isinstance(value.value, bool):
                    device.current.setdefault(name, float(value.value))
        evidence_id = next(
            (
                row.id
                for d, row in stored
                if d == device_id and row.key == trigger.key and row.method == trigger.on
            ),
            None,
        )
        for proposal in proposals.propose(trigger, rules, device.current):
            waiting = await session.scalar(
                select(Recommendation.id).where(
                    Recommendation.device_id == device_id,
                    Recommendation.topic == proposal.topic,
                    Recommendation.status == RecommendationStatus.PROPOSED,
                )
            )
            if waiting is not None:
                continue
            evidence = dict(proposal.evidence)
            if evidence_id is not None:
                evidence["finding_id"] = evidence_id
            created = utcnow()
            try:
                async with session.begin_nested():
                    session.add(
                        Recommendation(
                            organization_id=device.organization_id,
                            device_id=device_id,
                            kind=proposal.kind,
                            topic=proposal.topic,
                            title=proposal.title,
                            rationale=proposal.rationale,
                            method=proposal.method,
                            params=proposal.params,
                            evidence=evidence,
                            created_at=created,
                            expires_at=created + timedelta(seconds=proposal.expires_after_s),
                        )
                    )
            except IntegrityError:  # proposed meanwhile by another process: one is enough
                continue
            log.info("recommendation_proposed", device_id=str(device_id), topic=proposal.topic)

    def _publish(self, device_id: uuid.UUID, row: AnalyticsFinding) -> None:
        org = row.organization_id
        if not self.live.wanted(org, CHANNEL):
            return
        message = {"type": "finding", "device_id": str(device_id), "finding": finding_json(row)}
        self.live.publish(LiveEvent(org, CHANNEL, device_id, message))

    async def _flush(self) -> None:
        """Save the state of every series judged since the last flush."""
        self._flushed_at = time.monotonic()
        if self._dropped:
            dropped, self._dropped = self._dropped, []
            await self.runner.call("drop", dropped)
        dirty = [
            (device.hex, key)
            for device in self._devices.values()
            if device is not None
            for key, series in device.series.items()
            if series.dirty
        ]
        if not dirty:
            return
        try:
            states = await self.runner.call("snapshot", dirty)
        except HostLost:
            self._host_lost()
            raise
        rows = []
        flushed: list[_Series] = []
        stamp = utcnow()
        for (device_hex, key), detector, wear in states:
            device_id = uuid.UUID(device_hex)
            device = self._devices.get(device_id)
            series = device.series.get(key) if device is not None else None
            if device is None or series is None:
                continue
            flushed.append(series)
            rows.append(
                {
                    "device_id": device_id,
                    "key": key,
                    "organization_id": device.organization_id,
                    "detector": detector,
                    "wear": wear,
                    "last_ts": series.last_ts,
                    "updated_at": stamp,
                }
            )
        if not rows:
            return
        dialect = postgresql if self.database.dialect == "postgresql" else sqlite
        async with self.database.session(write=True) as session:
            live = set(
                (
                    await session.scalars(
                        select(Device.id).where(
                            Device.id.in_({r["device_id"] for r in rows}),
                            Device.deleted_at.is_(None),
                        )
                    )
                ).all()
            )
            rows = [r for r in rows if r["device_id"] in live]  # a deleted device: nothing
            for first in range(0, len(rows), 200):
                insert = dialect.insert(AnalyticsSeries).values(rows[first : first + 200])
                await session.execute(
                    insert.on_conflict_do_update(
                        index_elements=[AnalyticsSeries.device_id, AnalyticsSeries.key],
                        set_={
                            "detector": insert.excluded.detector,
                            "wear": insert.excluded.wear,
                            "last_ts": insert.excluded.last_ts,
                            "updated_at": insert.excluded.updated_at,
                        },
                    )
                )
            await session.commit()
        for series in flushed:  # (a failed write leaves them dirty: the next flush retries)
            series.dirty = False

    async def refresh_health(self) -> None:
        """Periodic: recompute health of devices with findings, as they age."""
        if not self.enabled:
            return
        async with self._lock:
            for device_id, device in self._devices.items():
                if device is not None and device.findings:
                    device.by_clock = True
                    self._changed.add(device_id)
            await self._persist(_Batch())


def health_reading(pipeline: IngestPipeline) -> HealthSink:
    """A health sink writing the score as the device's analytics.health reading."""

    def sink(device_id: uuid.UUID, organization_id: uuid.UUID, ts: int, score: float) -> None:
        reading = Raw(HEALTH_KEY, ts, Kind.NUMBER, score)
        item = DeviceReadings(device_id, organization_id, [reading], "analytics")
        try:
            pipeline.enqueue(item)
        except Overloaded:  # a derived value: the next change writes it again
            log.info("analytics_health_not_written", device_id=str(device_id))

    return sink


def _finding_trigger(finding: Finding) -> proposals.Trigger:
    return proposals.Trigger(
        on=finding.method.value,
        key=finding.key,
        severity=finding.severity,
        rationale=explain.template(finding),
        evidence={
            "finding": {
                "method": finding.method.value,
                "score": finding.score,
                "threshold": finding.threshold,
                "expected_low": finding.expected_low,
                "expected_high": finding.expected_high,
                "ts": finding.ts,
            }
        },
    )


def _finding_row(
    device_id: uuid.UUID, organization_id: uuid.UUID, finding: Finding
) -> AnalyticsFinding:
    return AnalyticsFinding(
        organization_id=organization_id,
        device_id=device_id,
        key=finding.key,
        method=finding.method.value,
        severity=finding.severity,
        ts=finding.ts,
        score=finding.score,
        threshold=finding.threshold,
        expected_low=finding.expected_low,
        expected_high=finding.expected_high,
        evidence=[[r.ts, r.value] for r in finding.evidence],
    )


def _finding_of(row: AnalyticsFinding) -> Finding:
    return Finding(
        method=Method(row.method),
        key=row.key,
        ts=row.ts,
        score=row.score,
        threshold=row.threshold,
        expected_low=row.expected_low,
        expected_high=row.expected_high,
        evidence=tuple(Reading(int(ts), float(v)) for ts, v in row.evidence),
        severity="critical" if row.severity == "critical" else "warning",
    )


def finding_json(row: AnalyticsFinding) -> dict[str, Any]:
    """A stored finding as JSON (the live message and the API)."""
    return {
        "id": row.id,
        "device_id": str(row.device_id),
        "key": row.key,
        "method": row.method,
        "severity": row.severity,
        "ts": row.ts,
        "score": row.score,
        "threshold": row.threshold,
        "expected_low": row.expected_low,
        "expected_high": row.expected_high,
        "evidence": row.evidence,
        "explanation": row.explanation,
    }
