"""One client connection's bytes: framing, the CONNECT phase, timers and batched writes.

The hot path has no await and no task per packet. Whatever the transport delivers
(`feed`, from a protocol's ``data_received`` or a WebSocket frame) is split into packets
in place, and each is handed to the connection's handler synchronously, in order, before
the next is looked at; what the handler writes meanwhile (PUBACKs) is joined into one write
at the end of the burst, and what it writes later (acknowledgements of messages that became
durable, deliveries) into one write per event-loop turn.

What this decides, and why:

- Sizes come from the fixed header, before the body is read: a CONNECT over
  `max_connect_bytes` or a later packet over `max_packet_bytes` ends the connection without
  its body ever being held (fleetcore.mqtt.limits). A first packet that is not a CONNECT
  ends it too [MQTT-3.1.0-1].
- The CONNECT must be complete within `connect_timeout_s` of the accept (TLS handshake
  included); nothing after it is read until the broker has answered it, so no PUBLISH
  reaches the application before its connection is established.
- Once open, a connection silent for 1.5 times its keep-alive is closed.
- When the handler holds MAX_UNSTORED messages not yet durable it stops the reading
  (`hold`): the transport stops reading too, and a slow database pushes back on the client
  through TCP.
- A close writes what is pending first, then waits at most GOODBYE_TIMEOUT_S for the peer
  to take it: a client that stopped reading cannot keep its connection that way.

Runs on the event loop's thread only; the broker's lifecycle task for the connection
(`FleetBroker._serve`) awaits `first` (the CONNECT) and `ended`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Protocol

from fleetcore.mqtt import metrics, mqtt5
from fleetcore.mqtt.limits import Admission, MqttLimits
from fleetcore.mqtt.mqtt311 import fixed_header

if TYPE_CHECKING:
    from fleetcore.mqtt.handler import Handler

log = logging.getLogger(__name__)

GOODBYE_TIMEOUT_S = 5.0  # longest wait for a closing connection's last bytes to be taken
_CONNECT = 1


class Link(Protocol):
    """The transport under a connection: a TCP or TLS transport, or a WebSocket."""

    def write(self, data: bytes) -> None: ...

    def close(self) -> None:
        """Close after what was written is sent."""
        ...

    def abort(self) -> None:
        """Close now, dropping what is not sent."""
        ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class TooLarge(Exception):
    """A CONNECT declaring more bytes than the limit (its body is never read)."""


class NotConnect(Exception):
    """A first packet that is not a CONNECT."""


class Connection:
    """The framing and phases of one connection (see the module docstring)."""

    def __init__(self, link: Link, admission: Admission, remote: str, limits: MqttLimits) -> None:
        self.link = link
        self.admission = admission
        self.remote = remote
        self.limits = limits
        self.loop = asyncio.get_running_loop()
        self.handler: Handler | None = None
        # The CONNECT's body, or why there is none (TooLarge, NotConnect, ConnectionError).
        self.first: asyncio.Future[bytes] = self.loop.create_future()
        self.ended: asyncio.Future[None] = self.loop.create_future()
        self.normal_end = False  # a DISCONNECT (without "send my will") ended it
        self._pending = b""  # bytes received and not yet framed
        self._held = False  # not framing: the CONNECT is being answered, or too much unstored
        self._closing = False
        self._out: list[bytes] = []
        self._flush_soon = False
        self._last_read = self.loop.time()
        self._keep_alive_s = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # -- reading ----------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Bytes from the transport: frame and dispatch every whole packet in them."""
        if self._closing:
            return
        self._last_read = self.loop.time()
        self._pending = self._pending + data if self._pending else data
        if not self._held:
            self._frame()

    def _frame(self) -> None:
        data = self._pending
        at, end = 0, len(data)
        handler = self.handler
        try:
            while end - at >= 2 and not (self._held or self._closing):
                first = data[at]
                length = data[at + 1]
                head = at + 2
                if length & 0x80:
                    header = fixed_header(data, at)
                    if header is None:
                        break  # the Remaining Length is not all here yet
                    length, head = header
                if handler is None:  # the first packet: the CONNECT
                    self._check_connect(first, length)
                elif self.limits.packet_too_large(length):
                    self._too_large(handler)
                    return
                if end - head < length:
                    break
                at = head + length
                if handler is None:
                    self._connect_received(data[head:at])
                else:
                    handler.packet(first, data[head:at])
        except mqtt5.ProtocolError as exc:
            log.info("mqtt_protocol_error", extra={"remote": self.remote, "detail": str(exc)})
            if handler is not None:
                handler.protocol_error(exc.reason)
            self.close()
            return
        except (TooLarge, NotConnect) as exc:
            if not self.first.done():
                self.first.set_exception(exc)
            self.close()
            return
        except Exception:
            # A defect of ours, not the client's: this connection ends, the broker goes on.
            log.exception("mqtt_packet_failed", extra={"remote": self.remote})
            self.close()
            return
        finally:
            self.flush()
        if not self._closing:
            self._pending = data[at:] if at < end else b""

    def _check_connect(self, first: int, length: int) -> None:
        if first >> 4 != _CONNECT:
            raise NotConnect(f"first packet of type {first >> 4}")
        if self.limits.connect_too_large(length):
            raise TooLarge(f"a CONNECT of {length} bytes")

    def _connect_received(self, body: bytes) -> None:
        # The rest waits until the broker has answered (`open`) or refused the CONNECT.
        self._held = True
        self.link.pause_reading()
        if not self.first.done():
            self.first.set_result(body)

    def _too_large(self, handler: Handler) -> None:
        # Closed unread: the declared length is the client's word, not bytes.
        metrics.CLOSED.labels("packet_too_large").inc()
        log.info("mqtt_packet_too_large", extra={"remote": self.remote})
        handler.goodbye(mqtt5.PACKET_TOO_LARGE)
        self.close()

    # -- phases -----------------------------------------------------------------------

    def open(self, handler: Handler, keep_alive_s: int) -> None:
        """The CONNECT was accepted: packets go to `handler`; the keep-alive starts."""
        self.handler = handler
        self._keep_alive_s = keep_alive_s * 1.5
        if keep_alive_s:
            self._timer = self.loop.call_later(self._keep_alive_s, self._check_idle)

    def hold(self) -> None:
        """Read no further until `release` (too many messages not yet durable)."""
        if not self._held:
            self._held = True
            self.link.pause_reading()

    def release(self) -> None:
        """Read again; frame what was received meanwhile."""
        if self._held and not self._closing:
            self._held = False
            self.link.resume_reading()
            if self._pending:
                self._frame()

    def _check_idle(self) -> None:
        idle = self.loop.time() - self._last_read
        if idle < self._keep_alive_s:
            self._timer = self.loop.call_later(self._keep_alive_s - idle, self._check_idle)
            return
        metrics.CLOSED.labels("keepalive").inc()
        log.info("mqtt_keepalive_expired", extra={"remote": self.remote})
        if self.handler is not None:
            self.handler.goodbye(mqtt5.KEEP_ALIVE_TIMEOUT)
        self.close()

    # -- writing ----------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Write `data` with whatever else is written in this turn of the event loop."""
        if self._closing:
            return
        self._out.append(data)
        if not self._flush_soon:
            self._flush_soon = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write what is pending, in one write."""
        self._flush_soon = False
        out = self._out
        if not out:
            return
        self._out = []
        self.link.write(out[0] if len(out) == 1 else b"".join(out))

    # -- ending -----------------------------------------------------------------------

    def close(self) -> None:
        """End the connection once what is pending is written (bounded: GOODBYE_TIMEOUT_S)."""
        if self._closing:
            return
        self.flush()
        self._closing = True
        self._pending = b""
        self.link.close()
        self.loop.call_later(GOODBYE_TIMEOUT_S, self._abort_if_open)

    def _abort_if_open(self) -> None:
        if not self.ended.done():
            self.link.abort()

    def lost(self) -> None:
        """The transport is gone (idempotent)."""
        self._closing = True
        self._pending = b""
        self._out = []
        if self._timer is not None:
            self._timer.cancel()
        if not self.first.done():
            self.first.set_exception(ConnectionError("the connection ended before its CONNECT"))
        if not self.ended.done():
            self.ended.set_result(None)

    @property
    def closing(self) -> bool:
        """Whether the connection is ending or has ended."""
        return self._closing
