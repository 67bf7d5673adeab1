#!/usr/bin/env bash
# `make run`: a local Rapport in the foreground until Ctrl-C.
#
# Starts tansu (SQLite storage under ./data/broker), creates the topics and
# (on the first run) a write, a read and an admin key (./data/keys.env),
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
export RAPPORT_IDENTITY_VAULT_DIR="${RAPPORT_IDENTITY_VAULT_DIR:-data/vault}"
export RAPPORT_PROJECTOR_DATA_DIR="${RAPPORT_PROJECTOR_DATA_DIR:-data/projector}"
RUN_DIR=data/run
LOGS=data/logs
KEYS_FILE=data/keys.env
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

# A ./data from before personal fields were sealed holds them in clear on
# its log, where no erasure can reach them: refuse it rather than mix.
if [ -d data/broker ] && [ ! -d "$RAPPORT_IDENTITY_VAULT_DIR" ]; then
    echo "[run] ./data was made before personal fields were sealed: its log holds them in clear." >&2
    echo "[run] Delete it to start afresh (rm -rf data), then run make run again." >&2
    exit 1
fi

infra/broker.sh start "$BROKER_PORT" sqlite "$RUN_DIR"
"$BIN/rapportctl" topics create --replication-factor 1

# One key of each kind, made on the first run and kept for the next ones in
# a file only its owner may read (the service key is what ingest and the
# projector reach the vault with). A key revoked since stays revoked:
# delete the file to get new ones.
if [ ! -f "$KEYS_FILE" ]; then
    write_key="$("$BIN/rapportctl" keys create --kind write --name 'make-run write')"
    read_key="$("$BIN/rapportctl" keys create --kind read --name 'make-run read')"
    admin_key="$("$BIN/rapportctl" keys create --kind admin --name 'make-run admin')"
    service_key="$("$BIN/rapportctl" keys create --kind service --name 'make-run services')"
    # Written aside and moved, so an interrupted run leaves no half file.
    rm -f "$KEYS_FILE.new"
    (
        umask 077
        printf 'RAPPORT_WRITE_KEY=%s\nRAPPORT_READ_KEY=%s\nRAPPORT_ADMIN_KEY=%s\nRAPPORT_SERVICE_KEY=%s\n' \
            "$write_key" "$read_key" "$admin_key" "$service_key" >"$KEYS_FILE.new"
    )
    mv "$KEYS_FILE.new" "$KEYS_FILE"
    echo "[run] made a write, a read, an admin and a service key (kept in ./$KEYS_FILE)"
fi
# shellcheck source=/dev/null
. "$KEYS_FILE"
for name in RAPPORT_WRITE_KEY RAPPORT_READ_KEY RAPPORT_ADMIN_KEY RAPPORT_SERVICE_KEY; do
    if [ -z "${!name:-}" ]; then
        echo "[run] ./$KEYS_FILE sets no $name; delete it to make new keys" >&2
        exit 1
    fi
done

start() {
    local name="$1" listen="$2"
    shift 2
    "$BIN/$name" "$@" >"$LOGS/$name.log" 2>&1 &
    pids+=($!)
    wait_healthy "$name" "$listen" "$!"
    echo "[run] $name listening on http://$listen (log: $LOGS/$name.log)"
}
start rapport-identity "$IDENTITY_LISTEN"
RAPPORT_SERVICE_KEY="$RAPPORT_SERVICE_KEY" start rapport-projector "$QUERY_LISTEN"
RAPPORT_SERVICE_KEY="$RAPPORT_SERVICE_KEY" start rapport-ingest "$INGEST_LISTEN"

if [ "${RAPPORT_DEMO:-1}" != "0" ]; then
    # The key goes in the demo's environment (what --key reads), not on its
    # command line, which every user of the machine sees in ps.
    RAPPORT_WRITE_KEY="$RAPPORT_WRITE_KEY" "$BIN/rapport-demo" --ingest-url "http://$INGEST_LISTEN" >"$LOGS/demo.log" 2>&1 &
    pids+=($!)
    echo "[run] demo traffic started (log: $LOGS/demo.log)"
fi

cat <<EOT

Rapport is running. Its API keys, kept in ./$KEYS_FILE:
  write (post events)                RAPPORT_WRITE_KEY=$RAPPORT_WRITE_KEY
  read (customers, scores, metrics)  RAPPORT_READ_KEY=$RAPPORT_READ_KEY
  admin (everything)                 RAPPORT_ADMIN_KEY=$RAPPORT_ADMIN_KEY

The dashboard: http://$QUERY_LISTEN/ui/ (log in with the read key, or the admin key for Ops)
Segment SDKs: host http://$INGEST_LISTEN with the write key; in a page
  <script src="http://$INGEST_LISTEN/v1/snippet.js?writeKey=$RAPPORT_WRITE_KEY"></script>  (docs/segment.md)

Try, after \`source $KEYS_FILE\`:
  curl -s -H "Authorization: Bearer \$RAPPORT_READ_KEY" http://$QUERY_LISTEN/v1/customers/c-00042 | python3 -m json.tool
  curl -s -H "Authorization: Bearer \$RAPPORT_READ_KEY" 'http://$QUERY_LISTEN/v1/customers?email=user42@example.com'
  curl -s -H "Authorization: Bearer \$RAPPORT_READ_KEY" 'http://$QUERY_LISTEN/v1/customers/c-00042/timeline?limit=10'
  curl -s -H "Authorization: Bearer \$RAPPORT_READ_KEY" http://$QUERY_LISTEN/v1/identity/conflicts
  curl -s -H "Authorization: Bearer \$RAPPORT_READ_KEY" http://$QUERY_LISTEN/v1/customers/c-00042/scores | python3 -m json.tool
  curl -s -H "Authorization: Bearer \$RAPPORT_READ_KEY" http://$QUERY_LISTEN/v1/segments | python3 -m json.tool
  curl -s -H "Authorization: Bearer \$RAPPORT_READ_KEY" http://$QUERY_LISTEN/v1/models/bgnbd
  curl -s -H "Authorization: Bearer \$RAPPORT_READ_KEY" 'http://$QUERY_LISTEN/v1/segments/rfm/champions/customers?format=csv' | head
  curl -s -H "Authorization: Bearer \$RAPPORT_READ_KEY" http://$QUERY_LISTEN/metrics | grep rapport_
  curl -s -XPOST http://$INGEST_LISTEN/v1/events -H "Authorization: Bearer \$RAPPORT_WRITE_KEY" -H 'content-type: application/json' -d @infra/example-batch.json
  curl -s -XPOST http://$INGEST_LISTEN/v1/track -u "\$RAPPORT_WRITE_KEY:" -d '{"userId": "c-00042", "event": "Wishlist Added", "properties": {"sku": "tea-7"}}'
  $BIN/rapportctl --key "\$RAPPORT_ADMIN_KEY" status

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
