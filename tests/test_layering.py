"""Layering rules read from the import graph: the domain errors stay free of the web framework
(services, the MQTT path and jobs raise them; only fleetcore.web.errors turns them into
responses)."""

from __future__ import annotations

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
