#!/usr/bin/env bash
# Installs the official Segment clients the tracking-API test drives, at the
# versions and hashes pinned in tests/clients/: segment-analytics-python
# (requirements.txt, every wheel hash-checked) into a virtualenv, and
# @segment/analytics-node (package-lock.json, `npm ci`) into node_modules.
# Prints the directory holding both on its last line.
#
#   infra/clients.sh bench   installs the lifetimes package the analytics
#                            bench compares its BG/NBD fit with
#                            (bench-requirements.txt) and prints its python
#
# The install lives in a cache outside the checkout (RAPPORT_TOOLS, default
# ~/.cache/rapport/tools), under a name derived from the pinned files, so
# fresh clones and CI reuse it and a change of pins installs afresh.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS="${RAPPORT_TOOLS:-$HOME/.cache/rapport/tools}"
log() { echo "[clients] $*" >&2; }

if [ "${1:-}" = "bench" ]; then
    pins="$(sha256sum tests/clients/bench-requirements.txt | cut -c1-16)"
    BENCH="$TOOLS/lifetimes-$pins"
    if [ ! -f "$BENCH/.complete" ]; then
        rm -rf "$BENCH"
        log "installing lifetimes into $BENCH"
        python3 -m venv "$BENCH"
        "$BENCH/bin/pip" install --quiet --disable-pip-version-check \
            --require-hashes --only-binary=:all: --no-deps -r tests/clients/bench-requirements.txt
        touch "$BENCH/.complete"
    fi
    echo "$BENCH/bin/python"
    exit 0
fi

pins="$(cat tests/clients/requirements.txt tests/clients/package-lock.json | sha256sum | cut -c1-16)"
DEST="$TOOLS/clients-$pins"

if [ ! -f "$DEST/.complete" ]; then
    for command in python3 node npm; do
        if ! command -v "$command" >/dev/null; then
            log "no \`$command\` on PATH: run infra/tools.sh, which installs it"
            exit 1
        fi
    done
    rm -rf "$DEST"
    mkdir -p "$DEST"
    log "installing segment-analytics-python into $DEST/python"
    python3 -m venv "$DEST/python"
    "$DEST/python/bin/pip" install --quiet --disable-pip-version-check \
        --require-hashes --only-binary=:all: --no-deps -r tests/clients/requirements.txt
    log "installing @segment/analytics-node into $DEST/node"
    mkdir -p "$DEST/node"
    cp tests/clients/package.json tests/clients/package-lock.json "$DEST/node/"
    (cd "$DEST/node" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
    touch "$DEST/.complete"
fi
log "python: $("$DEST/python/bin/python" -c 'import segment.analytics as a; print(a.VERSION)'), node: $(node --version)"
echo "$DEST"
