#!/usr/bin/env bash
# Gives a Mosquitto with dynamic security the platform client Fleetcore connects as
# (FLEETCORE_MQTT_URL's user): a role that may read device traffic (shared subscriptions
# included), publish commands and configuration, and administer dynamic security (Fleetcore
# creates each device's client and role itself, FLEETCORE_MQTT_DYNSEC=true). Devices may
# receive only what their own role names (default publishClientReceive: deny).
#
#   deploy/mosquitto/dynsec-platform.sh HOST PORT ADMIN_USER
#
# Reads the admin's password from MQTT_ADMIN_PASSWORD and the platform client's from
# MQTT_PLATFORM_PASSWORD (and its name from MQTT_PLATFORM_USERNAME, default fleetcore).
# Idempotent: a broker that already has the platform client is left as it is. Used by
# scripts/prod-topology.sh and by the mosquitto-init service of deploy/compose.yaml.
set -euo pipefail

host="$1" port="$2" admin="$3"
platform="${MQTT_PLATFORM_USERNAME:-fleetcore}"
role="fleetcore-platform"
: "${MQTT_ADMIN_PASSWORD:?the dynsec admin password}"
: "${MQTT_PLATFORM_PASSWORD:?the platform client password}"

# mosquitto_ctrl 2.0.11 exits 0 whatever happens and prints its errors: read its output.
ctrl() {
  local out
  out="$(mosquitto_ctrl -h "$host" -p "$port" -u "$admin" -P "$MQTT_ADMIN_PASSWORD" \
    dynsec "$@" </dev/null 2>&1)" || true
  if [[ "${out,,}" == *error* ]]; then
    echo "mosquitto_ctrl dynsec $1 $2: $out" >&2
    return 1
  fi
  printf '%s\n' "$out"
}

if ctrl getClient "$platform" >/dev/null 2>&1; then
  exit 0
fi

ctrl setDefaultACLAccess publishClientReceive deny >/dev/null
ctrl createRole "$role" >/dev/null
for topic in '$share/fleetcore/#' 'devices/#' 'tb/#' 'fleetcore/#'; do
  ctrl addRoleACL "$role" subscribePattern "$topic" allow >/dev/null
  ctrl addRoleACL "$role" publishClientReceive "$topic" allow >/dev/null
done
for topic in 'devices/+/commands' 'devices/+/commands/#' 'devices/+/config' 'tb/#'; do
  ctrl addRoleACL "$role" publishClientSend "$topic" allow >/dev/null
done
for kind in publishClientSend publishClientReceive subscribePattern; do
  ctrl addRoleACL "$role" "$kind" '$CONTROL/dynamic-security/#' allow >/dev/null
done
ctrl createClient "$platform" -p "$MQTT_PLATFORM_PASSWORD" >/dev/null
ctrl addClientRole "$platform" "$role" >/dev/null
echo "platform client $platform created"
