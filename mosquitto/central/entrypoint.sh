#!/bin/sh
# Creates the central broker's password file from the environment at first start, then runs
# mosquitto. Variables (from .env, see .env.example):
#   CENTRAL_MQTT_SITES              space-separated <site_id>:<password>, one per site broker
#   CENTRAL_MQTT_OPERATOR_PASSWORD  password of the user "operator"
# An existing password file is kept; to add a site later:
#   docker compose exec central-mosquitto mosquitto_passwd -b /mosquitto/data/passwd <site_id> <password>
#   docker compose kill -s HUP central-mosquitto
set -eu
passwd=/mosquitto/data/passwd
for f in ca.crt server.crt server.key; do
  [ -s "/mosquitto/certs/$f" ] || { echo "missing /mosquitto/certs/$f (see mosquitto/central/certs/README.md)" >&2; exit 1; }
done
if [ ! -s "$passwd" ]; then
  : "${CENTRAL_MQTT_OPERATOR_PASSWORD:?set CENTRAL_MQTT_OPERATOR_PASSWORD (see .env.example)}"
  : "${CENTRAL_MQTT_SITES:?set CENTRAL_MQTT_SITES (see .env.example)}"
  mosquitto_passwd -c -b "$passwd" operator "$CENTRAL_MQTT_OPERATOR_PASSWORD"
  for entry in $CENTRAL_MQTT_SITES; do
    site=${entry%%:*}
    pass=${entry#*:}
    if [ -z "$site" ] || [ "$site" = "$entry" ] || [ -z "$pass" ]; then
      echo "CENTRAL_MQTT_SITES: '$site' is not <site_id>:<password>" >&2
      exit 1
    fi
    mosquitto_passwd -b "$passwd" "$site" "$pass"
  done
  chmod 0700 "$passwd"
  chown mosquitto:mosquitto "$passwd" 2>/dev/null || true
fi
exec mosquitto -c /mosquitto/config/mosquitto.conf
