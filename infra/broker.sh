#!/usr/bin/env bash
# Starts or stops a local tansu broker (Kafka-compatible).
#
#   infra/broker.sh start PORT STORAGE RUN_DIR   STORAGE: memory | sqlite
#   infra/broker.sh stop RUN_DIR
#   infra/broker.sh free-port                    prints an unused local port
#
# sqlite keeps the log in data/broker/tansu.db, relative to the current
# directory (tansu 0.6.0 mangles absolute sqlite paths), so run it from the
# repository root. The broker's pid and log go to RUN_DIR.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

case "${1:-}" in
free-port)
    # Below Linux's range for outgoing connections (32768 and up), whose
    # ports a busy test run leaves in TIME_WAIT by the thousand.
    for _ in $(seq 1 100); do
        candidate=$((20000 + RANDOM % 12000))
        if ! port_open "$candidate"; then echo "$candidate"; exit 0; fi
    done
    echo "[broker] no free port found" >&2
    exit 1
    ;;
start)
    port="$2" storage="$3" run_dir="$4"
    mkdir -p "$run_dir"
    tansu="$(infra/tools.sh | tail -n 1)"
    if port_open "$port"; then
        echo "[broker] port $port is already in use; stop whatever listens there or choose another port" >&2
        exit 1
    fi
    case "$storage" in
    memory) engine="memory://tansu/" ;;
    sqlite) mkdir -p data/broker; engine="sqlite://data/broker/tansu.db" ;;
    *) echo "[broker] unknown storage $storage (memory or sqlite)" >&2; exit 2 ;;
    esac
    # tansu reads some settings from the environment; keep ours explicit.
    env -u STORAGE_ENGINE -u LISTENER_URL -u ADVERTISED_LISTENER_URL \
        "$tansu" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine "$engine" >"$run_dir/broker.log" 2>&1 &
    echo $! >"$run_dir/broker.pid"
    for _ in $(seq 1 100); do
        if port_open "$port"; then
            echo "[broker] tansu listening on 127.0.0.1:$port ($storage storage, pid $(cat "$run_dir/broker.pid"))" >&2
            exit 0
        fi
        if ! kill -0 "$(cat "$run_dir/broker.pid")" 2>/dev/null; then
            echo "[broker] tansu exited; its log:" >&2
            cat "$run_dir/broker.log" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "[broker] tansu did not open port $port within 10 s; see $run_dir/broker.log" >&2
    exit 1
    ;;
stop)
    run_dir="$2"
    [ -f "$run_dir/broker.pid" ] || exit 0
    pid="$(cat "$run_dir/broker.pid")"
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$run_dir/broker.pid"
    ;;
*)
    echo "usage: infra/broker.sh start PORT memory|sqlite RUN_DIR | stop RUN_DIR | free-port" >&2
    exit 2
    ;;
esac
