"""What one MQTT client may cost the process, before and after it authenticates.

The broker shares its process (descriptors, memory, event loop) with the HTTP API, so a
client that has proved nothing must not be able to hold much of either:

- Connections: at most `max_connections` in all, never more than the descriptor limit
  leaves after a reserve for HTTP, the database and files; at most `per_listener[name]` on a
  listener that has a cap; at most `max_per_address` from one address (authenticated or not:
  devices behind one NAT share an address, so the default is high); at most `max_pending`
  still in their CONNECT phase (not yet authenticated), `max_pending_per_address` of them
  from one address; at most `max_provisional` provisional sessions (provisioning). One more
  is closed at once (or, for a provisional session, refused in its CONNACK) and counted in
  `fleetcore_mqtt_connections_refused_total{reason}`.
- The CONNECT must arrive within `connect_timeout_s`, and its declared length is checked
  from the fixed header before the body is read (`max_connect_bytes`): it carries only an
  id, credentials and a will.
- After the CONNECT every packet is checked the same way against `max_packet_bytes`.
- Keep-alive 0 (none) or longer than `max_keepalive_s` becomes `max_keepalive_s`, and one
  shorter than `min_keepalive_s` becomes that (a client pinging every second costs a wake-up
  a second for nothing): MQTT 5 clients are told (Server Keep Alive); MQTT 3.1.1 clients
  cannot be, so a short one only gets more slack; all are closed after 1.5 times it without
  a packet, as for any keep-alive.

The broker calls this module; it keeps the counters and decides. Rates per address
(provisioning) are the gateway's, with `fleetcore.buckets`.
"""

from __future__ import annotations

import resource
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import structlog

from fleetcore.buckets import KeyedBuckets
from fleetcore.config import Settings
from fleetcore.mqtt import metrics

log = structlog.get_logger(__name__)

Stage = Literal["pending", "provisional", "established", "released"]


def descriptor_budget(open_files: int) -> int:
    """MQTT connections a process with this descriptor limit can afford: a quarter of the
    limit (at least 64) stays for HTTP clients, the database pool, logs and files."""
    return max(1, open_files - max(64, open_files // 4))


def packet_size(remaining_length: int) -> int:
    """The whole packet's size in bytes, from its fixed header's remaining length."""
    length_bytes = 1
    while remaining_length >= 128**length_bytes and length_bytes < 4:
        length_bytes += 1
    return 1 + length_bytes + remaining_length


@dataclass(frozen=True, slots=True)
class MqttLimits:
    """The sizes, counts and times the broker enforces (defaults are the settings')."""

    max_connections: int = 5_000
    max_pending: int = 512
    max_pending_per_address: int = 128
    max_provisional: int = 32
    connect_timeout_s: float = 10.0
    max_connect_bytes: int = 8 * 1024
    max_packet_bytes: int = 1024 * 1024 + 64 * 1024
    max_keepalive_s: int = 1200
    min_keepalive_s: int = 1  # none for a bare broker; the platform's setting is 5 s
    max_per_address: int = 1_000
    per_listener: Mapping[str, int] = field(default_factory=dict)  # listener name -> cap

    @classmethod
    def from_settings(cls, settings: Settings, *, open_files: int | None = None) -> MqttLimits:
        """The configured limits, the connection count lowered to fit the descriptor limit."""
        if open_files is None:
            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
            open_files = None if soft == resource.RLIM_INFINITY else soft
        max_connections = settings.mqtt_max_connections
        if open_files is not None and descriptor_budget(open_files) < max_connections:
            max_connections = descriptor_budget(open_files)
            log.warning(
                "mqtt_max_connections_lowered",
                configured=settings.mqtt_max_connections,
                used=max_connections,
                open_files_limit=open_files,
                note="raise the descriptor limit (ulimit -n) to allow more",
            )
        return cls(
            max_connections=max_connections,
            max_pending=min(settings.mqtt_max_pending, max_connections),
            max_pending_per_address=settings.mqtt_max_pending_per_address,
            max_provisional=settings.mqtt_max_provisioning_sessions,
            connect_timeout_s=settings.mqtt_connect_timeout_s,
            max_connect_bytes=settings.mqtt_max_connect_bytes,
            max_packet_bytes=settings.mqtt_max_packet_bytes,
            max_keepalive_s=settings.mqtt_max_keepalive_s,
            min_keepalive_s=settings.mqtt_min_keepalive_s,
            max_per_address=settings.mqtt_max_connections_per_address,
            per_listener=dict(settings.mqtt_listener_max_connections),
        )

    def keep_alive(self, requested: int) -> int:
        """The keep-alive enforced: the client's, held between the minimum and the maximum
        (none, 0, is the maximum; the maximum wins if configured below the minimum)."""
        if requested == 0:
            return self.max_keepalive_s
        return min(max(requested, self.min_keepalive_s), self.max_keepalive_s)

    def connect_too_large(self, remaining_length: int) -> bool:
        """Whether a CONNECT declaring this length is refused unread."""
        return packet_size(remaining_length) > self.max_connect_bytes

    def packet_too_large(self, remaining_length: int) -> bool:
        """Whether a packet after the CONNECT declaring this length is refused unread."""
        return packet_size(remaining_length) > self.max_packet_bytes


@dataclass(eq=False, slots=True)
class Admission:
    """One connection's place in the counts, from accept to close."""

    address: str
    listener: str = "default"
    stage: Stage = "pending"


@dataclass(eq=False)
class ConnectionGate:
    """The connection counts and the decisions that keep them under the limits."""

    limits: MqttLimits
    total: int = 0
    pending: int = 0
    provisional: int = 0
    _pending_at: Counter[str] = field(default_factory=Counter)
    _open_at: Counter[str] = field(default_factory=Counter)  # every stage, per address
    _on_listener: Counter[str] = field(default_factory=Counter)

    def admit(self, address: str, listener: str = "default") -> Admission | None:
        """A place for a connection just accepted, or None (refused, counted): close it."""
        limits = self.limits
        if self.total >= limits.max_connections:
            return self._refuse("too_many_connections")
        cap = limits.per_listener.get(listener)
        if cap is not None and self._on_listener[listener] >= cap:
            return self._refuse("too_many_on_listener")
        if self._open_at[address] >= limits.max_per_address:
            return self._refuse("too_many_from_address")
        if self.pending >= limits.max_pending:
            return self._refuse("too_many_pending")
        if self._pending_at[address] >= limits.max_pending_per_address:
            return self._refuse("too_many_pending_from_address")
        self.total += 1
        self.pending += 1
        self._pending_at[address] += 1
        self._open_at[address] += 1
        self._on_listener[listener] += 1
        metrics.CONNECTIONS_ADMITTED.inc()
        return Admission(address, listener)

    def open_from(self, address: str) -> int:
        """Connections from this address, in any stage."""
        return self._open_at[address]

    def establish(self, admission: Admission, *, provisional: bool) -> bool:
        """The CONNECT was authenticated; False (refused, counted) if no provisional place."""
        if provisional and self.provisional >= self.limits.max_provisional:
            self._refuse("too_many_provisioning")
            return False
        self._leave(admission)
        admission.stage = "provisional" if provisional else "established"
        if provisional:
            self.provisional += 1
        return True

    def release(self, admission: Admission) -> None:
        """The connection is closed: give its place back (idempotent)."""
        if admission.stage == "released":
            return
        self._leave(admission)
        self.total -= 1
        _decrement(self._open_at, admission.address)
        _decrement(self._on_listener, admission.listener)
        admission.stage = "released"

    def _leave(self, admission: Admission) -> None:
        if admission.stage == "pending":
            self.pending -= 1
            _decrement(self._pending_at, admission.address)
        elif admission.stage == "provisional":
            self.provisional -= 1

    @staticmethod
    def _refuse(reason: str) -> None:
        # Counted, and logged only at debug: under a flood a line per refusal would be a
        # second flood (the metric is what to alert on).
        metrics.CONNECTIONS_REFUSED.labels(reason).inc()
        log.debug("mqtt_connection_refused", reason=reason)


def _decrement(counts: Counter[str], key: str) -> None:
    # Drop keys at zero: a counter per address ever seen would grow with every scanner.
    counts[key] -= 1
    if counts[key] <= 0:
        del counts[key]


@dataclass(frozen=True, slots=True)
class ProvisioningLimits:
    """What a "provision" client may do: connects and requests per address, time."""

    session_s: float = 30.0
    rate_per_min: float = 60.0
    burst: int = 30

    @classmethod
    def from_settings(cls, settings: Settings) -> ProvisioningLimits:
        """The configured provisioning limits."""
        return cls(
            session_s=settings.mqtt_provisioning_session_s,
            rate_per_min=settings.mqtt_provisioning_rate_per_min,
            burst=settings.mqtt_provisioning_burst,
        )

    def buckets(self) -> KeyedBuckets:
        """One bucket per client address, spent by each connect and each request."""
        return KeyedBuckets(self.rate_per_min / 60, self.burst)


def address_of(remote: str) -> str:
    """The client address of a "host:port" remote (IPv6 hosts hold colons too)."""
    return remote.rsplit(":", 1)[0]
