"""Layering rules read from the import graph: the domain errors stay free of the web framework
(services, the MQTT path and jobs raise them; only fleetcore.web.errors turns them into
responses), and no domain's routers or pages import another domain's routers or pages (what
they share lives in dependency modules: alerts/deps.py, commands/deps.py, dashboard/context.py;
fleetcore/routers.py and app.py, which compose them all, are outside any domain)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import fleetcore
from tests.support.imports import imports_of

PACKAGE = Path(fleetcore.__file__).parent
ERRORS = PACKAGE / "errors.py"
WEB = ("fastapi", "starlette", "jinja2", "fleetcore.web", "fleetcore.templating")


def _is_web(name: str) -> bool:
    return any(name == root or name.startswith(root + ".") for root in WEB)


def test_domain_errors_import_no_web_framework() -> None:
    offenders = sorted(name for name in imports_of(ERRORS, PACKAGE.parent) if _is_web(name))
    assert offenders == []


def test_domain_errors_load_without_the_web_framework() -> None:
    # The transitive check: a fresh interpreter that imports the errors has no web module
    # loaded, whatever the errors module's own imports pull in.
    probe = (
        "import sys, fleetcore.errors\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'fastapi', 'starlette', 'jinja2'}))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert loaded.strip() == "[]"


def test_the_error_check_sees_what_it_checks(tmp_path: Path) -> None:
    # Guards the first test: it reads the real file, and it catches each way of importing.
    assert "class NotFound" in ERRORS.read_text()
    for source in (
        "from fastapi import Request\n",
        "import starlette.responses\n",
        "from fleetcore.web.errors import envelope\n",
        "from fleetcore import templating\n",
    ):
        probe = tmp_path / "probe.py"
        probe.write_text(source)
        assert any(_is_web(name) for name in imports_of(probe, PACKAGE.parent)), source


# A router or pages module: router.py, pages.py and their siblings (recommendations_router.py,
# order_pages.py, ...).
WEB_MODULE = re.compile(r"^(router|pages|\w+_router|\w+_pages)$")


def _web_modules() -> list[Path]:
    return sorted(
        path
        for path in PACKAGE.rglob("*.py")
        if len(path.relative_to(PACKAGE).parts) > 1 and WEB_MODULE.match(path.stem)
    )


def _foreign_web_imports(path: Path, domain: str) -> list[str]:
    """The router or pages modules of domains other than `domain` this file imports."""
    found = set()
    for name in imports_of(path, PACKAGE.parent):
        parts = name.split(".")
        foreign = len(parts) >= 3 and parts[0] == "fleetcore" and parts[1] != domain
        if foreign and WEB_MODULE.match(parts[2]):
            found.add(".".join(parts[:3]))
    return sorted(found)


def test_routers_and_pages_do_not_import_other_domains_routers() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE)} imports {module}"
        for path in _web_modules()
        for module in _foreign_web_imports(path, path.relative_to(PACKAGE).parts[0])
    ]
    assert offenders == []


def test_the_router_check_sees_what_it_checks(tmp_path: Path) -> None:
    # Guards the test above: it finds the real modules, and it catches each way of importing
    # another domain's router or pages, but not the same domain's.
    names = {str(path.relative_to(PACKAGE)) for path in _web_modules()}
    assert {"devices/router.py", "devices/pages.py", "advisory/recommendations_router.py"} <= names
    for source, foreign in (
        ("from fleetcore.rules.router import EngineDep\n", True),
        ("from fleetcore.commands import router\n", True),
        ("import fleetcore.vending.order_pages\n", True),
        ("from fleetcore.alerts.pages import router\n", False),
        ("from fleetcore.alerts.deps import BusDep\n", False),
        ("from fleetcore.dashboard.web import render\n", False),
    ):
        probe = tmp_path / "probe.py"
        probe.write_text(source)
        assert bool(_foreign_web_imports(probe, "alerts")) is foreign, source


def _domains_imported(path: Path) -> set[str]:
    """The fleetcore packages (domains) a file imports; top-level modules are not domains."""
    return {
        parts[1]
        for name in imports_of(path, PACKAGE.parent)
        if (parts := name.split("."))[0] == "fleetcore"
        and len(parts) >= 2
        and (PACKAGE / parts[1]).is_dir()
    }


def test_the_device_page_gathers_its_sections_through_one_module() -> None:
    # The device page reaches the domains with a part in it only through
    # dashboard/device_page.py; telemetry stays for the list page's latest values.
    assert _domains_imported(PACKAGE / "devices" / "pages.py") <= {
        "devices",
        "dashboard",
        "telemetry",
    }
    composed = _domains_imported(PACKAGE / "dashboard" / "device_page.py")
    assert {"alerts", "attributes", "commands", "events", "status", "advisory"} <= composed


def test_telemetry_does_not_import_the_archive() -> None:
    # The archive reads telemetry (export.iter_rows) and is handed to retention by the app;
    # telemetry importing it back would make the two one tangle.
    offenders = sorted(
        f"{module.name} imports {name}"
        for module in (PACKAGE / "telemetry").glob("*.py")
        for name in imports_of(module, PACKAGE.parent)
        if name == "fleetcore.archive" or name.startswith("fleetcore.archive.")
    )
    assert offenders == []
    assert any(
        name.startswith("fleetcore.telemetry")
        for name in imports_of(PACKAGE / "archive" / "reading.py", PACKAGE.parent)
    )  # the check sees imports between the two packages


def test_the_body_limit_helpers_import_no_web_layer() -> None:
    # Domain services (OTA packages, media) cap their bodies through fleetcore/body_limit.py;
    # it may use starlette's request and parser, never our web layer or fastapi.
    imported = imports_of(PACKAGE / "body_limit.py", PACKAGE.parent)
    offenders = sorted(
        name for name in imported if _is_web(name) and not name.startswith("starlette")
    )
    assert offenders == []
    assert "fleetcore.web.errors" in imports_of(PACKAGE / "web" / "body_limit.py", PACKAGE.parent)
