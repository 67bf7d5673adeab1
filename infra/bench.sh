#!/usr/bin/env bash
# `make bench`: builds the binaries (the same optimised build as the tests), starts a private broker with
# in-memory storage and runs the benchmark driver against it. Prints
# throughput and latency percentiles; never fails on a slow machine.
#
#   RAPPORT_BENCH_EVENTS (100000; docs/performance.md's figures use 1000000 and
#   5000000, about 4 and 15 minutes on a 2-core machine),
#   RAPPORT_BENCH_CUSTOMERS (events / 20), RAPPORT_BENCH_CLIENTS (4),
#   RAPPORT_BENCH_QUERIES per client (2000),
#   RAPPORT_BENCH_PROFILE (dev: the optimised build the tests use; or release),
#   RAPPORT_CLUSTER_BENCH_CUSTOMERS (10000) and RAPPORT_CLUSTER_BENCH_READS
#   (4000) for the layouts of several projector processes
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${RAPPORT_BENCH_PROFILE:-dev}"
if [ "$profile" = "release" ]; then
    cargo build --release --workspace --bins
    bin_dir="${CARGO_TARGET_DIR:-target}/release"
else
    cargo build --workspace --bins
    bin_dir="${CARGO_TARGET_DIR:-target}/debug"
fi

run_dir="$(mktemp -d "${TMPDIR:-/tmp}/rapport-bench.XXXXXX")"
port="$(infra/broker.sh free-port)"
trap 'infra/broker.sh stop "$run_dir"; rm -rf "$run_dir"' EXIT
infra/broker.sh start "$port" memory "$run_dir"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), profile $profile"
RAPPORT_TEST_BROKERS="127.0.0.1:$port" RAPPORT_BIN_DIR="$bin_dir" \
    RAPPORT_BROKER_PID="$(cat "$run_dir/broker.pid")" "$bin_dir/rapport-bench"
# The same log over 1, 2 and 3 projector processes.
RAPPORT_TEST_BROKERS="127.0.0.1:$port" RAPPORT_BIN_DIR="$bin_dir" \
    "$bin_dir/rapport-cluster-bench"
