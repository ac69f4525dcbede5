"""A minimal MQTT 3.1.1 client over asyncio streams, for tests and benchmarks.

It does exactly what it is told and nothing else (no automatic PUBACK, no reconnect), so a
test can reproduce a broker defect packet by packet: leave a message unacknowledged, drop
the socket mid-burst, reuse another client's id. Real-world clients are tested with paho.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from dataclasses import dataclass

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14


def varint(n: int) -> bytes:
    """A Variable Byte Integer (MQTT 3.1.1 2.2.3, MQTT 5 1.5.5)."""
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(raw)) + raw


def packet(kind: int, flags: int, body: bytes) -> bytes:
    """Frame one packet."""
    return bytes([(kind << 4) | flags]) + varint(len(body)) + body


def connect_packet(
    client_id: str,
    *,
    username: str | None = None,
    password: str | None = None,
    clean: bool = True,
    keepalive: int = 60,
    will: tuple[str, bytes, int, bool] | None = None,
    level: int = 4,
) -> bytes:
    flags = 0x02 if clean else 0
    payload = _str(client_id)
    if will is not None:
        topic, message, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += _str(topic) + _str(message)
    if username is not None:
        flags |= 0x80
        payload += _str(username)
    if password is not None:
        flags |= 0x40
        payload += _str(password)
    header = _str("MQTT") + bytes([level, flags]) + struct.pack("!H", keepalive)
    return packet(CONNECT, 0, header + payload)


def publish_packet(
    topic: str,
    payload: bytes,
    *,
    qos: int = 0,
    packet_id: int = 0,
    retain: bool = False,
    dup: bool = False,
) -> bytes:
    flags = (qos << 1) | (1 if retain else 0) | (0x08 if dup else 0)
    body = _str(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return packet(PUBLISH, flags, body)


@dataclass(frozen=True, slots=True)
class Packet:
    kind: int
    flags: int
    body: bytes

    @property
    def packet_id(self) -> int:
        if self.kind == PUBLISH:
            (length,) = struct.unpack("!H", self.body[:2])
            return (
                int(struct.unpack("!H", self.body[2 + length : 4 + length])[0]) if self.qos else 0
            )
        return int(struct.unpack("!H", self.body[:2])[0])

    @property
    def qos(self) -> int:
        return (self.flags >> 1) & 0x03

    @property
    def retain(self) -> bool:
        return bool(self.flags & 0x01)

    @property
    def dup(self) -> bool:
        return bool(self.flags & 0x08)

    @property
    def topic(self) -> str:
        (length,) = struct.unpack("!H", self.body[:2])
        return self.body[2 : 2 + length].decode()

    @property
    def payload(self) -> bytes:
        (length,) = struct.unpack("!H", self.body[:2])
        return self.body[2 + length + (2 if self.qos else 0) :]


class RawClient:
    """One TCP connection speaking MQTT 3.1.1 by hand."""

    opened: list[RawClient] = []  # closed by the tests' fixtures with close_all()

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._next_id = 0
        self._backlog: list[Packet] = []  # packets read while waiting for another kind
        RawClient.opened.append(self)

    @classmethod
    async def close_all(cls) -> None:
        """Close every client a test opened."""
        while cls.opened:
            await cls.opened.pop().close()

    @classmethod
    async def open(cls, port: int, host: str = "127.0.0.1") -> RawClient:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    @classmethod
    async def connected(
        cls, port: int, client_id: str, *, expect: int = 0, **options: object
    ) -> RawClient:
        """Open, CONNECT and check the CONNACK code (0 = accepted)."""
        client = await cls.open(port)
        code, _ = await client.connect(client_id, **options)  # type: ignore[arg-type]
        assert code == expect, f"CONNACK {code}, expected {expect}"
        return client

    def next_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read(self, wait_s: float = 5.0) -> Packet:
        first = await asyncio.wait_for(self.reader.readexactly(1), wait_s)
        length, shift = 0, 0
        while True:
            (byte,) = await asyncio.wait_for(self.reader.readexactly(1), wait_s)
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        body = await asyncio.wait_for(self.reader.readexactly(length), wait_s) if length else b""
        return Packet(first[0] >> 4, first[0] & 0x0F, body)

    async def expect(self, kind: int, wait_s: float = 5.0) -> Packet:
        """The next packet of this kind; others read meanwhile are kept for their own expect."""
        for index, kept in enumerate(self._backlog):
            if kept.kind == kind:
                return self._backlog.pop(index)
        while True:
            p = await self.read(wait_s)
            if p.kind == kind:
                return p
            self._backlog.append(p)

    async def connect(self, client_id: str, **options: object) -> tuple[int, bool]:
        """CONNECT; returns (return code, session present)."""
        await self.send(connect_packet(client_id, **options))  # type: ignore[arg-type]
        p = await self.read()
        assert p.kind == CONNACK, p
        return p.body[1], bool(p.body[0] & 1)

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False, wait: bool = True
    ) -> int:
        packet_id = self.next_id() if qos else 0
        await self.send(publish_packet(topic, payload, qos=qos, packet_id=packet_id, retain=retain))
        if qos == 1 and wait:
            ack = await self.expect(PUBACK)
            assert ack.packet_id == packet_id
        return packet_id

    async def subscribe(self, *filters: str, qos: int = 1) -> list[int]:
        packet_id = self.next_id()
        body = struct.pack("!H", packet_id) + b"".join(_str(f) + bytes([qos]) for f in filters)
        await self.send(packet(SUBSCRIBE, 0x02, body))
        ack = await self.expect(SUBACK)
        return list(ack.body[2:])

    async def puback(self, packet_id: int) -> None:
        await self.send(packet(PUBACK, 0, struct.pack("!H", packet_id)))

    async def disconnect(self) -> None:
        await self.send(packet(DISCONNECT, 0, b""))
        await self.close()

    async def close(self) -> None:
        """Drop the socket without DISCONNECT (an abnormal end: the will fires)."""
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()

    async def closed_by_peer(self, wait_s: float = 5.0) -> bool:
        """Whether the broker closes this connection within `wait_s` seconds."""
        try:
            while True:
                data = await asyncio.wait_for(self.reader.read(65536), wait_s)
                if not data:
                    return True
        except TimeoutError:
            return False
        except ConnectionError:
            return True
