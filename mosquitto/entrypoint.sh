#!/bin/sh
# Creates /mosquitto/config/passwd from environment variables at first start, then runs
# mosquitto. Variables: MQTT_BRIDGE_PASSWORD (user "bridge"), MQTT_HA_PASSWORD (user
# "homeassistant"), MQTT_CLIENT_PASSWORD (user "client"). An existing passwd file is kept.
# One-line alternative (outside Docker):
#   mosquitto_passwd -c -b mosquitto/passwd bridge "$MQTT_BRIDGE_PASSWORD"
set -eu
conf=/mosquitto/config
passwd=/mosquitto/data/passwd
if [ ! -s "$passwd" ]; then
  : "${MQTT_BRIDGE_PASSWORD:?set MQTT_BRIDGE_PASSWORD (see .env.example)}"
  mosquitto_passwd -c -b "$passwd" bridge "$MQTT_BRIDGE_PASSWORD"
  [ -n "${MQTT_HA_PASSWORD:-}" ] && mosquitto_passwd -b "$passwd" homeassistant "$MQTT_HA_PASSWORD"
  [ -n "${MQTT_CLIENT_PASSWORD:-}" ] && mosquitto_passwd -b "$passwd" client "$MQTT_CLIENT_PASSWORD"
  chmod 0700 "$passwd"
  chown mosquitto:mosquitto "$passwd" 2>/dev/null || true
fi
sed "s#^password_file .*#password_file $passwd#" "$conf/mosquitto.conf" > /tmp/mosquitto.conf
exec mosquitto -c /tmp/mosquitto.conf
