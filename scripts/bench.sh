#!/usr/bin/env sh
# Runs the end-to-end benchmark (release binary, real mosquitto on 127.0.0.1:1883 and
# PostgreSQL on 127.0.0.1:5432) and rewrites docs/benchmarks.json and docs/benchmarks.md.
# Options via environment: BENCH_SIZES=1,10,100,1000  BENCH_WINDOW=21 (seconds per run)
# BENCH_NO_WRITE=1 (print only)  TEST_DATABASE_URL=postgres://…  TEST_MQTT_PORT=1883
# BENCH_HTTP=1 also runs scripts/bench_http.mjs (status page, REST API: RSS with and without a
# browser on the page, GET latencies, page transfer size) with the release binary; it needs
# playwright-core (PLAYWRIGHT_CORE, as .ci/run installs it) and Chromium.
set -eu
cd "$(dirname "$0")/.."
cargo bench --bench bridge_bench -- "$@"
if [ "${BENCH_HTTP:-0}" = 1 ]; then
  cargo build --release --bin marstek-bridge
  node scripts/bench_http.mjs "${CARGO_TARGET_DIR:-target}/release/marstek-bridge" "${BENCH_WINDOW:-30}"
fi
