#!/usr/bin/env bash
# `make test`: starts a broker with in-memory storage on a free port, runs
# every test of the workspace (unit, router and end-to-end) against it, and
# stops it whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."

run_dir="$(mktemp -d "${TMPDIR:-/tmp}/rapport-test.XXXXXX")"
port="$(infra/broker.sh free-port)"

cleanup() {
    status=$?
    if [ "$status" -ne 0 ] && [ -s "$run_dir/broker.log" ]; then
        echo "[test] failed; the broker's last log lines:" >&2
        tail -n 30 "$run_dir/broker.log" >&2
    fi
    infra/broker.sh stop "$run_dir"
    rm -rf "$run_dir"
}
trap cleanup EXIT

# Build first, so that a slow build does not count against the broker.
cargo build --workspace --bins --tests
infra/broker.sh start "$port" memory "$run_dir"
export RAPPORT_TEST_BROKERS="127.0.0.1:$port"
# The browser tests' screenshots are kept beside the build, for a look
# after the run (CI keeps them with its build cache).
RAPPORT_SCREENSHOTS="${RAPPORT_SCREENSHOTS:-${CARGO_TARGET_DIR:-$PWD/target}/screenshots}"
export RAPPORT_SCREENSHOTS
# Outage tests start and stop brokers of their own.
RAPPORT_TANSU="$(infra/tools.sh | tail -n 1)"
export RAPPORT_TANSU
# The official Segment clients the tracking-API test drives.
RAPPORT_CLIENTS="$(infra/clients.sh | tail -n 1)"
export RAPPORT_CLIENTS
cargo test --workspace -- --test-threads "${RAPPORT_TEST_THREADS:-4}"
echo "[test] screenshots of the dashboard: $RAPPORT_SCREENSHOTS"
