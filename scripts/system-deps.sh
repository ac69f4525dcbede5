#!/usr/bin/env bash
# Installs the Debian packages the test suite uses (PostgreSQL, Mosquitto and its plugin
# headers, a C compiler, Prometheus, Redis, Chromium), when missing.
set -euo pipefail

missing=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || [ -n "${FLEETCORE_TEST_PG_BINDIR:-}" ] || missing+=(postgresql-15)
# Mosquitto's own clients talk to the embedded broker in the tests; the broker is for the
# external-broker tests.
command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
# The external-broker tests build deploy/mosquitto/fleetcore_mount.c (a Mosquitto plugin)
# with scripts/build-mosquitto-plugin.sh.
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
[ -e /usr/include/stdio.h ] || missing+=(libc6-dev)
{ [ -e /usr/include/mosquitto_broker.h ] && [ -e /usr/include/mosquitto_plugin.h ]; } || missing+=(mosquitto-dev)
[ -e /usr/include/mosquitto.h ] || missing+=(libmosquitto-dev)

# Redis is what several Fleetcore processes share (live hub, rate limits, token-cache
# invalidation, presence, command locks); tests/support/redis.py starts a throwaway one.
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || missing+=(redis-server)

# tests/test_observability.py points a real Prometheus (and promtool) at a fleetcore
# process with deploy/prometheus/prometheus.yml and runs every Grafana panel's query.
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || missing+=(prometheus)

# Redis is what several Fleetcore processes share (live hub, rate limits, token-cache
# invalidation, presence, command locks); tests/support/redis.py starts a throwaway one.
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || missing+=(redis-server)

# The dashboard tests and benchmark drive Debian's Chromium through Playwright.
[ -x /usr/bin/chromium ] || missing+=(chromium)

# tests/test_prod_topology.py starts the production topology (scripts/prod-topology.sh),
# which installs what it lacks itself through scripts/apt-install.sh.
exec "$(dirname "${BASH_SOURCE[0]}")/apt-install.sh" "${missing[@]}"
