"""A device written with ThingsBoard's own Python SDK (tb-mqtt-client, MQTT 5), unchanged.

Run by tests/test_mqtt_thingsboard_sdk.py with the SDK's own virtualenv (the SDK brings a
fork of paho under the same package name, so it cannot share the project's). Prints one
JSON line per step; the test drives and checks them.

    python tb_sdk_device.py PORT PROVISION_KEY PROVISION_SECRET DEVICE_NAME
"""

import json
import sys
import threading
import time

from tb_device_mqtt import TBDeviceMqttClient  # type: ignore[import-not-found]


def say(step: str, **data: object) -> None:
    print(json.dumps({"step": step, **data}), flush=True)


def main() -> None:
    port, key, secret, name = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    credentials = TBDeviceMqttClient.provision(
        "127.0.0.1", key, secret, port=port, device_name=name
    )
    say("provisioned", ok=bool(credentials and credentials.get("credentialsValue")))
    token = credentials["credentialsValue"]
    client = TBDeviceMqttClient("127.0.0.1", port=port, username=token)
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
    got: dict[str, object] = {}

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
    client.disconnect()


if __name__ == "__main__":
    main()
