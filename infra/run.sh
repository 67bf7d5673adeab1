#!/usr/bin/env bash
# `make run`: a local Rapport in the foreground until Ctrl-C.
#
# Starts tansu (SQLite storage under ./data/broker), creates the topics,
# starts identity, projector + query API and ingest with their data under
# ./data, feeds demo traffic unless RAPPORT_DEMO=0, and prints where to look.
# Ctrl-C stops everything cleanly; the data stays for the next run.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN="${CARGO_TARGET_DIR:-target}/debug"
BROKER_PORT="${RAPPORT_BROKER_PORT:-9092}"
export RAPPORT_BROKERS="${RAPPORT_BROKERS:-127.0.0.1:$BROKER_PORT}"
INGEST_LISTEN="${RAPPORT_INGEST_LISTEN:-127.0.0.1:8080}"
QUERY_LISTEN="${RAPPORT_PROJECTOR_LISTEN:-127.0.0.1:8081}"
IDENTITY_LISTEN="${RAPPORT_IDENTITY_LISTEN:-127.0.0.1:8082}"
export RAPPORT_INGEST_LISTEN="$INGEST_LISTEN" RAPPORT_PROJECTOR_LISTEN="$QUERY_LISTEN" RAPPORT_IDENTITY_LISTEN="$IDENTITY_LISTEN"
export RAPPORT_IDENTITY_DATA_DIR="${RAPPORT_IDENTITY_DATA_DIR:-data/identity}"
export RAPPORT_PROJECTOR_DATA_DIR="${RAPPORT_PROJECTOR_DATA_DIR:-data/projector}"
RUN_DIR=data/run
LOGS=data/logs
mkdir -p "$RUN_DIR" "$LOGS"

pids=()
stop_all() {
    trap - INT TERM EXIT
    echo
    echo "[run] stopping…"
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    infra/broker.sh stop "$RUN_DIR"
    echo "[run] stopped; data kept in ./data (delete it to start afresh)"
}
trap 'stop_all; exit 0' INT TERM
trap stop_all EXIT

wait_healthy() {
    local name="$1" url="$2" pid="$3"
    for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/${url%:*}/${url##*:}") 2>/dev/null; then return 0; fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "[run] $name exited; last lines of $LOGS/$name.log:" >&2
            tail -n 20 "$LOGS/$name.log" >&2
            exit 1
        fi
        sleep 0.2
    done
    echo "[run] $name did not start listening on $url" >&2
    exit 1
}

infra/broker.sh start "$BROKER_PORT" sqlite "$RUN_DIR"
"$BIN/rapportctl" topics create --replication-factor 1

start() {
    local name="$1" listen="$2"
    shift 2
    "$BIN/$name" "$@" >"$LOGS/$name.log" 2>&1 &
    pids+=($!)
    wait_healthy "$name" "$listen" "$!"
    echo "[run] $name listening on http://$listen (log: $LOGS/$name.log)"
}
start rapport-identity "$IDENTITY_LISTEN"
start rapport-projector "$QUERY_LISTEN"
start rapport-ingest "$INGEST_LISTEN"

if [ "${RAPPORT_DEMO:-1}" != "0" ]; then
    "$BIN/rapport-demo" --ingest-url "http://$INGEST_LISTEN" >"$LOGS/demo.log" 2>&1 &
    pids+=($!)
    echo "[run] demo traffic started (log: $LOGS/demo.log)"
fi

cat <<EOT

Rapport is running. Try:
  curl -s http://$QUERY_LISTEN/v1/customers/c-00042 | python3 -m json.tool
  curl -s 'http://$QUERY_LISTEN/v1/customers?email=user42@example.com'
  curl -s 'http://$QUERY_LISTEN/v1/customers/c-00042/timeline?limit=10'
  curl -s http://$QUERY_LISTEN/v1/identity/conflicts
  curl -s http://$QUERY_LISTEN/v1/customers/c-00042/scores | python3 -m json.tool
  curl -s http://$QUERY_LISTEN/v1/segments | python3 -m json.tool
  curl -s http://$QUERY_LISTEN/v1/models/bgnbd
  curl -s 'http://$QUERY_LISTEN/v1/segments/rfm/champions/customers?format=csv' | head
  curl -s http://$QUERY_LISTEN/metrics | grep rapport_
  curl -s -XPOST http://$INGEST_LISTEN/v1/events -H 'content-type: application/json' -d @infra/example-batch.json

Broker: $RAPPORT_BROKERS   Data: ./data   Logs: ./$LOGS
Press Ctrl-C to stop everything.
EOT

# Stay in the foreground; if a service dies, say so and stop the rest.
while true; do
    alive=()
    for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            alive+=("$pid")
            continue
        fi
        wait "$pid" && status=0 || status=$?
        if [ "$status" -ne 0 ]; then
            echo "[run] a process (pid $pid) exited with status $status; see $LOGS/" >&2
            exit 1
        fi
    done
    pids=("${alive[@]}")
    sleep 1
done
