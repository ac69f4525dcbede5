#!/usr/bin/env bash
# Starts Mosquitto; the first time, creates the dynamic-security file (admin client) and
# then the platform client Fleetcore connects as (dynsec-platform.sh, idempotent).
# Needs MQTT_ADMIN_PASSWORD and MQTT_PLATFORM_PASSWORD.
set -euo pipefail

dynsec=/var/lib/mosquitto/dynamic-security.json
if [ ! -e "$dynsec" ]; then
  mosquitto_ctrl dynsec init "$dynsec" admin "$MQTT_ADMIN_PASSWORD" >/dev/null
  chmod 0600 "$dynsec"
fi
rm -f /var/lib/mosquitto/platform-ready
mosquitto -c /etc/mosquitto/mosquitto.conf &
broker=$!
trap 'kill -TERM "$broker" 2>/dev/null || true' TERM INT
until (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; do
  kill -0 "$broker" 2>/dev/null || exit 1
  sleep 0.2
done
dynsec-platform.sh 127.0.0.1 1883 admin
touch /var/lib/mosquitto/platform-ready
status=0
wait "$broker" || status=$?
while kill -0 "$broker" 2>/dev/null; do wait "$broker" || status=$?; done
exit "$status"
