"""The rules engine: evaluates enabled rules on every committed telemetry batch (per device,
in timestamp order) and on a timer for "no data", and opens, repeats and clears alerts.

It runs after the ingest commit, in its own task behind a bounded queue: ingest never waits
for rules unless the engine falls a whole queue behind (then ingest slows, nothing is
skipped). Its state lives in memory and, where it matters across a restart (pending
durations, open alerts), in rule_states, written in the transaction that changes alerts.
Readings older than what was already evaluated for their device are stored but not
evaluated (the dry run evaluates history).

Beside other processes (roles, fleetcore.roles): the engines of api and ingest processes
evaluate the batches they commit and notice rules changed elsewhere (`check_rules`, a job of
each process); the worker's engine runs the "no data" sweep and, holding no batches of its
own, re-reads rules and saved states before each sweep (`sweep_from_storage`), so that
whichever worker runs a tick judges on what is stored.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import structlog
from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.alerts import service as alerts
from fleetcore.alerts.events import AlertBus, AlertChange, stage
from fleetcore.alerts.models import OPEN_STATUSES, Alert
from fleetcore.db import Database, utcnow
from fleetcore.rules import metrics
from fleetcore.rules.conditions import DeviceView
from fleetcore.rules.index import LiveRule, RuleIndex, load_index
from fleetcore.rules.machine import Step, Track, step
from fleetcore.rules.models import Rule, RuleState
from fleetcore.rules.plan import DevicePlan
from fleetcore.rules.warm import warm_views
from fleetcore.telemetry.query_schemas import now_ms
from fleetcore.telemetry.writer import DeviceRun, Sample, Stored, device_runs

log = structlog.get_logger(__name__)
_TS = attrgetter("ts")
_STEPS_PER_YIELD = 500  # rule steps between two yields to the event loop (~0.5 ms)

# (rule, device) as the ints of their uuids: hashed in C, where a uuid hashes in Python.
_Key = tuple[int, int]
# The evaluation state of the rules of one device that are not idle: rule id.int -> Track.
# Kept per device, so that a batch looks up its device once and, for a device with no
# state (the common case), no rule at all.
_Tracks = dict[int, Track]


def _key(rule_id: uuid.UUID, device_id: uuid.UUID) -> _Key:
    return rule_id.int, device_id.int


@dataclass(slots=True)
class _Outcome:
    rule: LiveRule
    device_id: uuid.UUID
    track: Track
    step: Step | None
    ts: int
    values: dict[str, Any]


class RulesEngine:
    """One per process that evaluates rules (the embedded server, or a worker)."""

    name = "rules-engine"

    def __init__(
        self,
        database: Database,
        bus: AlertBus,
        *,
        max_batches: int = 64,
        sweep_from_storage: bool = False,
    ) -> None:
        self.database = database
        self.bus = bus
        self.sweep_from_storage = sweep_from_storage
        self._rules_mark: tuple[int, object] | None = None  # (count, newest update) last seen
        self.index = RuleIndex()
        self._tracks: dict[int, _Tracks] = {}  # device id.int -> its non-idle states
        self._alerts: dict[_Key, uuid.UUID] = {}
        self._views: dict[uuid.UUID, DeviceView] = {}
        self._queue: asyncio.Queue[list[DeviceRun] | None] = asyncio.Queue(max_batches)
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one evaluation (batch, sweep or reload) at a time
        self._meta_loaded_at = 0.0
        self._inflight = 0  # batches queued or being evaluated
        self._stale = False  # a rule changed: rebuild before the next evaluation
        self._rebuilding = False  # the index is being re-read: it does not decide yet
        bus.listeners.append(self._alert_changed)

    @property
    def idle(self) -> bool:
        """Nothing queued or being evaluated."""
        return self._inflight == 0

    @property
    def enabled(self) -> bool:
        """False on a database that allows no background writes."""
        return self.database.background_writes_allowed

    async def start(self) -> None:
        """Load rules and saved state; start evaluating."""
        if not self.enabled:
            return
        async with self._lock:
            try:
                await self._rebuild()
            except Exception as error:  # schema behind or database down: /ready says so
                self._stale = True  # the first batch or sweep tries again
                log.warning("rules_engine_not_loaded", error=str(error).splitlines()[0])
        self._task = asyncio.create_task(self._run(), name="rules-engine")

    async def stop(self) -> None:
        """Evaluate what was already committed, then stop."""
        if self._task is not None:
            await self._queue.put(None)
            await self._task
            self._task = None

    async def reload(self) -> None:
        """A rule changed (committed): rebuild before the next evaluation. Cheap, so that
        creating a thousand rules does not rebuild a thousand times."""
        self._stale = True

    async def _rebuild(self) -> None:
        """Re-read rules, devices and saved state (call holding the lock). Stays stale when
        the read fails, so that the next evaluation tries again."""
        self._stale = False  # a reload() arriving during the read marks it stale again
        self._rebuilding = True
        try:
            async with self.database.session() as session:
                self.index = await load_index(session)
                await self._load_states(session)
        except BaseException:
            self._stale = True
            raise
        finally:
            self._rebuilding = False
        self._views.clear()  # rules may read other keys or windows now
        self._meta_loaded_at = time.monotonic()
        metrics.ACTIVE_RULES.set(len(self.index.rules))

    async def _load_states(self, session: AsyncSession) -> None:
        rows = (
            await session.execute(
                select(RuleState, Alert.status).outerjoin(Alert, Alert.id == RuleState.alert_id)
            )
        ).all()
        self._tracks.clear()
        self._alerts.clear()
        for state, alert_status in rows:
            key = _key(state.rule_id, state.device_id)
            is_open = alert_status in OPEN_STATUSES
            track = Track(state.pending_since, state.latched, is_open)
            self._tracks.setdefault(state.device_id.int, {})[state.rule_id.int] = track
            if is_open and state.alert_id is not None:
                self._alerts[key] = state.alert_id

    # -- ingest ---------------------------------------------------------------------------

    async def on_committed(self, stored: Sequence[Stored]) -> None:
        """After-commit handler: queue the batch (waits only when the engine is far behind)."""
        # While stale or being rebuilt, the index at hand is the old one: every run is queued
        # and the rebuilt index decides (in _evaluate). Judged by the old index during a
        # rebuild, a batch committed meanwhile was dropped: a rule's first readings were
        # never evaluated, and a late reading was then taken for a new one.
        unsure = self._stale or self._rebuilding
        if self._task is None or not (self.index.organization_keys or unsure):
            return
        runs = device_runs(stored)  # no Stored objects made when the whole batch was new
        mine = runs if unsure else self._of_ours(runs)
        if mine:
            self._inflight += 1
            await self._queue.put(mine)
            metrics.QUEUE.set(self._queue.qsize())

    async def _run(self) -> None:
        while True:
            batch = await self._queue.get()
            metrics.QUEUE.set(self._queue.qsize())
            if batch is None:
                return
            begin = time.perf_counter()
            try:
                async with self._lock:
                    await self._evaluate(batch)
            except Exception:
                log.exception("rules_batch_failed", readings=sum(len(r[2]) for r in batch))
            finally:
                self._inflight -= 1
            metrics.BATCH_SECONDS.observe(time.perf_counter() - begin)

    async def _evaluate(self, batch: list[DeviceRun]) -> None:
        if self._stale:
            await self._rebuild()
        by_device = _by_device(self._of_ours(batch))
        if any(d not in self.index.devices for d in by_device):
            await self._refresh_devices()
        cold = {
            device_id: {r.key for r in readings}
            for device_id, readings in by_device.items()
            if device_id not in self._views and self.index.plan(device_id).rules
        }
        if cold:
            await self._warm(cold, first_ts={d: min(r.ts for r in by_device[d]) for d in cold})
        outcomes: list[_Outcome] = []
        evaluations = since_yield = 0
        for device_id, readings in by_device.items():
            plan = self.index.plan(device_id)
            if plan.rules:
                steps = self._device_batch(device_id, plan, readings, outcomes)
                evaluations += steps
                since_yield += steps
                if since_yield >= _STEPS_PER_YIELD:
                    # Let the broker and the writer go on: a big batch would otherwise hold
                    # the event loop for milliseconds and leave ingest waiting.
                    since_yield = 0
                    await asyncio.sleep(0)
        metrics.EVALUATIONS.inc(evaluations)
        if outcomes:
            await self._persist(outcomes)

    def _of_ours(self, runs: list[DeviceRun]) -> list[DeviceRun]:
        """The runs of organizations that have rules."""
        organizations = self.index.organization_keys
        return [run for run in runs if run[1].int in organizations]

    def _device_batch(
        self,
        device_id: uuid.UUID,
        plan: DevicePlan,
        readings: list[Sample],
        outcomes: list[_Outcome],
    ) -> int:
        """Step the rules reading the keys of each timestamp's readings; how many steps.

        The hot loop of the engine (once per reading, and per rule a reading concerns):
        the view is updated inline and the rules come from the plan's key masks."""
        view = self._views[device_id]
        values, windows, masks = view.values, plan.windows, plan.masks
        tracks = self._tracks.get(device_id.int)
        readings.sort(key=_TS)
        steps = 0
        i, count = 0, len(readings)
        while i < count:
            ts = readings[i].ts
            late = view.last_ts is not None and ts < view.last_ts
            mask = plan.always
            j = i
            while j < count:
                reading = readings[j]
                if reading.ts != ts:
                    break
                j += 1
                if late:
                    continue
                key = reading.key
                mask |= masks.get(key, 0)
                if key in windows:
                    view.update(key, ts, reading.value, windows[key])
                else:
                    values[key] = (ts, reading.value)
            if late:
                metrics.LATE.inc(j - i)
                i = j
                continue
            view.last_ts = ts  # (not late: at or after the last)
            i = j
            if not mask:
                continue
            targets = plan.pick(mask)
            steps += len(targets)
            for rule, rule_key, condition in targets:
                track = tracks.get(rule_key) if tracks else None
                # Idle and the condition does not hold: stays idle (the common case).
                if track is None and not condition(view, ts):
                    continue
                self._step(rule, device_id, view, ts, outcomes, track)
                tracks = self._tracks.get(device_id.int)
        return steps

    def _step(
        self,
        rule: LiveRule,
        device_id: uuid.UUID,
        view: DeviceView,
        now: int,
        out: list[_Outcome],
        track: Track | None,
    ) -> None:
        if track is None:
            track = Track()
        before = track.key()
        result = step(rule.compiled, track, view, now)
        if result is None and track.key() == before:
            return
        device = device_id.int
        if track.idle:
            mine = self._tracks.get(device)
            if mine is not None:
                mine.pop(rule.key, None)
                if not mine:
                    del self._tracks[device]
        else:
            self._tracks.setdefault(device, {})[rule.key] = track
        values = {k: view.values[k][1] for k in sorted(rule.needs.keys) if k in view.values}
        out.append(_Outcome(rule, device_id, track, result, now, values))

    # -- "no data" ------------------------------------------------------------------------

    async def sweep(self, at: int | None = None) -> None:
        """Evaluate the rules that watch for silence, at the current time (or `at`, epoch
        ms: tests judge silence at a time of their choosing, not of the machine's speed)."""
        if not self.enabled:
            return
        async with self._lock:
            if self._stale or self.sweep_from_storage:
                await self._rebuild()
            elif time.monotonic() - self._meta_loaded_at > 30:
                await self._refresh_devices()
            silent = [r for r in self.index.rules if r.needs.no_data]
            if not silent:
                return
            pairs = [(rule, d) for rule in silent for d in self.index.devices_of(rule)]
            # What storage knows may be newer than what the engine evaluated (batches can
            # wait in its queue): judge silence on both, without moving the device's view.
            async with self.database.session() as session:
                stored = await warm_views(
                    session, self.index, {d: set[str]() for _, d in pairs}, {}, windows=False
                )
            now = now_ms() if at is None else at
            outcomes: list[_Outcome] = []
            for rule, device_id in pairs:
                view = _newest(self._views.get(device_id), stored.get(device_id))
                if view is not None:
                    metrics.EVALUATIONS.inc()
                    track = self._tracks.get(device_id.int, {}).get(rule.key)
                    self._step(rule, device_id, view, now, outcomes, track)
            if outcomes:
                await self._persist(outcomes)

    async def check_rules(self) -> None:
        """Rebuild before the next evaluation if the rules table changed (another process)."""
        if not self.enabled:
            return
        async with self.database.session() as session:
            count, newest = (
                await session.execute(select(func.count(Rule.id), func.max(Rule.updated_at)))
            ).one()
        mark = (int(count), newest)
        if self._rules_mark is not None and mark != self._rules_mark:
            self._stale = True
        self._rules_mark = mark

    # -- state ----------------------------------------------------------------------------

    async def _refresh_devices(self) -> None:
        """Pick up new devices and moved ones (profile, asset); at most once a second."""
        if time.monotonic() - self._meta_loaded_at < 1:
            return
        async with self.database.session() as session:
            fresh = await load_index(session)
        self.index = RuleIndex(self.index.rules, fresh.devices)
        self._meta_loaded_at = time.monotonic()

    async def _warm(self, cold: dict[uuid.UUID, set[str]], first_ts: dict[uuid.UUID, int]) -> None:
        async with self.database.session() as session:
            views = await warm_views(session, self.index, cold, first_ts)
        for view in views.values():
            # Stored values may come from batches still queued here: they fill the view, but
            # the order of evaluation starts with the batch at hand.
            view.last_ts = None
        self._views.update(views)

    async def _persist(self, outcomes: list[_Outcome]) -> None:
        """Store alert changes and rule states in one transaction, then publish them."""
        changes: list[AlertChange] = []
        try:
            async with self.database.session(write=True) as session:
                for outcome in outcomes:
                    change = await self._apply(session, outcome)
                    if change is not None:
                        changes.append(change)
                    await _save_state(
                        session, outcome, self._alerts.get(_key(outcome.rule.id, outcome.device_id))
                    )
                await session.commit()
        except Exception:
            log.exception("rules_persist_failed", outcomes=len(outcomes))
            async with self.database.session() as session:
                await self._load_states(session)  # back to what is stored
            return
        for change in changes:
            metrics.ALERT_EVENTS.labels(change.event).inc()
        self.bus.committed(changes)

    async def _apply(self, session: AsyncSession, outcome: _Outcome) -> AlertChange | None:
        key = _key(outcome.rule.id, outcome.device_id)
        if outcome.step is Step.OPENED:
            alert, event = await alerts.open_alert(
                session, outcome.rule, outcome.device_id, outcome.ts, outcome.values
            )
            self._alerts[key] = alert.id
            return await stage(session, alert, event)
        alert_id = self._alerts.get(key)
        if outcome.step is Step.REPEATED:
            found = await alerts.repeat_alert(session, alert_id, outcome.ts) if alert_id else None
            if found is None:  # cleared by hand meanwhile: start afresh
                self._forget(key)
                outcome.track.open = outcome.track.latched = False
                return None
            return await stage(session, found, "repeated")
        if outcome.step is Step.CLEARED:
            self._alerts.pop(key, None)
            found = (
                await alerts.clear_by_condition(session, alert_id, outcome.ts, outcome.values)
                if alert_id
                else None
            )
            return None if found is None else await stage(session, found, "cleared")
        return None

    def _forget(self, key: _Key) -> None:
        rule, device = key
        mine = self._tracks.get(device)
        if mine is not None:
            mine.pop(rule, None)
            if not mine:
                del self._tracks[device]
        self._alerts.pop(key, None)

    def _alert_changed(self, change: AlertChange) -> None:
        """A user cleared an alert: the rule starts afresh on that device."""
        if change.cleared_by_hand and change.rule_id is not None:
            self._forget(_key(change.rule_id, change.device_id))


def _by_device(runs: list[DeviceRun]) -> dict[uuid.UUID, list[Sample]]:
    """The batch's readings per device, each a list of the engine's own (it sorts them)."""
    found: dict[int, list[Sample]] = {}
    ids: dict[int, uuid.UUID] = {}
    for device_id, _, readings in runs:
        device = device_id.int  # (an int hashes in C)
        mine = found.get(device)
        if mine is None:
            found[device] = list(readings)
            ids[device] = device_id
        else:
            mine.extend(readings)
    return {ids[device]: readings for device, readings in found.items()}


def _newest(mine: DeviceView | None, stored: DeviceView | None) -> DeviceView | None:
    """The engine's view with anything newer from storage laid over it (a copy)."""
    if mine is None or stored is None:
        return mine or stored
    view = DeviceView(dict(mine.values), mine.windows, mine.last_ts, mine.since)
    for key, (ts, value) in stored.values.items():
        if key not in view.values or view.values[key][0] < ts:
            view.values[key] = (ts, value)
    if stored.last_ts is not None:
        view.last_ts = max(view.last_ts or stored.last_ts, stored.last_ts)
    return view


async def _save_state(session: AsyncSession, outcome: _Outcome, alert_id: uuid.UUID | None) -> None:
    rule_id, device_id, track = outcome.rule.id, outcome.device_id, outcome.track
    if track.idle:
        await session.execute(
            delete(RuleState).where(RuleState.rule_id == rule_id, RuleState.device_id == device_id)
        )
        return
    values = {
        "rule_id": rule_id,
        "device_id": device_id,
        "pending_since": track.pending_since,
        "latched": track.latched,
        "alert_id": alert_id if track.open else None,
        "updated_at": utcnow(),
    }
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(RuleState).values(**values)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[RuleState.rule_id, RuleState.device_id],
            set_={k: statement.excluded[k] for k in values if k not in ("rule_id", "device_id")},
        )
    )
