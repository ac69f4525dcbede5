#!/usr/bin/env bash
# Installs the Debian packages the test suite starts for itself, when they are missing.
set -euo pipefail

missing=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || [ -n "${FLEETCORE_TEST_PG_BINDIR:-}" ] || missing+=(postgresql-15)

[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing Debian packages: ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
elif command -v sudo >/dev/null 2>&1; then
  sudo apt-get update -qq
  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "please install: ${missing[*]} (apt-get install ${missing[*]})" >&2
  exit 1
fi
