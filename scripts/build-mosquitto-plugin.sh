#!/usr/bin/env bash
# Builds deploy/mosquitto/fleetcore_mount.c (the per-client mount plugin for Mosquitto 2.0)
# into OUT_DIR (default var/mosquitto/), only when the source is newer than the library.
# Needs gcc and Debian's mosquitto-dev + libmosquitto-dev (scripts/system-deps.sh).
# Prints the path of the plugin.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source="$root/deploy/mosquitto/fleetcore_mount.c"
out_dir="${1:-$root/var/mosquitto}"
target="$out_dir/fleetcore_mount.so"

mkdir -p "$out_dir"
if [ ! -e "$target" ] || [ "$source" -nt "$target" ]; then
  # Build beside the target and rename: a broker loading the old file never sees half of one.
  tmp="$(mktemp "$out_dir/.fleetcore_mount.XXXXXX.so")"
  trap 'rm -f "$tmp"' EXIT
  gcc -shared -fPIC -O2 -Wall -Wextra -Werror -o "$tmp" "$source"
  chmod 0755 "$tmp"
  mv -f "$tmp" "$target"
  trap - EXIT
fi
echo "$target"
