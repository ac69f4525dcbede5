#!/usr/bin/env bash
# Installs the named Debian packages (as root, or through sudo), or says what to install.
# Used by scripts/system-deps.sh (the tests' packages) and scripts/prod-topology.sh.
set -euo pipefail

[ $# -gt 0 ] || exit 0
echo "installing Debian packages: $*" >&2
if [ "$(id -u)" -eq 0 ]; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
elif command -v sudo >/dev/null 2>&1; then
  sudo apt-get update -qq >&2
  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
else
  echo "please install: $* (apt-get install $*)" >&2
  exit 1
fi
