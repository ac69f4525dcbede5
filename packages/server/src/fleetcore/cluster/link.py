"""One process's connection to Redis: short commands, one pub/sub listener, a heartbeat.

What every Redis-backed part (the live hub, presence, token-cache invalidation, command
locks) shares, and the contract they rely on:

- `call(...)` runs one Redis call within `timeout_s` (0.5 s); a failure raises
  `RedisUnavailable`. Nothing waits longer on Redis than that. A broken connection marks the
  link down at once; slowness alone does not (a busy event loop looks like a slow Redis):
  a heartbeat that fails or takes over 2 s does.
- `publish(channel, data)` never waits: the message joins a bounded queue a task sends in
  pipelines. While Redis is down it is dropped and counted (what goes through pub/sub is
  a notice or a live push, never data that must survive: that is in the database).
- `subscribe(channel, handler)` / `unsubscribe(channel)`: handlers are called in the listener
  task with each message's bytes; after a reconnect every channel is subscribed again.
- `on_up` callbacks (async) run each time the link comes (back) up, before it reports up:
  the parts re-register what Redis may have lost (a restarted Redis is empty). `on_down`
  callbacks (sync) run once per outage.
- The heartbeat (every `HEARTBEAT_S`) keeps this process in the set of live processes
  (`fleetcore:processes`, a sorted set scored by expiry) and runs the `on_beat` callbacks,
  which refresh the expiry of each part's keys; `live_processes` is what the last beat saw.
- Reconnection: exponential backoff from 0.1 s to 5 s, with jitter.

The process id is random per start, so a restarted process never inherits a dead one's keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import structlog
from prometheus_client import Counter, Gauge
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from fleetcore.ops.readiness import Degraded

log = structlog.get_logger(__name__)

TIMEOUT_S = 0.5
HEARTBEAT_S = 1.0
HEARTBEAT_TIMEOUT_S = 2.0  # a heartbeat slower than this: Redis is taken for gone
PROCESS_TTL_S = 10.0  # a process silent this long is gone: its keys are ignored, then expire
MAX_QUEUED = 10_000
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.1, 5.0
PROCESSES = "fleetcore:processes"

REDIS_UP = Gauge("fleetcore_redis_up", "1 while this process's link to Redis is up.")
REDIS_DROPPED = Counter(
    "fleetcore_redis_dropped_total",
    "Pub/sub messages not sent because Redis was down or the queue full, by channel kind.",
    ["kind"],
)
REDIS_OUTAGES = Counter("fleetcore_redis_outages_total", "Times the link to Redis went down.")

T = TypeVar("T")
Handler = Callable[[bytes], None]


class RedisUnavailable(Exception):
    """Redis did not answer in time, or the link is down."""


class RedisLink:
    """The shared client, the listener and the heartbeat (a lifespan component)."""

    name = "redis"

    def __init__(self, url: str, *, timeout_s: float = TIMEOUT_S) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.process_id = uuid.uuid4().hex[:16]
        self.client: Redis = Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),  # we retry ourselves, with backoff
        )
        self.up = False
        self.live_processes: frozenset[str] = frozenset()
        self.on_up: list[Callable[[], Awaitable[None]]] = []
        self.on_down: list[Callable[[], None]] = []
        self.on_beat: list[Callable[[Redis], Awaitable[None]]] = []
        self._handlers: dict[str, Handler] = {}
        self._pubsub: PubSub | None = None
        self._outbox: deque[tuple[str, bytes]] = deque()
        self._outbox_ready = asyncio.Event()
        self._drained = asyncio.Event()  # set whenever the publisher has emptied the queue
        self._lost = asyncio.Event()  # set by anyone who sees a failure: the listener reconnects
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._failure = ""

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting in the background: a Redis that is down delays nothing."""
        self._stopping = False
        self._tasks = [
            asyncio.create_task(self._listen(), name="redis-listener"),
            asyncio.create_task(self._send(), name="redis-publisher"),
        ]

    async def stop(self) -> None:
        """Send what is queued (briefly), leave the process set, close the connections."""
        if self.up and self._outbox:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), self.timeout_s * 2)
        self._stopping = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.up:
            with contextlib.suppress(RedisUnavailable):
                await self.call(self.client.zrem(PROCESSES, self.process_id))
        await self._close_pubsub()
        with contextlib.suppress(RedisError, OSError):
            await self.client.aclose()
        self.up = False
        REDIS_UP.set(0)

    async def ready(self) -> None:
        """The /ready check: Degraded (not a failure) while Redis is unreachable."""
        if not self.up:
            raise Degraded("redis unreachable: live pushes paused, limits per process")

    # -- commands -----------------------------------------------------------------------

    async def call(self, awaitable: Awaitable[T], *, timeout_s: float | None = None) -> T:
        """Await one Redis call within the timeout; RedisUnavailable if it fails. A broken
        connection marks the link lost at once; a slow answer only fails this call (a busy
        event loop makes answers look slow), the heartbeat decides whether Redis is gone."""
        try:
            async with asyncio.timeout(timeout_s or self.timeout_s):
                return await awaitable
        except (RedisError, OSError, TimeoutError) as exc:
            if hasattr(awaitable, "close"):
                awaitable.close()  # a coroutine that never ran (no-op once it has)
            failure = f"{type(exc).__name__}: {exc}"[:200]
            if not isinstance(exc, TimeoutError | RedisTimeoutError):
                self._failure = failure
                self._lost.set()
            raise RedisUnavailable(failure) from exc

    def publish(self, channel: str, data: bytes, *, kind: str = "other") -> bool:
        """Queue a message for Redis pub/sub; False (and counted) if it was dropped."""
        if not self.up or len(self._outbox) >= MAX_QUEUED:
            REDIS_DROPPED.labels(kind).inc()
            return False
        self._outbox.append((channel, data))
        self._drained.clear()
        self._outbox_ready.set()
        return True

    # -- pub/sub ------------------------------------------------------------------------

    def subscribe(self, channel: str, handler: Handler) -> None:
        """Receive the channel's messages (again after every reconnect)."""
        self._handlers[channel] = handler
        self._pubsub_command("subscribe", channel)

    def unsubscribe(self, channel: str) -> None:
        """Stop receiving the channel's messages."""
        if self._handlers.pop(channel, None) is not None:
            self._pubsub_command("unsubscribe", channel)

    def _pubsub_command(self, command: str, channel: str) -> None:
        pubsub = self._pubsub
        if pubsub is None or not self.up:
            return  # subscribed with the rest when the link comes up

        async def send() -> None:
            with contextlib.suppress(RedisUnavailable):  # the link resubscribes on reconnect
                await self.call(getattr(pubsub, command)(channel))

        self.spawn(send())

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run a short piece of Redis work in the background (cancelled at stop)."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.append(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)

    # -- the listener: connect, resubscribe, dispatch, heartbeat; reconnect on failure -----

    async def _listen(self) -> None:
        backoff = BACKOFF_MIN_S
        while not self._stopping:
            try:
                await self._connect()
                backoff = BACKOFF_MIN_S
                await self._dispatch()
            except asyncio.CancelledError:
                raise
            except (RedisUnavailable, RedisError, OSError, TimeoutError) as exc:
                self._set_down(f"{type(exc).__name__}: {exc}"[:200])
            except Exception:
                log.exception("redis_listener_failed")
                self._set_down("listener error")
            await self._close_pubsub()
            await asyncio.sleep(backoff * (0.5 + random.random()))  # noqa: S311 (jitter)
            backoff = min(BACKOFF_MAX_S, backoff * 2)

    async def _connect(self) -> None:
        self._lost.clear()
        await self.call(self.client.ping())
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        if self._handlers:
            await self.call(pubsub.subscribe(*self._handlers))
        else:
            await self.call(pubsub.ping())
        self._pubsub = pubsub
        await self._beat()
        for callback in list(self.on_up):
            await callback()
        if not self.up:
            log.info("redis_up", process_id=self.process_id)
        self.up = True
        REDIS_UP.set(1)
        # Channels subscribed while the callbacks ran are not in the SUBSCRIBE above.
        missing = set(self._handlers) - {c.decode() for c in pubsub.channels}
        if missing:
            await self.call(pubsub.subscribe(*missing))

    async def _dispatch(self) -> None:
        assert self._pubsub is not None
        pubsub = self._pubsub
        next_beat = time.monotonic() + HEARTBEAT_S
        while not self._lost.is_set():
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message is not None and message.get("type") == "message":
                channel = message["channel"].decode()
                handler = self._handlers.get(channel)
                if handler is not None:
                    try:
                        handler(message["data"])
                    except Exception:
                        log.exception("redis_handler_failed", channel=channel)
            if time.monotonic() >= next_beat:
                await self._beat()
                next_beat = time.monotonic() + HEARTBEAT_S
        raise RedisUnavailable(self._failure)

    async def _beat(self) -> None:
        """Stay in the live-process set, learn who else is, refresh every part's keys."""
        now = time.time()
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zadd(PROCESSES, {self.process_id: now + PROCESS_TTL_S})
            pipe.zremrangebyscore(PROCESSES, "-inf", now)
            pipe.zrangebyscore(PROCESSES, now, "+inf")
            results: list[Any] = await self._vital(pipe.execute())
        self.live_processes = frozenset(p.decode() for p in results[2])
        for beat in list(self.on_beat):
            await self._vital(beat(self.client))

    async def _vital(self, awaitable: Awaitable[T]) -> T:
        """A heartbeat call: failing or slower than HEARTBEAT_TIMEOUT_S means Redis is gone."""
        try:
            return await self.call(awaitable, timeout_s=HEARTBEAT_TIMEOUT_S)
        except RedisUnavailable as exc:
            self._failure = str(exc)
            self._lost.set()
            raise

    async def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                async with asyncio.timeout(self.timeout_s):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _set_down(self, reason: str) -> None:
        if not self.up:
            return
        self.up = False
        REDIS_UP.set(0)
        REDIS_OUTAGES.inc()
        self._outbox.clear()
        log.warning("redis_down", reason=reason, process_id=self.process_id)
        for callback in list(self.on_down):
            try:
                callback()
            except Exception:
                log.exception("redis_on_down_failed")

    # -- the publisher ------------------------------------------------------------------

    async def _send(self) -> None:
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            while self._outbox and self.up:
                batch = [self._outbox.popleft() for _ in range(min(500, len(self._outbox)))]
                try:
                    async with self.client.pipeline(transaction=False) as pipe:
                        for channel, data in batch:
                            pipe.publish(channel, data)
                        await self.call(pipe.execute())
                except RedisUnavailable:
                    REDIS_DROPPED.labels("unsent").inc(len(batch))
                    break
            if not self._outbox:
                self._drained.set()
