#!/usr/bin/env bash
# Install fleetcore-agent with self-update on a Raspberry Pi (or any systemd Linux).
#
#   sudo ./install.sh fleetcore_agent-X-py3-none-any.whl fleetcore_protocol-Y-py3-none-any.whl
#   sudo ./install.sh agent-bundle.tar.gz          # a tar or zip of wheels (offline devices)
#
# Creates the fleetcore-agent user, /opt/fleetcore-agent/{versions/<version>,current,wheels,
# guard.py}, /etc/fleetcore-agent/agent.yaml (from the example, if missing) and the systemd
# unit, enabled. Start it once device_id and token are set: systemctl start fleetcore-agent.
#
# Options: --root DIR (/opt/fleetcore-agent), --config-dir DIR (/etc/fleetcore-agent),
# --state-dir DIR (/var/lib/fleetcore-agent), --offline (no package index: the given wheels
# only), --installer pip|uv|/path/to/uv (pip), --start (start the service at the end),
# --no-system (no user, unit or systemctl: only the versions layout, for tests and containers).
set -euo pipefail

ROOT=/opt/fleetcore-agent
CONFIG_DIR=/etc/fleetcore-agent
STATE_DIR=/var/lib/fleetcore-agent
USER_NAME=fleetcore-agent
INSTALLER=pip
OFFLINE=0
SYSTEM=1
START=0
PYTHON=${PYTHON:-python3}
PACKAGES=()
HERE=$(cd "$(dirname "$0")" && pwd)

while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT=$2; shift 2 ;;
        --config-dir) CONFIG_DIR=$2; shift 2 ;;
        --state-dir) STATE_DIR=$2; shift 2 ;;
        --installer) INSTALLER=$2; shift 2 ;;
        --offline) OFFLINE=1; shift ;;
        --no-system) SYSTEM=0; shift ;;
        --start) START=1; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        -*) echo "install.sh: unknown option $1" >&2; exit 2 ;;
        *) PACKAGES+=("$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"); shift ;;
    esac
done
[ ${#PACKAGES[@]} -gt 0 ] || { echo "install.sh: give the agent's wheels or a bundle" >&2; exit 2; }
if [ "$SYSTEM" = 1 ] && [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root (or with --no-system)" >&2; exit 2
fi
"$PYTHON" -c 'import venv, sys; assert sys.version_info >= (3, 11)' 2>/dev/null || {
    echo "install.sh: needs Python 3.11+ with venv (apt install python3-venv)" >&2; exit 2; }

if [ "$SYSTEM" = 1 ] && ! id "$USER_NAME" >/dev/null 2>&1; then
    useradd --system --home-dir "$STATE_DIR" --shell /usr/sbin/nologin "$USER_NAME"
fi
if [ "$SYSTEM" = 1 ]; then
    for group in gpio video i2c; do  # real sensors and cameras on Raspberry Pi OS
        if getent group "$group" >/dev/null; then usermod -aG "$group" "$USER_NAME"; fi
    done
fi

mkdir -p "$ROOT/versions" "$ROOT/wheels" "$STATE_DIR" "$CONFIG_DIR"
# The wheels (a bundle's too) join $ROOT/wheels; the agent's names the version.
VERSION=$("$PYTHON" - "$ROOT/wheels" "${PACKAGES[@]}" <<'PY'
import shutil, sys, tarfile, zipfile
from pathlib import Path
into, packages = Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]
names = []
for package in packages:
    if package.name.endswith(".whl"):
        shutil.copyfile(package, into / package.name)
        names.append(package.name)
    elif zipfile.is_zipfile(package):
        with zipfile.ZipFile(package) as archive:
            for member in archive.namelist():
                if member.endswith(".whl"):
                    (into / Path(member).name).write_bytes(archive.read(member))
                    names.append(Path(member).name)
    elif tarfile.is_tarfile(package):
        with tarfile.open(package) as archive:
            for member in archive.getmembers():
                handle = archive.extractfile(member) if member.isfile() else None
                if handle is not None and member.name.endswith(".whl"):
                    (into / Path(member.name).name).write_bytes(handle.read())
                    names.append(Path(member.name).name)
    else:
        sys.exit(f"install.sh: {package} is neither a wheel nor a bundle of wheels")
agents = [n for n in names if n.startswith("fleetcore_agent-")]
if len(agents) != 1:
    sys.exit("install.sh: expected exactly one fleetcore_agent wheel")
print(agents[0].split("-")[1])
PY
)
VENV="$ROOT/versions/$VERSION"
SOURCES=(--find-links "$ROOT/wheels")
[ "$OFFLINE" = 1 ] && SOURCES+=(--no-index)
echo "install.sh: installing fleetcore-agent $VERSION into $VENV"
rm -rf "$VENV"
if [ "$INSTALLER" = pip ]; then
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet "${SOURCES[@]}" "fleetcore-agent==$VERSION"
else
    "$INSTALLER" venv --quiet --python "$PYTHON" "$VENV"
    "$INSTALLER" pip install --quiet --python "$VENV/bin/python" "${SOURCES[@]}" \
        "fleetcore-agent==$VERSION"
fi
"$VENV/bin/fleetcore-agent" --version

# Switch atomically (a new symlink renamed over the old one), as the agent itself does.
ln -sfn "versions/$VERSION" "$ROOT/.current.tmp"
mv -T "$ROOT/.current.tmp" "$ROOT/current"
# The guard runs outside any version, with the system Python.
GUARD=$("$VENV/bin/python" -c 'import fleetcore_agent.update.layout as m; print(m.__file__)')
install -m 0644 "$GUARD" "$ROOT/guard.py"

if [ ! -e "$CONFIG_DIR/agent.yaml" ]; then
    "$VENV/bin/fleetcore-agent" example-config \
        | sed "s|^data_dir: .*|data_dir: $STATE_DIR # the queue: outside the versions|" \
        > "$CONFIG_DIR/agent.yaml"
    printf '\nupdate:\n  root: %s\n' "$ROOT" >> "$CONFIG_DIR/agent.yaml"
    chmod 0640 "$CONFIG_DIR/agent.yaml"
    echo "install.sh: wrote $CONFIG_DIR/agent.yaml: set device_id, token and the URLs"
fi

if [ "$SYSTEM" = 1 ]; then
    chown -R "$USER_NAME:$USER_NAME" "$ROOT" "$STATE_DIR"
    chgrp "$USER_NAME" "$CONFIG_DIR/agent.yaml"
    install -m 0644 "$HERE/fleetcore-agent.service" /etc/systemd/system/fleetcore-agent.service
    sed -i "s|/opt/fleetcore-agent|$ROOT|g; s|/etc/fleetcore-agent|$CONFIG_DIR|g; s|/var/lib/fleetcore-agent|$STATE_DIR|g" \
        /etc/systemd/system/fleetcore-agent.service
    systemctl daemon-reload
    systemctl enable fleetcore-agent.service
    if [ "$START" = 1 ]; then systemctl restart fleetcore-agent.service; fi
fi
echo "install.sh: fleetcore-agent $VERSION installed in $ROOT"
