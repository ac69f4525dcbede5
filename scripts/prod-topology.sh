#!/usr/bin/env bash
# The production topology of deploy/compose.yaml without containers: PostgreSQL, Mosquitto
# (dynamic security and the mount plugin) and Redis from the Debian packages, then 2 api,
# 2 ingest and 1 worker Fleetcore processes, all with their state in DIR.
#
#   scripts/prod-topology.sh up DIR     start what is not running (installing missing Debian
#                                       packages), wait until everything is ready, print
#                                       one JSON line last:
#                                       {"api": [url, url], "mqtt_url", "database_url",
#                                        "redis_url", "pids": {name: pid}}
#   scripts/prod-topology.sh down DIR   stop everything it started (the state stays in DIR)
#   scripts/prod-topology.sh status DIR the JSON line if everything is ready, else exit 1
#
# `up` is idempotent: with everything running it prints the same line again. Each Fleetcore
# process runs under a small supervisor (this script, `_supervise`) that starts it again a
# second after it dies, as systemd's Restart=always or compose's restart policy would: an
# ingest worker must come back under its id to hand on the messages its broker session holds
# (docs/external-broker.md). "pids" names each process's current pid (a crash test kills
# those); the supervisors' pids are in DIR/run/*.supervisor.
#
# Environment: FLEETCORE_BIN, the `fleetcore` to run (default: this checkout's
# .venv/bin/fleetcore, made by `make install` if missing), e.g. /opt/fleetcore/.venv/bin/fleetcore
# for another install; PG_BINDIR (default /usr/lib/postgresql/15/bin); TOPOLOGY_HOST, the
# address everything listens on (default 127.0.0.1); TOPOLOGY_SHARE_REDIS=0 starts Redis but
# leaves FLEETCORE_REDIS_URL out of the processes' settings (a Fleetcore without the Redis hub).
#
# DIR holds: topology.env (ports, generated passwords and keys; mode 0600), fleetcore.env
# (the Fleetcore processes' settings, EnvironmentFile syntax; 0600), postgres/, mosquitto/,
# redis/, fleetcore/<name>/ (data), log/<name>.log and run/<name>.pid. Settings of your own
# for every Fleetcore process go in DIR/fleetcore.local.env (KEY=value lines); the caller's
# FLEETCORE_* variables are not passed on.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pg_bindir="${PG_BINDIR:-/usr/lib/postgresql/15/bin}"
host="${TOPOLOGY_HOST:-127.0.0.1}"
fleetcore="${FLEETCORE_BIN:-$root/.venv/bin/fleetcore}"
FLEETCORE_NAMES=(api-1 api-2 ingest-1 ingest-2 worker-1)
READY_WITHIN_S=120

usage() {
  echo "usage: $0 up|down|status DIR" >&2
  exit 2
}

log() { echo "prod-topology: $*" >&2; }
die() {
  log "$*"
  exit 1
}

# -- processes: "<pid> <start time>" in run/<name>.pid, so a reused pid is not taken for ours --

start_time() { # the kernel's start time of a live pid (field 22 of /proc/PID/stat), or nothing
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0
  stat="${stat##*) }" # the command name may hold spaces; fields after it do not
  # shellcheck disable=SC2086
  set -- $stat
  [ "$1" = Z ] || echo "${20}" # a zombie has exited (its parent has not reaped it yet)
}

running() { [ -n "$(start_time "$1")" ]; }

record() { # NAME-FILE PID
  echo "$2 $(start_time "$2")" >"$1"
}

recorded_pid() { # FILE -> the pid, if that process is still the one recorded
  local pid start
  [ -r "$1" ] || return 1
  read -r pid start <"$1" || return 1
  [ -n "$pid" ] && [ -n "$start" ] && [ "$(start_time "$pid")" = "$start" ] || return 1
  echo "$pid"
}

free_port() {
  python3 - "$host" <<'EOF'
import socket, sys
with socket.socket() as s:
    s.bind((sys.argv[1], 0))
    print(s.getsockname()[1])
EOF
}

secret() { python3 -c 'import secrets; print(secrets.token_urlsafe(32))'; }

port_open() { (exec 3<>"/dev/tcp/$host/$1") 2>/dev/null; }

http_ok() { # URL answers 200
  python3 - "$1" <<'EOF'
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as answer:
        sys.exit(0 if answer.status == 200 else 1)
except Exception:
    sys.exit(1)
EOF
}

# -- Debian packages ------------------------------------------------------------------------

install_missing() {
  local missing=()
  [ -x "$pg_bindir/initdb" ] || missing+=(postgresql-15)
  [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
  command -v mosquitto_ctrl >/dev/null 2>&1 || missing+=(mosquitto)
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  # the mount plugin (ThingsBoard topics) is built from deploy/mosquitto/fleetcore_mount.c
  command -v gcc >/dev/null 2>&1 || missing+=(gcc)
  [ -e /usr/include/stdio.h ] || missing+=(libc6-dev)
  [ -e /usr/include/mosquitto_broker.h ] || missing+=(mosquitto-dev)
  [ -e /usr/include/mosquitto.h ] || missing+=(libmosquitto-dev)
  command -v python3 >/dev/null 2>&1 || missing+=(python3)
  [ ${#missing[@]} -eq 0 ] || "$root/scripts/apt-install.sh" "${missing[@]}"
  if [ ! -x "$fleetcore" ]; then
    [ -z "${FLEETCORE_BIN:-}" ] || die "FLEETCORE_BIN=$fleetcore is not executable"
    log "no $fleetcore: make install"
    make -C "$root" install >&2
  fi
}

# -- state ----------------------------------------------------------------------------------

# PostgreSQL refuses to run as root: as root it runs as `postgres` (or nobody), like the
# Debian service, and DIR must be reachable by that user.
pg_user() {
  if [ "$(id -u)" -ne 0 ]; then
    id -un
  elif id postgres >/dev/null 2>&1; then
    echo postgres
  else
    echo nobody
  fi
}

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u "$(pg_user)" -- "$@"
  else
    "$@"
  fi
}

init_state() {
  umask 077
  mkdir -p "$dir"/{log,run,fleetcore}
  if [ ! -e "$dir/topology.env" ]; then
    local tmp="$dir/.topology.env.new"
    {
      echo "PG_PORT=$(free_port)"
      echo "MQTT_PORT=$(free_port)"
      echo "REDIS_PORT=$(free_port)"
      echo "API_1_PORT=$(free_port)"
      echo "API_2_PORT=$(free_port)"
      echo "INGEST_1_PORT=$(free_port)"
      echo "INGEST_2_PORT=$(free_port)"
      echo "WORKER_1_PORT=$(free_port)"
      echo "PG_PASSWORD=$(secret)"
      echo "MQTT_ADMIN_PASSWORD=$(secret)"
      echo "MQTT_PLATFORM_PASSWORD=$(secret)"
      echo "REDIS_PASSWORD=$(secret)"
      echo "SECRET_KEY=$(secret)"
      echo "METRICS_TOKEN=$(secret)"
    } >"$tmp"
    chmod 0600 "$tmp"
    mv "$tmp" "$dir/topology.env"
  fi
  # shellcheck disable=SC1091
  . "$dir/topology.env"
  database_url="postgresql://fleetcore:$PG_PASSWORD@$host:$PG_PORT/fleetcore"
  redis_url="redis://:$REDIS_PASSWORD@$host:$REDIS_PORT/0"
  mqtt_url="mqtt://$host:$MQTT_PORT"
  platform_mqtt_url="mqtt://fleetcore:$MQTT_PLATFORM_PASSWORD@$host:$MQTT_PORT"
  cat >"$dir/fleetcore.env" <<EOF
FLEETCORE_ENVIRONMENT=production
FLEETCORE_HOST=$host
FLEETCORE_DATABASE_URL=$database_url
FLEETCORE_MQTT_URL=$platform_mqtt_url
FLEETCORE_MQTT_DYNSEC=true
$([ "${TOPOLOGY_SHARE_REDIS:-1}" = 0 ] || echo "FLEETCORE_REDIS_URL=$redis_url")
FLEETCORE_SECRET_KEY=$SECRET_KEY
FLEETCORE_METRICS_TOKEN=$METRICS_TOKEN
FLEETCORE_LOG_FORMAT=json
EOF
  chmod 0600 "$dir/fleetcore.env"
}

fleetcore_port() {
  local var="${1^^}"
  var="${var//-/_}_PORT"
  echo "${!var}"
}

# -- PostgreSQL -----------------------------------------------------------------------------

pg_pid() { recorded_pid "$dir/run/postgres.pid"; }

start_postgres() {
  local pg="$dir/postgres"
  if pg_pid >/dev/null; then return 0; fi
  if [ ! -e "$pg/data/PG_VERSION" ]; then
    log "initdb $pg/data"
    rm -rf "$pg"
    mkdir -p "$pg"
    if [ "$(id -u)" -eq 0 ]; then
      chmod 0711 "$dir" # the server's user must reach its own directory, nothing else
      chown "$(pg_user)" "$pg"
      as_pg test -x "$pg" || die "user $(pg_user) cannot reach $pg: put DIR where it can"
    fi
    as_pg sh -c "umask 077; printf '%s\n' \"\$1\" > \"\$2\"" _ "$PG_PASSWORD" "$pg/pwfile"
    as_pg "$pg_bindir/initdb" -D "$pg/data" -U fleetcore --pwfile="$pg/pwfile" \
      -A scram-sha-256 -E UTF8 --locale=C >"$dir/log/postgres-initdb.log" 2>&1 ||
      die "initdb failed: see $dir/log/postgres-initdb.log"
    rm -f "$pg/pwfile"
  fi
  log "starting PostgreSQL on $host:$PG_PORT"
  as_pg "$pg_bindir/pg_ctl" -D "$pg/data" -l "$pg/server.log" -w -t 60 \
    -o "-p $PG_PORT -k $pg -c listen_addresses=$host -c max_connections=300" start >/dev/null ||
    die "PostgreSQL did not start: see $pg/server.log"
  record "$dir/run/postgres.pid" "$(head -1 "$pg/data/postmaster.pid")"
  if ! PGPASSWORD="$PG_PASSWORD" "$pg_bindir/psql" -h "$host" -p "$PG_PORT" -U fleetcore \
    -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'fleetcore'" | grep -q 1; then
    PGPASSWORD="$PG_PASSWORD" "$pg_bindir/createdb" -h "$host" -p "$PG_PORT" -U fleetcore fleetcore
  fi
}

stop_postgres() {
  pg_pid >/dev/null || return 0
  log "stopping PostgreSQL"
  as_pg "$pg_bindir/pg_ctl" -D "$dir/postgres/data" -m fast -w -t 60 stop >/dev/null || true
  rm -f "$dir/run/postgres.pid"
}

# -- Mosquitto (dynamic security + the mount plugin) ----------------------------------------

dynsec_plugin() {
  local path
  for path in /usr/lib/*/mosquitto_dynamic_security.so /usr/lib/mosquitto_dynamic_security.so; do
    [ -e "$path" ] && echo "$path" && return 0
  done
  die "mosquitto_dynamic_security.so not found (Debian's mosquitto package has it)"
}

serving() { # NAME COMMAND...: COMMAND succeeds; dies when NAME's process has exited
  local name="$1"
  shift
  recorded_pid "$dir/run/$name.pid" >/dev/null || die "$name exited: see $dir/log/$name.log"
  "$@"
}

start_mosquitto() {
  local mq="$dir/mosquitto"
  if recorded_pid "$dir/run/mosquitto.pid" >/dev/null; then return 0; fi
  mkdir -p "$mq/data"
  local plugin
  plugin="$("$root/scripts/build-mosquitto-plugin.sh" "$mq" | tail -1)"
  if [ ! -e "$mq/dynamic-security.json" ]; then
    mosquitto_ctrl dynsec init "$mq/dynamic-security.json" admin "$MQTT_ADMIN_PASSWORD" >/dev/null
    chmod 0600 "$mq/dynamic-security.json"
  fi
  # The mount plugin first: it must see every ACL check (dynsec's answer ends the chain).
  cat >"$mq/mosquitto.conf" <<EOF
listener $MQTT_PORT $host
allow_anonymous false
per_listener_settings false
plugin $plugin
plugin_opt_platform_username fleetcore
plugin $(dynsec_plugin)
plugin_opt_config_file $mq/dynamic-security.json
persistence true
persistence_location $mq/data/
autosave_interval 5
# a worker acknowledges after its commit: a wide window; nothing dropped while one is away
max_inflight_messages 1000
max_queued_messages 0
log_dest stderr
$([ "$(id -u)" -eq 0 ] && echo "user root")
EOF
  log "starting Mosquitto on $host:$MQTT_PORT"
  setsid /usr/sbin/mosquitto -c "$mq/mosquitto.conf" </dev/null >>"$dir/log/mosquitto.log" 2>&1 &
  record "$dir/run/mosquitto.pid" $!
  wait_for "Mosquitto on $MQTT_PORT" serving mosquitto port_open "$MQTT_PORT"
  MQTT_ADMIN_PASSWORD="$MQTT_ADMIN_PASSWORD" MQTT_PLATFORM_PASSWORD="$MQTT_PLATFORM_PASSWORD" \
    "$root/deploy/mosquitto/dynsec-platform.sh" "$host" "$MQTT_PORT" admin >&2
}

# -- Redis ----------------------------------------------------------------------------------

start_redis() {
  local rd="$dir/redis"
  if recorded_pid "$dir/run/redis.pid" >/dev/null; then return 0; fi
  mkdir -p "$rd"
  # Redis holds what processes share for the moment (live fan-out, rate-limit windows,
  # cache invalidation): nothing durable, so no persistence.
  cat >"$rd/redis.conf" <<EOF
bind $host
port $REDIS_PORT
requirepass $REDIS_PASSWORD
dir $rd
save ""
appendonly no
daemonize no
EOF
  chmod 0600 "$rd/redis.conf"
  log "starting Redis on $host:$REDIS_PORT"
  setsid redis-server "$rd/redis.conf" </dev/null >>"$dir/log/redis.log" 2>&1 &
  record "$dir/run/redis.pid" $!
  wait_for "Redis on $REDIS_PORT" serving redis redis_ready
}

redis_ready() {
  [ "$(REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli -h "$host" -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]
}

# -- Fleetcore ------------------------------------------------------------------------------

role_of() { echo "${1%-*}"; }

# The processes' settings: DIR/fleetcore.env, then DIR/fleetcore.local.env (yours, optional).
# The caller's own FLEETCORE_* variables are not passed on: the topology is what DIR says.
load_settings() {
  local var
  for var in $(compgen -e); do
    [[ "$var" != FLEETCORE_* ]] || unset "$var"
  done
  set -a
  # shellcheck disable=SC1091
  . "$dir/fleetcore.env"
  # shellcheck disable=SC1091
  [ ! -e "$dir/fleetcore.local.env" ] || . "$dir/fleetcore.local.env"
  set +a
}

start_fleetcore() { # NAME
  local name="$1"
  if recorded_pid "$dir/run/$name.supervisor" >/dev/null; then return 0; fi
  mkdir -p "$dir/fleetcore/$name"
  log "starting $name on $host:$(fleetcore_port "$name")"
  setsid bash "$root/scripts/prod-topology.sh" _supervise "$dir" "$name" </dev/null >>"$dir/log/$name.log" 2>&1 &
  record "$dir/run/$name.supervisor" $!
}

# Runs one Fleetcore process and starts it again a second after it dies, until TERM.
supervise() { # NAME (in DIR, state loaded)
  local name="$1" role child="" stopping=0 status
  role="$(role_of "$name")"
  load_settings
  export FLEETCORE_ROLE="$role" FLEETCORE_PORT="$(fleetcore_port "$name")"
  export FLEETCORE_DATA_DIR="$dir/fleetcore/$name"
  [ "$role" != ingest ] || export FLEETCORE_MQTT_INGEST_ID="$name"
  trap 'stopping=1; [ -z "$child" ] || kill -TERM "$child" 2>/dev/null || true' TERM INT
  while [ "$stopping" -eq 0 ]; do
    "$fleetcore" serve &
    child=$!
    record "$dir/run/$name.pid" "$child"
    status=0
    wait "$child" || status=$?
    while kill -0 "$child" 2>/dev/null; do wait "$child" || status=$?; done # a trap woke us
    [ "$stopping" -eq 0 ] || break
    echo "prod-topology: $name (pid $child) exited with status $status; starting it again" >&2
    sleep 1
  done
  rm -f "$dir/run/$name.pid"
}

migrate() {
  log "fleetcore db upgrade"
  (
    load_settings
    "$fleetcore" db upgrade
  ) >>"$dir/log/migrations.log" 2>&1 || die "migrations failed: see $dir/log/migrations.log"
}

fleetcore_ready() { # NAME
  local pid
  pid="$(recorded_pid "$dir/run/$1.pid")" || return 1
  [ -n "$pid" ] && http_ok "http://$host:$(fleetcore_port "$1")/ready"
}

stop_fleetcore() { # every supervisor: TERM, wait, then KILL whatever is left in its group
  local name sup pids=()
  for name in "${FLEETCORE_NAMES[@]}"; do
    if sup="$(recorded_pid "$dir/run/$name.supervisor")"; then
      log "stopping $name"
      kill -TERM "$sup" 2>/dev/null || true
      pids+=("$sup")
    fi
  done
  local deadline=$((SECONDS + 40))
  for sup in "${pids[@]}"; do
    while running "$sup" && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
  done
  for name in "${FLEETCORE_NAMES[@]}"; do
    kill_group "$dir/run/$name.supervisor"
    rm -f "$dir/run/$name.supervisor" "$dir/run/$name.pid"
  done
}

kill_group() { # FILE: SIGKILL the process group its (session leader) pid led, if any remain
  local pid
  [ -r "$1" ] || return 0
  read -r pid _ <"$1" || return 0
  [ -n "$pid" ] && kill -KILL -- "-$pid" 2>/dev/null || true
}

stop_child() { # NAME: TERM a broker or Redis, wait for it, KILL after 20 s
  local pid
  if pid="$(recorded_pid "$dir/run/$1.pid")"; then
    log "stopping $1"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 20))
    while running "$pid" && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    kill_group "$dir/run/$1.pid"
  fi
  rm -f "$dir/run/$1.pid"
}

# -- readiness and the JSON line ------------------------------------------------------------

wait_for() { # WHAT COMMAND...
  local what="$1"
  shift
  local deadline=$((SECONDS + READY_WITHIN_S))
  until "$@"; do
    [ $SECONDS -lt $deadline ] || die "$what not ready within $READY_WITHIN_S s (logs in $dir/log)"
    sleep 0.2
  done
}

all_ready() {
  local name
  pg_pid >/dev/null && recorded_pid "$dir/run/mosquitto.pid" >/dev/null && port_open "$MQTT_PORT" &&
    recorded_pid "$dir/run/redis.pid" >/dev/null && redis_ready || return 1
  for name in "${FLEETCORE_NAMES[@]}"; do fleetcore_ready "$name" || return 1; done
}

print_json() {
  local pids="" name pid
  for name in postgres mosquitto redis "${FLEETCORE_NAMES[@]}"; do
    pid="$(recorded_pid "$dir/run/$name.pid")" || die "$name is not running"
    pids+="${pids:+, }\"$name\": $pid"
  done
  printf '{"api": ["http://%s:%s", "http://%s:%s"], "mqtt_url": "%s", "database_url": "%s", "redis_url": "%s", "pids": {%s}}\n' \
    "$host" "$API_1_PORT" "$host" "$API_2_PORT" "$mqtt_url" "$database_url" "$redis_url" "$pids"
}

# -- commands -------------------------------------------------------------------------------

up() {
  install_missing
  init_state
  start_postgres
  start_redis
  start_mosquitto
  local name fresh=0
  for name in "${FLEETCORE_NAMES[@]}"; do
    recorded_pid "$dir/run/$name.supervisor" >/dev/null || fresh=1
  done
  [ "$fresh" -eq 0 ] || migrate # once, before any process that needs the schema starts
  for name in "${FLEETCORE_NAMES[@]}"; do start_fleetcore "$name"; done
  for name in "${FLEETCORE_NAMES[@]}"; do wait_for "$name" fleetcore_ready "$name"; done
  print_json
}

down() {
  [ -e "$dir/topology.env" ] || return 0
  init_state
  stop_fleetcore
  stop_child mosquitto
  stop_child redis
  stop_postgres
}

status() {
  [ -e "$dir/topology.env" ] || die "no topology in $dir"
  init_state
  all_ready || die "not everything is ready"
  print_json
}

[ $# -ge 2 ] || usage
command="$1"
dir="$2"
[ "$command" != up ] || mkdir -p "$dir"
[ -d "$dir" ] || die "no directory $dir"
dir="$(cd "$dir" && pwd)"
case "$command" in
  up) up ;;
  down) down ;;
  status) status ;;
  _supervise)
    [ $# -eq 3 ] || usage
    # shellcheck disable=SC1091
    . "$dir/topology.env"
    supervise "$3"
    ;;
  *) usage ;;
esac
