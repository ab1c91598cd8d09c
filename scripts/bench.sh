#!/usr/bin/env sh
# Runs the end-to-end benchmark (release binary, real mosquitto on 127.0.0.1:1883 and
# PostgreSQL on 127.0.0.1:5432) and rewrites docs/benchmarks.json and docs/benchmarks.md.
# Options via environment: BENCH_SIZES=1,10,100,1000  BENCH_WINDOW=21 (seconds per run)
# BENCH_NO_WRITE=1 (print only)  TEST_DATABASE_URL=postgres://…  TEST_MQTT_PORT=1883
set -eu
cd "$(dirname "$0")/.."
exec cargo bench --bench bridge_bench -- "$@"
