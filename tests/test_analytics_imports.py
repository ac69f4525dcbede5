"""The advisory boundary: analytics advises and never acts. Nothing under fleetcore.analytics
may import the commands domain, a transport (the embedded broker, the external broker's
client, paho), the device-message layer or the web layer; recommendations become commands
only through approval and the safety validator, outside analytics."""

from __future__ import annotations

from pathlib import Path

import fleetcore
from tests.support.imports import imports_of

PACKAGE = Path(fleetcore.__file__).parent
ANALYTICS = PACKAGE / "analytics"
FORBIDDEN = (
    "fleetcore.commands",
    "fleetcore.advisory",  # the approval flow: it may import analytics, never the reverse
    "fleetcore.mqtt",
    "fleetcore.external_broker",
    "fleetcore.device_messages",
    "fleetcore.broker_sync",
    "paho",
    "gmqtt",
    "fastapi",
    "starlette",
)


def _imports_of(path: Path) -> set[str]:
    return imports_of(path, PACKAGE.parent)


def _forbidden(name: str) -> bool:
    return any(name == root or name.startswith(root + ".") for root in FORBIDDEN)


def test_analytics_cannot_reach_a_device() -> None:
    offenders = sorted(
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in ANALYTICS.rglob("*.py")
        for name in _imports_of(path)
        if _forbidden(name)
    )
    assert offenders == []


def test_the_check_sees_what_it_checks(tmp_path: Path) -> None:
    # Guards the test above: it walks real files, and it would catch each way of importing.
    assert len(list(ANALYTICS.rglob("*.py"))) >= 2
    for source in (
        "import fleetcore.commands.service\n",
        "from fleetcore.commands import delivery\n",
        "from fleetcore.mqtt.transport import EmbeddedTransport\n",
        "import paho.mqtt.client as mqtt\n",
        "from fleetcore.advisory.recommendations import approve\n",
    ):
        probe = tmp_path / "probe.py"
        probe.write_text(source)
        assert any(_forbidden(name) for name in _imports_of(probe)), source
