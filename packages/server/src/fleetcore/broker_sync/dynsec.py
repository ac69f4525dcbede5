"""An asyncio client of Mosquitto's dynamic-security control API (2.0 command set).

Commands are JSON published on `$CONTROL/dynamic-security/v1`; the plugin answers every
command of a message on `.../response`, in one message, each answer carrying the
`correlationData` we gave it. paho-mqtt runs its network loop in its own thread
(`loop_start`); answers cross to the event loop through `call_soon_threadsafe` and resolve one
future per command. A command unanswered in `timeout_s` raises DynsecTimeout; an answer with an
`error` raises DynsecError with the broker's message.

Passwords travel only inside the published payload: nothing here logs a command's body.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import paho.mqtt.client as paho
import structlog
from paho.mqtt.reasoncodes import ReasonCode

log = structlog.get_logger(__name__)

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = CONTROL_TOPIC + "/response"


class DynsecUnavailable(Exception):
    """The broker cannot be reached (or refused the platform client's credentials)."""


class DynsecTimeout(DynsecUnavailable):
    """The broker did not answer a command in time."""


class DynsecError(Exception):
    """The broker refused a command; `message` is the plugin's own (e.g. "Client not found")."""

    def __init__(self, command: str, message: str) -> None:
        super().__init__(f"{command}: {message}")
        self.command = command
        self.message = message

    @property
    def not_found(self) -> bool:
        """The client or role does not exist."""
        return "not found" in self.message.lower()

    @property
    def exists(self) -> bool:
        """The client, role or ACL exists already."""
        return "already exists" in self.message.lower()


@dataclass(frozen=True, slots=True)
class Acl:
    """One role ACL: `acltype` is publishClientSend, subscribePattern, ..."""

    acltype: str
    topic: str
    allow: bool = True
    priority: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "acltype": self.acltype,
            "topic": self.topic,
            "allow": self.allow,
            "priority": self.priority,
        }


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """What getClient tells about a client (never its password)."""

    username: str
    textname: str | None
    disabled: bool
    roles: tuple[str, ...] = field(default_factory=tuple)


class DynsecClient:
    """One connection of the platform client (a dynsec admin) to the control API."""

    def __init__(self, client: paho.Client, host: str, port: int, *, timeout_s: float = 5.0):
        self._client = client
        self._host = host
        self._port = port
        self.timeout_s = timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._connected: asyncio.Event | None = None
        self._refused: str | None = None
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self._subscribe_mid: int | None = None
        # Called on the event loop at every (re)connection (the dispatcher retries then).
        self.on_connected: Callable[[], None] | None = None
        client.reconnect_delay_set(min_delay=1, max_delay=10)

    @property
    def connected(self) -> bool:
        """True while the MQTT connection is up and subscribed to the answers."""
        return self._connected is not None and self._connected.is_set()

    async def start(self) -> None:
        """Start connecting (in paho's thread); does not wait for the broker to answer."""
        self._loop = asyncio.get_running_loop()
        self._connected = asyncio.Event()
        # connect_async: no network I/O here; paho's loop connects and reconnects on its own.
        self._client.connect_async(self._host, self._port, keepalive=30)
        self._client.loop_start()

    async def stop(self) -> None:
        """Disconnect and stop paho's thread; pending commands fail as unavailable."""
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)
        self._fail_pending("the dynamic-security client stopped")

    async def wait_connected(self, timeout_s: float | None = None) -> None:
        """Wait for the connection; DynsecUnavailable after `timeout_s` (default: timeout_s)."""
        assert self._connected is not None, "start() first"
        try:
            await asyncio.wait_for(self._connected.wait(), timeout_s or self.timeout_s)
        except TimeoutError:
            reason = self._refused or "no connection"
            raise DynsecUnavailable(
                f"broker {self._host}:{self._port} not reachable ({reason})"
            ) from None

    async def execute(self, commands: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send commands in one message; their answers in order (raises on the first error)."""
        if not self.connected:
            await self.wait_connected()
        assert self._loop is not None
        futures: list[asyncio.Future[dict[str, Any]]] = []
        body = []
        for command in commands:
            correlation = uuid.uuid4().hex
            future: asyncio.Future[dict[str, Any]] = self._loop.create_future()
            self._pending[correlation] = future
            futures.append(future)
            body.append({**command, "correlationData": correlation})
        try:
            info = self._client.publish(CONTROL_TOPIC, orjson.dumps({"commands": body}), qos=1)
            if info.rc != paho.MQTT_ERR_SUCCESS:
                raise DynsecUnavailable(f"publish failed: {paho.error_string(info.rc)}")
            try:
                async with asyncio.timeout(self.timeout_s):
                    answers = [await future for future in futures]
            except TimeoutError:
                raise DynsecTimeout(
                    f"no answer from the broker within {self.timeout_s:g} s"
                ) from None
        finally:
            for command in body:
                self._pending.pop(command["correlationData"], None)
        for command, answer in zip(commands, answers, strict=True):
            if answer.get("error"):
                raise DynsecError(str(command["command"]), str(answer["error"]))
        return answers

    async def command(self, name: str, **fields: Any) -> dict[str, Any]:
        """One command; its answer's `data` (empty for commands without)."""
        (answer,) = await self.execute([{"command": name, **fields}])
        data: dict[str, Any] = answer.get("data") or {}
        return data

    # -- the commands Fleetcore uses --

    async def create_client(
        self, username: str, password: str, *, textname: str, roles: Sequence[str] = ()
    ) -> None:
        await self.command(
            "createClient",
            username=username,
            password=password,
            textname=textname,
            roles=[{"rolename": r, "priority": 0} for r in roles],
        )

    async def delete_client(self, username: str) -> None:
        await self.command("deleteClient", username=username)

    async def set_client_password(self, username: str, password: str) -> None:
        await self.command("setClientPassword", username=username, password=password)

    async def enable_client(self, username: str) -> None:
        await self.command("enableClient", username=username)

    async def disable_client(self, username: str) -> None:
        await self.command("disableClient", username=username)

    async def add_client_role(self, username: str, rolename: str) -> None:
        await self.command("addClientRole", username=username, rolename=rolename, priority=0)

    async def get_client(self, username: str) -> ClientInfo:
        data = (await self.command("getClient", username=username)).get("client") or {}
        return ClientInfo(
            username=str(data.get("username", username)),
            textname=data.get("textname"),
            disabled=bool(data.get("disabled", False)),
            roles=tuple(str(r["rolename"]) for r in data.get("roles") or []),
        )

    async def list_clients(self) -> list[str]:
        # Without a count, 2.0 answers with every client (count -1 = all).
        data = await self.command("listClients", verbose=False, count=-1, offset=0)
        return [str(name) for name in data.get("clients") or []]

    async def create_role(self, rolename: str, *, textname: str, acls: Sequence[Acl]) -> None:
        await self.command(
            "createRole",
            rolename=rolename,
            textname=textname,
            acls=[acl.as_json() for acl in acls],
        )

    async def delete_role(self, rolename: str) -> None:
        await self.command("deleteRole", rolename=rolename)

    async def get_role(self, rolename: str) -> list[Acl]:
        data = (await self.command("getRole", rolename=rolename)).get("role") or {}
        return [
            Acl(str(a["acltype"]), str(a["topic"]), bool(a.get("allow")), int(a.get("priority", 0)))
            for a in data.get("acls") or []
        ]

    async def add_role_acl(self, rolename: str, acl: Acl) -> None:
        await self.command("addRoleACL", rolename=rolename, **acl.as_json())

    async def remove_role_acl(self, rolename: str, acl: Acl) -> None:
        await self.command("removeRoleACL", rolename=rolename, acltype=acl.acltype, topic=acl.topic)

    # -- paho's thread --

    def _on_connect(
        self,
        client: paho.Client,
        _userdata: Any,
        _flags: Any,
        reason: ReasonCode,
        _properties: Any,
    ) -> None:
        if reason.is_failure:
            # Wrong credentials or not allowed: paho retries; say why once per attempt.
            self._refused = str(reason)
            log.warning("dynsec_connect_refused", reason=str(reason))
            return
        self._refused = None
        # Usable once the answers' subscription is acknowledged, not before.
        _, self._subscribe_mid = client.subscribe(RESPONSE_TOPIC, qos=1)

    def _on_subscribe(
        self, _client: paho.Client, _userdata: Any, mid: int, reasons: list[ReasonCode], _p: Any
    ) -> None:
        if mid != self._subscribe_mid:
            return
        if reasons and reasons[0].is_failure:
            self._refused = f"may not subscribe to {RESPONSE_TOPIC}: not a dynsec admin"
            log.warning("dynsec_subscribe_refused", reason=str(reasons[0]))
            return
        self._call(self._set_connected, True)

    def _on_disconnect(
        self, _client: paho.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        self._call(self._set_connected, False)

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        if message.topic != RESPONSE_TOPIC:
            return
        try:
            answers = orjson.loads(message.payload).get("responses") or []
        except (orjson.JSONDecodeError, AttributeError):
            log.warning("dynsec_bad_response", size=len(message.payload))
            return
        self._call(self._resolve, answers)

    def _call(self, callback: Any, *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(callback, *args)

    # -- back on the event loop --

    def _set_connected(self, up: bool) -> None:
        assert self._connected is not None
        if up:
            self._connected.set()
            if self.on_connected is not None:
                self.on_connected()
        else:
            self._connected.clear()
            self._fail_pending("the connection to the broker was lost")

    def _resolve(self, answers: list[dict[str, Any]]) -> None:
        for answer in answers:
            future = self._pending.pop(str(answer.get("correlationData")), None)
            if future is not None and not future.done():
                future.set_result(answer)

    def _fail_pending(self, why: str) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(DynsecUnavailable(why))
        self._pending.clear()
