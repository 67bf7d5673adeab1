#!/usr/bin/env bash
# Makes sure this machine can build and run Rapport, installing what is
# missing, and prints the path of the tansu broker binary on its last line.
#
#   infra/tools.sh             check, install what is missing, build tansu once
#   infra/tools.sh check [R]   say what is present or missing, install nothing;
#                              exits 1 if something is missing. R names one
#                              requirement (cc, c++, ar, make, zlib, openssl,
#                              openssl-command, python3, libclang,
#                              flock, chromium, node, python3-venv,
#                              cargo); without it, all
#                              of them.
#
# Each check tests for the very command or file the build uses, found the way
# the build finds it (see each check below). RAPPORT_TOOLS_ROOT (default: the
# real root) is the directory the file checks look under, so that tests can
# run them against a prepared tree.
#
# tansu 0.6.0, the local Kafka-compatible broker, is built once with cargo
# into a cache outside the checkout (RAPPORT_TOOLS, default
# ~/.cache/rapport/tools) that fresh clones and CI reuse. The build compiles
# about 410 crates in 12-17 minutes on a fresh 2-core machine; its progress
# is printed every 30 seconds.
set -euo pipefail

TOOLS="${RAPPORT_TOOLS:-$HOME/.cache/rapport/tools}"
TANSU_VERSION=0.6.0
# What `cargo install tansu` compiles, for the progress reports.
TANSU_CRATES=410
TANSU="$TOOLS/bin/tansu"
ROOT="${RAPPORT_TOOLS_ROOT:-}"
ROOT="${ROOT%/}"

log() { echo "[tools] $*" >&2; }

# --- the checks ---------------------------------------------------------------
# Each `have_X` returns 0 when X is usable and sets `found` to what it found,
# or `reason` to what it looked for.
found=""
reason=""

have_command() {
    local name="$1"
    if found="$(command -v "$name")"; then return 0; fi
    reason="no \`$name\` on PATH"
    return 1
}

# The cc crate (RocksDB, libz-sys) compiles C with $CC, else `cc`, and C++
# with $CXX, else `c++`; it archives with $AR, else `ar`. librdkafka's
# configure script is run with the same environment and `make`.
have_cc() { have_command "${CC:-cc}"; }
have_cxx() { have_command "${CXX:-c++}"; }
have_ar() { have_command "${AR:-ar}"; }
have_make() { have_command make; }
have_flock() { have_command flock; }
have_cargo() { have_command cargo; }

# A library as its -sys crate finds it: through `pkg-config` and the
# library's .pc file. libz-sys links the system zlib when pkg-config finds
# zlib.pc (and compiles a private copy otherwise, which takes longer);
# openssl-sys needs openssl.pc (libssl-dev) and stops without it.
have_pc() {
    local library="$1"
    local pkg_config="${PKG_CONFIG:-pkg-config}"
    if ! command -v "$pkg_config" >/dev/null; then
        reason="no \`$pkg_config\` on PATH to find $library with"
        return 1
    fi
    if "$pkg_config" --exists "$library"; then
        found="$library $("$pkg_config" --modversion "$library") (pkg-config)"
        return 0
    fi
    reason="pkg-config knows no $library"
    return 1
}

# True when the file starts with the ELF header of a 64-bit object, the one
# check clang-sys makes before it accepts a libclang.
is_elf64() {
    [ "$(head -c 5 "$1" 2>/dev/null | od -An -tx1 | tr -d ' \n')" = "7f454c4602" ]
}

# Lists the shared libraries clang-sys (through bindgen's `runtime` feature,
# which RocksDB's bindings use) would accept as libclang: LIBCLANG_PATH alone
# when it is set; otherwise the lib directories of `llvm-config --prefix`,
# LD_LIBRARY_PATH, and /usr/lib*, /usr/local/lib* up to two levels deep, for
# files named libclang.so, libclang-*.so, libclang.so.* or libclang-*.so.*,
# but never libclang-cpp (a different library that only shares the prefix).
libclang_candidates() {
    local -a directories=()
    if [ -n "${LIBCLANG_PATH:-}" ]; then
        if [ -f "$ROOT$LIBCLANG_PATH" ]; then
            echo "$ROOT$LIBCLANG_PATH"
            return
        fi
        directories=("$ROOT$LIBCLANG_PATH")
    else
        local prefix
        if prefix="$("${LLVM_CONFIG_PATH:-llvm-config}" --prefix 2>/dev/null)"; then
            directories+=("$ROOT$prefix/bin" "$ROOT$prefix/lib" "$ROOT$prefix/lib64")
        fi
        local directory
        local IFS=:
        for directory in ${LD_LIBRARY_PATH:-}; do
            [ -n "$directory" ] && directories+=("$ROOT$directory")
        done
        unset IFS
        shopt -s nullglob
        directories+=(
            "$ROOT"/usr/local/llvm*/lib* "$ROOT"/usr/local/lib*/*/* "$ROOT"/usr/local/lib*/*
            "$ROOT"/usr/local/lib* "$ROOT"/usr/lib*/*/* "$ROOT"/usr/lib*/* "$ROOT"/usr/lib*
        )
        shopt -u nullglob
    fi
    local directory file
    shopt -s nullglob
    for directory in "${directories[@]}"; do
        [ -d "$directory" ] || continue
        for file in "$directory"/libclang.so "$directory"/libclang-*.so \
            "$directory"/libclang.so.* "$directory"/libclang-*.so.*; do
            case "${file##*/}" in *-cpp.*) continue ;; esac
            is_elf64 "$file" && echo "$file"
        done
    done
    shopt -u nullglob
}

# bindgen also needs clang's own headers (stddef.h and friends) to parse
# RocksDB's C header; Debian ships them apart from the library, in
# libclang-common-N-dev, under <llvm>/lib/clang/<version>/include.
clang_builtin_headers() {
    shopt -s nullglob
    local header
    for header in "$ROOT"/usr/lib/llvm-*/lib/clang/*/include/stddef.h \
        "$ROOT"/usr/lib/clang/*/include/stddef.h "$ROOT"/usr/local/lib/clang/*/include/stddef.h \
        "$ROOT"/usr/local/llvm*/lib/clang/*/include/stddef.h; do
        echo "$header"
    done
    shopt -u nullglob
}

have_libclang() {
    local -a libraries headers
    mapfile -t libraries < <(libclang_candidates)
    if [ ${#libraries[@]} -eq 0 ]; then
        reason="no libclang.so or libclang-N.so where bindgen looks"
        return 1
    fi
    mapfile -t headers < <(clang_builtin_headers)
    if [ ${#headers[@]} -eq 0 ]; then
        reason="${libraries[0]} but no clang stddef.h for bindgen to parse with"
        return 1
    fi
    found="${libraries[0]}, ${headers[0]%/stddef.h}"
    return 0
}

# `python3 -m venv` makes a virtualenv with pip only where ensurepip is
# there (Debian splits it into python3-venv).
have_python_venv() {
    if python3 -c "import ensurepip, venv" 2>/dev/null; then
        found="python3 with venv and ensurepip"
        return 0
    fi
    reason="python3 without the venv and ensurepip modules"
    return 1
}

# requirement | Debian package | why the build needs it
REQUIREMENTS=(
    "cc|gcc|the C compiler the cc crate and librdkafka's configure call"
    "c++|g++|the C++ compiler RocksDB is built with"
    "ar|binutils|the archiver the cc crate packs static libraries with"
    "make|make|librdkafka is built with make"
    "zlib|pkg-config zlib1g-dev|librdkafka compresses with zlib, found through pkg-config"
    "openssl|pkg-config libssl-dev|librdkafka speaks TLS and SASL (SCRAM, PLAIN) through OpenSSL, found through pkg-config"
    "openssl-command|openssl|the Kafka-over-TLS test makes its certificate authority with the openssl command"
    "python3|python3|the Kafka-over-TLS test runs its TLS-terminating proxy (tests/tls_proxy.py) with python3"
    "libclang|libclang-dev|RocksDB's Rust bindings are generated by bindgen, which loads libclang"
    "flock|util-linux|stops two runs from building tansu at once"
    # fonts-liberation is only a Recommends of chromium-common, which
    # --no-install-recommends skips: without it screenshots fall back to
    # DejaVu, and Arial or Times lay out differently from machine to machine.
    "chromium|chromium fonts-liberation|the dashboard's browser tests drive Debian's headless Chromium"
    "node|nodejs npm|the tracking-API test drives @segment/analytics-node, installed with npm by infra/clients.sh"
    "python3-venv|python3-venv|infra/clients.sh installs segment-analytics-python into a virtualenv"
)

check_one() {
    local name="$1"
    found="" reason=""
    case "$name" in
    cc) have_cc ;;
    c++) have_cxx ;;
    ar) have_ar ;;
    make) have_make ;;
    zlib) have_pc zlib ;;
    openssl) have_pc openssl ;;
    openssl-command) have_command openssl ;;
    python3) have_command python3 ;;
    libclang) have_libclang ;;
    flock) have_flock ;;
    # What tests/src/browser.rs runs.
    chromium) have_command "${RAPPORT_CHROMIUM:-chromium}" ;;
    # What infra/clients.sh runs: node, and npm beside it.
    node) have_command node && have_command npm ;;
    python3-venv) have_python_venv ;;
    cargo) have_cargo ;;
    *) log "unknown requirement $name"; exit 2 ;;
    esac
}

if [ "${1:-}" = "check" ]; then
    names=("${2:-}")
    if [ -z "${2:-}" ]; then
        names=()
        for requirement in "${REQUIREMENTS[@]}"; do names+=("${requirement%%|*}"); done
        names+=(cargo)
    fi
    status=0
    for name in "${names[@]}"; do
        if check_one "$name"; then
            echo "present $name: $found"
        else
            echo "missing $name: $reason"
            status=1
        fi
    done
    exit "$status"
fi

# --- install what is missing --------------------------------------------------
if ! have_cargo; then
    log "cargo is required: install Rust with rustup (https://rustup.rs) and run again"
    exit 1
fi

packages=()
for requirement in "${REQUIREMENTS[@]}"; do
    IFS='|' read -r name package why <<<"$requirement"
    if ! check_one "$name"; then
        log "installing $package: $why ($reason)"
        read -r -a more <<<"$package"
        packages+=("${more[@]}")
    fi
done
if [ ${#packages[@]} -gt 0 ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null; then
            log "not root and no sudo: install ${packages[*]} with your package manager and run again"
            exit 1
        fi
        SUDO="sudo"
    fi
    apt_log="$(mktemp "${TMPDIR:-/tmp}/rapport-apt.XXXXXX")"
    if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
        $SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}"; } >"$apt_log" 2>&1; then
        log "apt-get failed; its last lines:"
        tail -n 20 "$apt_log" >&2
        exit 1
    fi
    rm -f "$apt_log"
    for requirement in "${REQUIREMENTS[@]}"; do
        name="${requirement%%|*}"
        if ! check_one "$name"; then
            log "still missing after the install: $name ($reason)"
            exit 1
        fi
    done
    log "installed ${packages[*]}"
fi

tansu_ready() { [ -x "$TANSU" ] && "$TANSU" --version 2>/dev/null | grep -q "$TANSU_VERSION"; }

if tansu_ready; then
    echo "$TANSU"
    exit 0
fi

mkdir -p "$TOOLS"
# A lock stops two concurrent runs from building tansu twice.
exec 9>"$TOOLS/.install.lock"
flock 9
if ! tansu_ready; then
    build_log="$TOOLS/tansu-build.log"
    log "building tansu $TANSU_VERSION, the local Kafka-compatible broker, into $TOOLS"
    log "this happens once per machine and takes 12-17 minutes on 2 cores (log: $build_log)"
    started=$SECONDS
    # A private target directory keeps the build out of the checkout.
    CARGO_TARGET_DIR="$TOOLS/build" CARGO_TERM_COLOR=never cargo install tansu --version "$TANSU_VERSION" \
        --locked --features dynostore,libsql --root "$TOOLS" >"$build_log" 2>&1 &
    build_pid=$!
    last_report=$SECONDS
    while kill -0 "$build_pid" 2>/dev/null; do
        sleep 1
        if [ $((SECONDS - last_report)) -ge 30 ]; then
            last_report=$SECONDS
            elapsed=$((SECONDS - started))
            compiled="$(grep -c '^ *Compiling ' "$build_log" || true)"
            log "still building tansu: $((elapsed / 60)) min $((elapsed % 60)) s, $compiled of about $TANSU_CRATES crates compiled"
        fi
    done
    if ! wait "$build_pid"; then
        log "building tansu failed; the last lines of $build_log:"
        tail -n 30 "$build_log" >&2
        exit 1
    fi
    rm -rf "$TOOLS/build"
    elapsed=$((SECONDS - started))
    log "built tansu in $((elapsed / 60)) min $((elapsed % 60)) s"
fi
echo "$TANSU"
