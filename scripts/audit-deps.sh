#!/usr/bin/env bash
# Audit the locked dependencies for known vulnerabilities (pip-audit), less the reviewed
# exceptions in security/accepted-vulnerabilities.toml; scripts/audit_deps.py judges.
# Fails on any known vulnerability or an expired acceptance. When the vulnerability service
# cannot be reached it says "dependency audit SKIPPED" and passes, unless
# FLEETCORE_AUDIT_REQUIRED=1 (CI with network access should set it).
set -euo pipefail
cd "$(dirname "$0")/.."

UV="${UV:-$(command -v uv || echo .tools/bin/uv)}"
PYTHON=.venv/bin/python
ACCEPT=security/accepted-vulnerabilities.toml

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$UV" export --frozen --all-packages --no-emit-workspace --no-hashes \
    --format requirements-txt --quiet --output-file "$work/requirements.txt"

ids="$("$PYTHON" scripts/audit_deps.py accepted "$ACCEPT")"
ignore=()
for id in $ids; do
    ignore+=(--ignore-vuln "$id")
done

status=0
.venv/bin/pip-audit -r "$work/requirements.txt" --no-deps --disable-pip \
    --progress-spinner off --format json --output "$work/report.json" "${ignore[@]}" \
    2> "$work/stderr" || status=$?

"$PYTHON" scripts/audit_deps.py verdict "$work/report.json" \
    --exit-status "$status" --stderr "$work/stderr"
