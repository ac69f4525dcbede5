"""The dependency audit's judgement (scripts/audit_deps.py), without the network.

The pip-audit reports are made by pip-audit's own JSON formatter from its own result types,
so a change of its output format in an upgrade shows here, not as a silently passing audit.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from packaging.version import Version
from pip_audit._format.json import JsonFormat
from pip_audit._service.interface import (
    ResolvedDependency,
    SkippedDependency,
    VulnerabilityResult,
)

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "audit_deps.py"
ACCEPT_LIST = ROOT / "security" / "accepted-vulnerabilities.toml"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("audit_deps", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["audit_deps"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


audit = _load()

ENTRY = """
[[accept]]
id = "GHSA-aaaa-bbbb-cccc"
package = "jinja2"
reason = "Only reached through the sandbox, which Fleetcore never uses."
until = 2026-06-30
"""


def _report(
    vulnerable: dict[str, list[str]] | None = None, *, skipped: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A report as pip-audit writes it (-f json), made by pip-audit's own formatter."""
    result: dict[Any, list[VulnerabilityResult]] = {}
    for name, ids in (vulnerable or {}).items():
        result[ResolvedDependency(name=name, version=Version("1.0"))] = [
            VulnerabilityResult(
                id=vuln_id, description="", fix_versions=[Version("1.1")], aliases=set()
            )
            for vuln_id in ids
        ]
    result[ResolvedDependency(name="fastapi", version=Version("0.120.0"))] = []
    for name in skipped:
        reason = f"Dependency not found on PyPI and could not be audited: {name} (1.0)"
        result[SkippedDependency(name=name, skip_reason=reason)] = []
    report: dict[str, Any] = json.loads(JsonFormat(False, False).format(result, []))
    return report


def test_accept_list_entries_are_read() -> None:
    entries = audit.load_accepted(ENTRY)
    assert entries == [
        audit.Accepted(
            "GHSA-aaaa-bbbb-cccc",
            "jinja2",
            "Only reached through the sandbox, which Fleetcore never uses.",
            datetime.date(2026, 6, 30),
        )
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (ENTRY.replace('reason = "Only', 'why = "Only'), "exactly id, package, reason, until"),
        (ENTRY.replace("until = 2026-06-30", 'until = "2026-06-30"'), "until must be a date"),
        (ENTRY.replace("until = 2026-06-30", "until = 2026-06-30T00:00:00"), "must be a date"),
        (ENTRY.replace('package = "jinja2"', 'package = ""'), "must be text"),
        (ENTRY + ENTRY, "accepted more than once: GHSA-aaaa-bbbb-cccc"),
        ("[accept]\nid = 1", "exactly id, package, reason, until"),
        ("accept = [", "not TOML"),
        ("[[ignore]]\nid = 'x'", "unknown keys ['ignore']"),
    ],
)
def test_an_invalid_accept_list_is_refused(text: str, message: str) -> None:
    with pytest.raises(audit.AcceptListError, match=message.replace("[", r"\[")):
        audit.load_accepted(text)


def test_an_acceptance_holds_until_the_end_of_its_day() -> None:
    entries = audit.load_accepted(ENTRY)
    assert audit.expired(entries, datetime.date(2026, 6, 30)) == []
    assert audit.expired(entries, datetime.date(2026, 7, 1)) == entries


def test_the_repository_accept_list_is_valid() -> None:
    audit.load_accepted(ACCEPT_LIST.read_text(encoding="utf-8"))


def test_a_known_vulnerability_fails_the_audit_and_says_how_to_accept_it() -> None:
    verdict = audit.judge(_report({"jinja2": ["GHSA-aaaa-bbbb-cccc"]}), required=False)
    assert verdict.status == 1
    assert verdict.lines[0] == "dependency audit FAILED: 1 known vulnerabilities"
    assert "  jinja2 1.0: GHSA-aaaa-bbbb-cccc (fixed in 1.1)" in verdict.lines
    assert "security/accepted-vulnerabilities.toml" in verdict.lines[-1]


def test_a_clean_report_passes() -> None:
    verdict = audit.judge(_report(), required=True)
    assert verdict == audit.Verdict(
        0, ["dependency audit: 1 dependencies, no known vulnerabilities"]
    )


@pytest.mark.parametrize("required", [False, True])
def test_an_audit_that_could_not_run_is_skipped_loudly(required: bool) -> None:
    # What this workplace gets: the service answers 404 for every package, so pip-audit
    # skips them all and exits 0 with "No known vulnerabilities found".
    report = _report(skipped=("amqtt", "orjson"))
    report["dependencies"] = [d for d in report["dependencies"] if "skip_reason" in d]
    verdict = audit.judge(report, required=required)
    assert "dependency audit SKIPPED: vulnerability service unreachable" in verdict.lines
    assert verdict.status == (1 if required else 0)


@pytest.mark.parametrize("required", [False, True])
def test_a_partial_audit_names_what_was_not_audited(required: bool) -> None:
    verdict = audit.judge(_report(skipped=("amqtt",)), required=required)
    assert verdict.lines[0] == "dependency audit INCOMPLETE: 1 of 2 not audited"
    assert verdict.lines[1].startswith("  amqtt: Dependency not found on PyPI")
    assert verdict.status == (1 if required else 0)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=60,
    )


def test_cli_prints_accepted_ids_and_fails_on_an_expired_one(tmp_path: Path) -> None:
    accept = tmp_path / "accept.toml"
    accept.write_text(ENTRY, encoding="utf-8")
    current = _cli("accepted", str(accept), "--today", "2026-01-01")
    assert (current.returncode, current.stdout) == (0, "GHSA-aaaa-bbbb-cccc\n")
    late = _cli("accepted", str(accept), "--today", "2026-07-01")
    assert late.returncode == 1
    assert "GHSA-aaaa-bbbb-cccc (jinja2) expired on 2026-06-30" in late.stderr
    accept.write_text("[[accept]]\nid = 'x'\n", encoding="utf-8")
    assert _cli("accepted", str(accept)).returncode == 2


def test_cli_verdicts(tmp_path: Path) -> None:
    report, stderr = tmp_path / "report.json", tmp_path / "stderr"
    stderr.write_text("", encoding="utf-8")
    report.write_text(json.dumps(_report({"jinja2": ["PYSEC-2024-1"]})), encoding="utf-8")
    found = _cli("verdict", str(report), "--exit-status", "1", "--stderr", str(stderr))
    assert found.returncode == 1
    assert "jinja2 1.0: PYSEC-2024-1" in found.stderr
    # pip-audit gave up before writing a report (its service refused the connection).
    report.unlink()
    stderr.write_text("ERROR:pip_audit._cli:Connection refused\nTip: your network may be blocking")
    gone = _cli("verdict", str(report), "--exit-status", "1", "--stderr", str(stderr))
    assert (gone.returncode, "SKIPPED" in gone.stdout) == (0, True)
    required = _cli(
        "verdict",
        str(report),
        "--exit-status",
        "1",
        "--stderr",
        str(stderr),
        env={"FLEETCORE_AUDIT_REQUIRED": "1"},
    )
    assert (required.returncode, "SKIPPED" in required.stderr) == (1, True)
    # Any other failure without a report is an error, not a skip.
    stderr.write_text("ERROR:pip_audit._cli:invalid requirement: 'foo=='\n")
    broken = _cli("verdict", str(report), "--exit-status", "1", "--stderr", str(stderr))
    assert broken.returncode == 2
