"""A device written with ThingsBoard's own Python SDK (tb-mqtt-client, MQTT 5), unchanged.

Run by the tests with the SDK's own virtualenv (the SDK brings a fork of paho under the same
package name, so it cannot share the project's). Prints one JSON line per step; the test
drives and checks them.

    python tb_sdk_device.py provision PORT PROVISION_KEY PROVISION_SECRET DEVICE_NAME
        provisions itself (embedded broker), waits for a line on stdin (the test sets the
        new device's shared attributes meanwhile), then logs in with the token as user name
    python tb_sdk_device.py basic PORT USERNAME PASSWORD
        logs in with ThingsBoard's "MQTT Basic" credentials (device id and token, as on a
        Mosquitto with dynamic security) and also answers one server-side RPC
"""

import json
import sys
import threading
import time

from tb_device_mqtt import TBDeviceMqttClient  # type: ignore[import-not-found]


def say(step: str, **data: object) -> None:
    print(json.dumps({"step": step, **data}), flush=True)


def login() -> "tuple[TBDeviceMqttClient, bool]":
    """The client (not yet connected) and whether to wait for a server-side RPC."""
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "provision":
        key, secret, name = sys.argv[3], sys.argv[4], sys.argv[5]
        credentials = TBDeviceMqttClient.provision(
            "127.0.0.1", key, secret, port=port, device_name=name
        )
        say("provisioned", ok=bool(credentials and credentials.get("credentialsValue")))
        sys.stdin.readline()  # the test gives the new device its shared attributes first
        token = credentials["credentialsValue"]
        return TBDeviceMqttClient("127.0.0.1", port=port, username=token), False
    username, password = sys.argv[3], sys.argv[4]
    client = TBDeviceMqttClient("127.0.0.1", port=port, username=username, password=password)
    return client, True


def main() -> None:
    client, rpc_too = login()
    rpc = threading.Event()
    got: dict[str, object] = {}

    def on_rpc(request_id: object, request: object) -> None:
        got["rpc"] = request
        client.send_rpc_reply(request_id, {"done": True})
        rpc.set()

    client.set_server_side_rpc_request_handler(on_rpc)
    client.connect(timeout=10)
    deadline = time.monotonic() + 15
    while not (client.is_connected() and client.rate_limits_received):
        if time.monotonic() > deadline:
            say("connected", ok=False)
            return
        time.sleep(0.1)
    say("connected", ok=True, max_payload=client.max_payload_size)
    say("telemetry", rc=client.send_telemetry({"sdk_temp": 21.5}).get())
    say("attributes", rc=client.send_attributes({"sdk_fw": "1.0.3"}).get())
    answered = threading.Event()

    def on_attributes(response: object, *_: object) -> None:
        got["response"] = response
        answered.set()

    client.request_attributes(
        client_keys=["sdk_fw"], shared_keys=["interval"], callback=on_attributes
    )
    answered.wait(10)
    say("requested", response=got.get("response"))
    updated = threading.Event()

    def on_update(update: object, *_: object) -> None:
        got["update"] = update
        updated.set()

    client.subscribe_to_attribute("interval", on_update)
    say("subscribed")
    updated.wait(15)
    say("updated", update=got.get("update"))
    if rpc_too:
        say("rpc_ready")
        deadline = time.monotonic() + 20
        while not rpc.wait(0.5) and time.monotonic() < deadline:
            client.send_telemetry({"heartbeat": 1})  # whichever worker hears it sends what waits
        say("rpc", request=got.get("rpc"))
    client.disconnect()


if __name__ == "__main__":
    main()
