#!/usr/bin/env bash
# Makes sure this machine can build and run Rapport, installing what is
# missing, and prints the path of the tansu broker binary on its last line.
#
#  * system packages: a C/C++ toolchain, make, pkg-config, zlib headers (for
#    the bundled librdkafka) and libclang (RocksDB's bindings are generated
#    with bindgen), through apt-get when they are missing;
#  * tansu 0.6.0, the local Kafka-compatible broker, built once with cargo
#    into a cache outside the checkout (RAPPORT_TOOLS, default
#    ~/.cache/rapport/tools) so that fresh clones and CI reuse it. It takes
#    about 9 minutes to build on 2 cores and is never rebuilt when present.
set -euo pipefail

TOOLS="${RAPPORT_TOOLS:-$HOME/.cache/rapport/tools}"
TANSU_VERSION=0.6.0
TANSU="$TOOLS/bin/tansu"

log() { echo "[tools] $*" >&2; }

have_libclang() {
    ldconfig -p 2>/dev/null | grep -q 'libclang\(-[0-9.]*\)\?\.so' && return 0
    compgen -G '/usr/lib/llvm-*/lib/libclang*.so*' >/dev/null
}

missing=()
command -v cc >/dev/null || missing+=(build-essential)
command -v c++ >/dev/null || missing+=(g++)
command -v make >/dev/null || missing+=(make)
command -v pkg-config >/dev/null || missing+=(pkg-config)
command -v perl >/dev/null || missing+=(perl)
[ -e /usr/include/zlib.h ] || missing+=(zlib1g-dev)
have_libclang || missing+=(libclang-dev)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing system packages: ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >&2
fi

if ! command -v cargo >/dev/null; then
    log "cargo is required: install Rust with rustup (https://rustup.rs) and run again"
    exit 1
fi

if [ -x "$TANSU" ] && "$TANSU" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    echo "$TANSU"
    exit 0
fi

log "building tansu $TANSU_VERSION into $TOOLS (about 9 minutes on 2 cores; only once)"
mkdir -p "$TOOLS"
# A private target directory keeps the build out of the checkout; a lock
# stops two concurrent runs from building it twice.
exec 9>"$TOOLS/.install.lock"
flock 9
if ! { [ -x "$TANSU" ] && "$TANSU" --version 2>/dev/null | grep -q "$TANSU_VERSION"; }; then
    CARGO_TARGET_DIR="$TOOLS/build" cargo install tansu --version "$TANSU_VERSION" --locked \
        --features dynostore,libsql --root "$TOOLS" >&2
    rm -rf "$TOOLS/build"
fi
echo "$TANSU"
