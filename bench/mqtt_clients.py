"""Which Python MQTT client consumes QoS 1 fastest from Mosquitto, acknowledging late.

An ingest worker behind an external broker is one shared-subscription subscriber
($share/g/bench/#, MQTT 5) that may PUBACK a message only once its batch is committed: it
collects BATCH messages, "commits" (sleeps COMMIT_DELAYS_S, or not at all) and then
acknowledges the whole batch. Measured for paho-mqtt 2.2 (manual_ack=True, client.ack from
a writer thread, network loop in loop_start's thread; loop_forever in a thread is the same
loop) and gmqtt 0.8 (optimistic_acknowledgement=False: gmqtt wraps each call of an async
on_message in its own task and sends the PUBACK with the reason code the coroutine returns,
so the handlers of a batch wait for its commit concurrently, not one by one). Beside them:
each client acknowledging on receipt, and mosquitto_sub (C, libmosquitto) as the pass-through
ceiling.

How: the subscriber's persistent session (session expiry, clean start off) subscribes and
goes away; PUBLISHERS processes publish MESSAGES of about 200 bytes (10 readings) that
Mosquitto queues for it; then the subscriber comes back and drains the queue. Its rate is
MESSAGES over the time from its CONNECT to its last PUBACK sent, so the publishers' CPU is
not in it. RECEIVE_MAXIMUM is the subscriber's MQTT 5 receive maximum, the window Mosquitto
keeps in flight towards it (it must hold a full batch, or the batch never fills).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import queue
import resource
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from multiprocessing.queues import Queue
from typing import Any

import gmqtt
from gmqtt.mqtt.constants import MQTTv50

from bench.mosquitto_load import (
    Broker,
    Publishers,
    connect_properties,
    mosquitto,
    paho_client,
    spread,
    telemetry_payload,
)
from bench.mqtt_ingest import cpu_seconds

MESSAGES = 50_000
BATCH = 1_000  # messages acknowledged together, after their "commit"
COMMIT_DELAYS_S = (0.0, 0.020)
RECEIVE_MAXIMUM = 10_000  # the subscriber's receive maximum: Mosquitto's window towards it
PUBLISHERS = 2
RUNS = 3
SESSION_EXPIRY_S = 600
TOPIC_FILTER = "$share/{group}/bench/#"  # a group per drain: an old session stays a member
TIMEOUT_S = 300.0

Consume = Callable[
    [Broker, str, float], None
]  # broker, client id (= share group), commit delay (s)


def _message(i: int) -> tuple[str, bytes]:
    return f"bench/{i % 100}", telemetry_payload(1_733_500_000_000 + i)


# -- the subscribers (each runs in a child process) -------------------------------------


def paho_consume(broker: Broker, client_id: str, delay: float, *, manual: bool = True) -> None:
    """paho-mqtt: on_message (network thread) collects message ids; a writer thread takes
    each full batch, sleeps `delay` and acks its messages."""
    done = threading.Event()
    batches: queue.SimpleQueue[list[int]] = queue.SimpleQueue()
    pending: list[int] = []
    received = 0

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        nonlocal pending, received
        received += 1
        if not manual:
            if received >= MESSAGES:
                done.set()
            return
        pending.append(message.mid)
        if len(pending) >= BATCH:
            batches.put(pending)
            pending = []

    client = paho_client(client_id, broker.platform, manual_ack=manual)
    client.on_message = on_message

    def writer() -> None:
        acked = 0
        while acked < MESSAGES:
            mids = batches.get()
            if delay:
                time.sleep(delay)
            for mid in mids:
                client.ack(mid, 1)
            acked += len(mids)
        done.set()

    if manual:
        threading.Thread(target=writer, daemon=True).start()
    client.connect(
        "127.0.0.1",
        broker.port,
        keepalive=120,
        clean_start=False,
        properties=connect_properties(
            receive_maximum=RECEIVE_MAXIMUM, session_expiry_s=SESSION_EXPIRY_S
        ),
    )
    client.loop_start()
    if not done.wait(TIMEOUT_S):
        raise TimeoutError(f"paho: {received} of {MESSAGES} received")
    client.disconnect()
    client.loop_stop()


class _Batch:
    """The messages gmqtt handlers are waiting on; `committed` resolves after the commit."""

    def __init__(self) -> None:
        self.size = 0
        self.committed: asyncio.Future[None] = asyncio.get_running_loop().create_future()


async def _gmqtt_consume(broker: Broker, client_id: str, delay: float, manual: bool) -> None:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    batch = _Batch()
    received = acked = 0

    def on_receipt(client: Any, topic: str, payload: bytes, qos: int, properties: Any) -> int:
        nonlocal received
        received += 1
        if received >= MESSAGES:
            done.set()
        return 0

    async def on_message(client: Any, topic: str, payload: bytes, qos: int, properties: Any) -> int:
        nonlocal batch, received, acked
        received += 1
        mine = batch
        mine.size += 1
        if mine.size >= BATCH:
            batch = _Batch()
            if delay:
                loop.call_later(delay, mine.committed.set_result, None)
            else:
                mine.committed.set_result(None)
        await mine.committed
        acked += 1
        if acked >= MESSAGES:
            loop.call_soon(done.set)  # after this handler's PUBACK is written
        return 0  # PUBACK reason code: success

    client = gmqtt.Client(
        client_id,
        clean_session=False,
        optimistic_acknowledgement=not manual,
        receive_maximum=RECEIVE_MAXIMUM,
        session_expiry_interval=SESSION_EXPIRY_S,
    )
    client.set_auth_credentials(*broker.platform)
    client.on_message = on_message if manual else on_receipt
    await client.connect("127.0.0.1", broker.port, keepalive=120, version=MQTTv50)
    try:
        await asyncio.wait_for(done.wait(), TIMEOUT_S)
    finally:
        await client.disconnect()


def gmqtt_consume(broker: Broker, client_id: str, delay: float, *, manual: bool = True) -> None:
    """gmqtt: an async on_message per message waits for its batch's commit and returns the
    PUBACK reason code; or, `manual=False`, optimistic acknowledgement on receipt."""
    asyncio.run(_gmqtt_consume(broker, client_id, delay, manual))


async def _gmqtt_batch_acks(broker: Broker, client_id: str, delay: float) -> None:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    pending: list[int] = []
    acked = 0
    client = gmqtt.Client(
        client_id,
        clean_session=False,
        optimistic_acknowledgement=False,
        receive_maximum=RECEIVE_MAXIMUM,
        session_expiry_interval=SESSION_EXPIRY_S,
    )
    handler = client._package_handler  # private: gmqtt has no public late PUBACK by id

    def commit(mids: list[int]) -> None:
        nonlocal acked
        for mid in mids:
            handler._send_puback(mid)
        acked += len(mids)
        if acked >= MESSAGES:
            done.set()

    def on_qos_1(mid: int, payload: bytes, topic: str, properties: Any) -> None:
        nonlocal pending
        pending.append(mid)
        if len(pending) >= BATCH:
            loop.call_later(delay, commit, pending)
            pending = []

    handler._handle_qos_1_publish_packet = on_qos_1
    client.set_auth_credentials(*broker.platform)
    await client.connect("127.0.0.1", broker.port, keepalive=120, version=MQTTv50)
    try:
        await asyncio.wait_for(done.wait(), TIMEOUT_S)
    finally:
        await client.disconnect()


def gmqtt_private_consume(broker: Broker, client_id: str, delay: float) -> None:
    """gmqtt with its QoS 1 handler replaced (private API): message ids collected, a batch's
    PUBACKs sent after its commit, no task per message. What the task costs."""
    asyncio.run(_gmqtt_batch_acks(broker, client_id, delay))


def mosquitto_sub_consume(broker: Broker, client_id: str, delay: float) -> None:
    """mosquitto_sub (libmosquitto, C), acknowledging on receipt: the pass-through ceiling."""
    user, password = broker.platform
    subprocess.run(
        [
            "mosquitto_sub",
            *("-h", "127.0.0.1", "-p", str(broker.port), "-u", user, "-P", password),
            *("-i", client_id, "-c", "-V", "mqttv5", "-x", str(SESSION_EXPIRY_S), "-q", "1"),
            *("-t", TOPIC_FILTER.format(group=client_id), "-C", str(MESSAGES)),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=TIMEOUT_S,
    )


# -- one measurement --------------------------------------------------------------------


def _prepare_session(broker: Broker, client_id: str) -> None:
    """A persistent session subscribed to TOPIC_FILTER, left offline for Mosquitto to queue."""
    subscribed = threading.Event()
    client = paho_client(client_id, broker.platform)
    client.on_connect = lambda c, *_: c.subscribe(TOPIC_FILTER.format(group=client_id), qos=1)
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect(
        "127.0.0.1",
        broker.port,
        clean_start=True,
        properties=connect_properties(
            receive_maximum=RECEIVE_MAXIMUM, session_expiry_s=SESSION_EXPIRY_S
        ),
    )
    client.loop_start()
    if not subscribed.wait(30):
        raise TimeoutError("no SUBACK")
    client.disconnect()
    client.loop_stop()


def _cpu_s() -> float:
    """CPU seconds of this process and of the children it waited for (mosquitto_sub)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _child(consume: Consume, broker: Broker, client_id: str, delay: float, out: Queue[Any]) -> None:
    try:
        cpu, begin = _cpu_s(), time.monotonic()
        consume(broker, client_id, delay)
        out.put({"seconds": time.monotonic() - begin, "cpu_s": _cpu_s() - cpu})
    except BaseException as exc:
        out.put({"error": repr(exc)})


def drain(broker: Broker, consume: Consume, delay: float) -> dict[str, float]:
    """Queue MESSAGES for a fresh session, then time `consume` draining them."""
    client_id = f"bench-sub-{uuid.uuid4().hex[:8]}"
    _prepare_session(broker, client_id)
    per = MESSAGES // PUBLISHERS
    publishers = Publishers(
        broker, [per] * (PUBLISHERS - 1) + [MESSAGES - per * (PUBLISHERS - 1)], [_message] * 2
    )
    publishers.start()
    publishers.wait()
    ctx = multiprocessing.get_context("fork")
    out: Queue[Any] = ctx.Queue()
    broker_cpu = cpu_seconds(broker.pid)
    process = ctx.Process(target=_child, args=(consume, broker, client_id, delay, out))
    process.start()
    try:
        result = out.get(timeout=TIMEOUT_S + 30)
    finally:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
    if "error" in result:
        raise RuntimeError(f"subscriber failed: {result['error']}")
    return {
        "messages_per_s": MESSAGES / result["seconds"],
        "subscriber_cpu_us_per_message": result["cpu_s"] / MESSAGES * 1e6,
        "broker_cpu_us_per_message": (cpu_seconds(broker.pid) - broker_cpu) / MESSAGES * 1e6,
    }


def _paho_auto(broker: Broker, client_id: str, delay: float) -> None:
    paho_consume(broker, client_id, delay, manual=False)


def _gmqtt_auto(broker: Broker, client_id: str, delay: float) -> None:
    gmqtt_consume(broker, client_id, delay, manual=False)


# name -> (subscriber, the commit delays it is measured with)
VARIANTS: dict[str, tuple[Consume, tuple[float, ...]]] = {
    "paho_manual_ack": (paho_consume, COMMIT_DELAYS_S),
    "gmqtt_manual_ack": (gmqtt_consume, COMMIT_DELAYS_S),
    "gmqtt_private_manual_ack": (gmqtt_private_consume, COMMIT_DELAYS_S),
    "paho_auto_ack": (_paho_auto, (0.0,)),
    "gmqtt_auto_ack": (_gmqtt_auto, (0.0,)),
    "mosquitto_sub": (mosquitto_sub_consume, (0.0,)),
}


def measure(broker: Broker, name: str, delay: float, runs: int = RUNS) -> dict[str, Any]:
    """`runs` drains by subscriber `name`: median and spread of each figure."""
    consume = VARIANTS[name][0]
    results = [drain(broker, consume, delay) for _ in range(runs)]
    return {key: spread([r[key] for r in results]) for key in results[0]}


def pass_through(broker: Broker, runs: int = RUNS) -> dict[str, Any]:
    """Mosquitto to one plain subscriber, no code of ours: mosquitto_sub's drain rate."""
    return measure(broker, "mosquitto_sub", 0.0, runs)


def run() -> dict[str, Any]:
    """Every subscriber, every commit delay, RUNS drains each, on one Mosquitto."""
    figures: dict[str, Any] = {}
    with mosquitto(PUBLISHERS, topic="bench/#") as broker:
        for name, (_, delays) in VARIANTS.items():
            for delay in delays:
                label = (
                    f"{name}_commit_{round(delay * 1000)}ms"
                    if name.endswith("manual_ack")
                    else name
                )
                figures[label] = measure(broker, name, delay)
                print(f"  {label}: {figures[label]['messages_per_s']}", flush=True)
    late = {k: v["messages_per_s"]["median"] for k, v in figures.items() if "manual" in k}
    return {
        "name": "mqtt_clients",
        "messages": MESSAGES,
        "payload_bytes": len(_message(0)[1]),
        "batch": BATCH,
        "receive_maximum": RECEIVE_MAXIMUM,
        "runs": RUNS,
        "subscribers": figures,
        "fastest_manual_ack": max(late, key=late.__getitem__),
        "fastest_manual_ack_public_api": max(
            (k for k in late if "private" not in k), key=late.__getitem__
        ),
        "note": "drain of a queue Mosquitto holds for an offline persistent session "
        f"({TOPIC_FILTER.format(group='g')}, MQTT 5, QoS 1): CONNECT to last PUBACK, "
        f"subscriber in its own process; batches of {BATCH} acknowledged after the commit delay; "
        f"receive maximum {RECEIVE_MAXIMUM}; {os.cpu_count()} cores shared with other work",
    }
