"""The layering promise: only a transport's own package and the app wiring import it
(the embedded broker, fleetcore.mqtt; the external broker's client, fleetcore.external_broker
and paho-mqtt); the device-message layer and every domain reach devices without them."""

from __future__ import annotations

from pathlib import Path

import fleetcore
from tests.support.imports import imports_of

PACKAGE = Path(fleetcore.__file__).parent
# Who may import the broker: itself, and the application that wires it in.
ALLOWED = {PACKAGE / "app.py"}


def _imports_of(path: Path) -> set[str]:
    return imports_of(path, PACKAGE.parent)


def _mqtt(name: str) -> bool:
    return name == "fleetcore.mqtt" or name.startswith("fleetcore.mqtt.")


def test_only_the_broker_and_the_wiring_import_fleetcore_mqtt() -> None:
    offenders = sorted(
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in PACKAGE.rglob("*.py")
        if path not in ALLOWED and not path.is_relative_to(PACKAGE / "mqtt")
        for name in _imports_of(path)
        if _mqtt(name)
    )
    assert offenders == []


def test_the_walk_sees_the_wiring_and_the_broker() -> None:
    # Guards the test above against walking nothing (a moved package, a wrong root).
    assert any(_mqtt(name) for name in _imports_of(PACKAGE / "app.py"))
    assert "fleetcore.device_messages.inbound" in _imports_of(PACKAGE / "mqtt" / "gateway.py")
    assert len(list(PACKAGE.rglob("*.py"))) > 50


# The external broker's client: its package, the wiring, and the credential sync (a broker
# client of its own) may import it or paho-mqtt; domains and the layer may not.
EXTERNAL = ("fleetcore.external_broker", "paho")
EXTERNAL_OWNERS = ("external_broker", "broker_sync", "simulator")


def _external(name: str) -> bool:
    return any(name == root or name.startswith(root + ".") for root in EXTERNAL)


def test_only_the_wiring_and_broker_clients_import_the_external_transport() -> None:
    offenders = sorted(
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in PACKAGE.rglob("*.py")
        if path not in ALLOWED
        and not any(path.is_relative_to(PACKAGE / owner) for owner in EXTERNAL_OWNERS)
        for name in _imports_of(path)
        if _external(name)
    )
    assert offenders == []
    assert any(_external(name) for name in _imports_of(PACKAGE / "app.py"))
    transport = PACKAGE / "external_broker" / "transport.py"
    assert "fleetcore.device_messages.inbound" in _imports_of(transport)
