"""The judgement half of scripts/audit-deps.sh: the accept-list, and pip-audit's report.

    audit_deps.py accepted FILE      print the ids to ignore, one a line; exit 1 if an entry
                                     has expired, 2 if the file is not a valid accept-list
    audit_deps.py verdict REPORT --exit-status N --stderr FILE
                                     say what pip-audit's JSON report means; exit 1 on any
                                     known vulnerability, or when the audit could not run and
                                     FLEETCORE_AUDIT_REQUIRED=1

The accept-list (security/accepted-vulnerabilities.toml) holds reviewed exceptions only:
each [[accept]] entry names the vulnerability id, the package, why it does not apply to
us, and the date until which that review holds. Standard library only.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FIELDS = ("id", "package", "reason", "until")
# pip-audit's words when it could not reach its service (pip_audit._cli, 2.10).
_UNREACHABLE = re.compile(
    r"connect|network|name resolution|failed to resolve|timed? ?out|unreachable|temporary failure",
    re.IGNORECASE,
)


class AcceptListError(ValueError):
    """The accept-list is not a list of complete, well-typed entries."""


@dataclass(frozen=True, slots=True)
class Accepted:
    """One reviewed vulnerability: accepted for `package` until the end of `until`."""

    id: str
    package: str
    reason: str
    until: datetime.date


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the audit found: lines to print and the exit status."""

    status: int
    lines: list[str]


def load_accepted(text: str) -> list[Accepted]:
    """The entries of an accept-list; AcceptListError says what is wrong with it."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AcceptListError(f"not TOML: {exc}") from None
    unknown = set(document) - {"accept"}
    if unknown:
        raise AcceptListError(f"unknown keys {sorted(unknown)}; entries are [[accept]] tables")
    entries: list[Accepted] = []
    for number, raw in enumerate(document.get("accept", []), start=1):
        if not isinstance(raw, dict) or set(raw) != set(FIELDS):
            raise AcceptListError(f"entry {number} must have exactly {', '.join(FIELDS)}")
        if not all(isinstance(raw[k], str) and raw[k].strip() for k in FIELDS[:3]):
            raise AcceptListError(f"entry {number}: id, package and reason must be text")
        if type(raw["until"]) is not datetime.date:  # a TOML date, not a string or a datetime
            raise AcceptListError(f"entry {number}: until must be a date (until = 2026-06-30)")
        entries.append(Accepted(raw["id"], raw["package"], raw["reason"], raw["until"]))
    ids = [entry.id for entry in entries]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise AcceptListError(f"accepted more than once: {', '.join(repeated)}")
    return entries


def expired(entries: list[Accepted], today: datetime.date) -> list[Accepted]:
    """The entries whose review no longer holds."""
    return [entry for entry in entries if entry.until < today]


def judge(report: dict[str, Any], *, required: bool) -> Verdict:
    """The meaning of a pip-audit JSON report (``-f json``)."""
    dependencies = report.get("dependencies", [])
    found = [
        f"  {dep['name']} {dep['version']}: {vuln['id']}"
        + (f" (fixed in {', '.join(vuln['fix_versions'])})" if vuln.get("fix_versions") else "")
        for dep in dependencies
        for vuln in dep.get("vulns", [])
    ]
    skipped = [
        f"  {dep['name']}: {dep['skip_reason']}" for dep in dependencies if "skip_reason" in dep
    ]
    audited = len(dependencies) - len(skipped)
    if found:
        return Verdict(
            1,
            [
                f"dependency audit FAILED: {len(found)} known vulnerabilities",
                *found,
                "Upgrade the package (uv lock --upgrade-package NAME), or, if it does not "
                "apply to us, accept it in security/accepted-vulnerabilities.toml.",
            ],
        )
    if not audited:
        return unreachable(f"none of {len(dependencies)} dependencies could be audited", required)
    if skipped:
        return Verdict(
            1 if required else 0,
            [
                f"dependency audit INCOMPLETE: {len(skipped)} of {len(dependencies)} not audited",
                *skipped,
            ],
        )
    return Verdict(0, [f"dependency audit: {audited} dependencies, no known vulnerabilities"])


def unreachable(why: str, required: bool) -> Verdict:
    """The audit did not run: loud, and a failure only when it is required."""
    lines = [
        "=" * 72,
        "dependency audit SKIPPED: vulnerability service unreachable",
        f"({why}; set FLEETCORE_AUDIT_REQUIRED=1 to fail instead)",
        "=" * 72,
    ]
    return Verdict(1 if required else 0, lines)


def verdict_of_run(report_path: Path, exit_status: int, stderr: str, *, required: bool) -> Verdict:
    """The verdict of one pip-audit run: its report, or why there is none."""
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        report = None
    if isinstance(report, dict) and isinstance(report.get("dependencies"), list):
        return judge(report, required=required)
    if exit_status and _UNREACHABLE.search(stderr):
        return unreachable(f"pip-audit exited {exit_status}: {stderr.strip()[-300:]}", required)
    return Verdict(
        2, [f"dependency audit ERROR: pip-audit exited {exit_status} without a report", stderr]
    )


def main(argv: list[str]) -> int:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="audit_deps.py")
    commands = parser.add_subparsers(dest="command", required=True)
    accepted = commands.add_parser("accepted")
    accepted.add_argument("file", type=Path)
    accepted.add_argument("--today", type=datetime.date.fromisoformat, default=None)
    verdict = commands.add_parser("verdict")
    verdict.add_argument("report", type=Path)
    verdict.add_argument("--exit-status", type=int, required=True)
    verdict.add_argument("--stderr", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "accepted":
        try:
            entries = load_accepted(args.file.read_text(encoding="utf-8"))
        except (OSError, AcceptListError) as exc:
            print(f"dependency audit ERROR: {args.file}: {exc}", file=sys.stderr)
            return 2
        stale = expired(entries, args.today or datetime.date.today())
        for entry in stale:
            print(
                f"dependency audit FAILED: the acceptance of {entry.id} ({entry.package}) "
                f"expired on {entry.until}: review it again or upgrade",
                file=sys.stderr,
            )
        print("\n".join(entry.id for entry in entries))
        return 1 if stale else 0
    required = os.environ.get("FLEETCORE_AUDIT_REQUIRED") == "1"
    stderr = args.stderr.read_text(encoding="utf-8", errors="replace")
    result = verdict_of_run(args.report, args.exit_status, stderr, required=required)
    print("\n".join(result.lines), file=sys.stderr if result.status else sys.stdout)
    return result.status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
