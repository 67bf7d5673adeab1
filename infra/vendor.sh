#!/usr/bin/env bash
# Brings the browser libraries Rapport serves from the npm registry at
# pinned versions: the dashboard's into services/projector/assets/vendor/,
# analytics.js (for storefronts) into services/ingest/assets/vendor/. Each
# binary embeds its directory. The tarball of each package must match the
# integrity hash pinned here; the files taken from it are recorded in each
# directory's SHA256SUMS, which a unit test holds the embedded copies to.
#
#   infra/vendor.sh          fetch, verify and (re)write the vendored files
#   infra/vendor.sh check    verify the vendored files against SHA256SUMS only
#
# To move to a new version: change the version and integrity below (both
# from `npm view NAME@VERSION dist.integrity`), run the script, commit.
set -euo pipefail
cd "$(dirname "$0")/.."

DESTS=(services/projector/assets/vendor services/ingest/assets/vendor)

# package@version | npm integrity of its tarball | destination | files taken
# (from package/; `source:target` renames)
PACKAGES=(
    "htmx.org@2.0.11|sha512-Thx/WtpeOQqSrqBCw/A1cwGJGg4UrVa3+sW0GmrM3p4gJgO89ecH4qtbnyzDDWFvBTqjnIMCgELTNt636dtamA==|${DESTS[0]}|dist/htmx.min.js LICENSE:htmx.LICENSE"
    "uplot@1.6.32|sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw==|${DESTS[0]}|dist/uPlot.iife.min.js dist/uPlot.min.css LICENSE:uPlot.LICENSE"
    # The standalone bundle the Segment CDN serves as analytics.min.js, and
    # the two chunks it may load without any destination configured: link
    # and form tracking, and `ajs_` query parameters.
    "@segment/analytics-next@1.84.3|sha512-5l7cPBzScxhfJ0zdcKQI4daDvMIWWUk7hClT1xGRelnHUltIEoQ9w8+ZpFPoWJMpX8D7IA1nVAfJbpiKi3XaKw==|${DESTS[1]}|dist/umd/standalone.js dist/umd/auto-track.bundle.f131ce01a05e3a33a8c1.js dist/umd/queryString.bundle.34b193ada8fe288d1bd1.js LICENSE.MD:analytics-next.LICENSE"
)

if [ "${1:-}" = "check" ]; then
    for dest in "${DESTS[@]}"; do
        (cd "$dest" && sha256sum --check --quiet SHA256SUMS)
    done
    echo "[vendor] every vendored file matches its SHA256SUMS"
    exit 0
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/rapport-vendor.XXXXXX")"
trap 'rm -rf "$work"' EXIT
declare -A sums=()
for entry in "${PACKAGES[@]}"; do
    IFS='|' read -r spec integrity dest files <<<"$entry"
    tarball="$(cd "$work" && npm pack --silent "$spec")"
    algorithm="${integrity%%-*}"
    actual="$algorithm-$(openssl dgst "-$algorithm" -binary "$work/$tarball" | base64 -w0)"
    if [ "$actual" != "$integrity" ]; then
        echo "[vendor] $spec: the tarball's hash is $actual, not the pinned $integrity" >&2
        exit 1
    fi
    unpacked="$work/unpacked-${tarball%.tgz}"
    mkdir -p "$unpacked" "$dest"
    tar -xzf "$work/$tarball" -C "$unpacked"
    for file in $files; do
        source="${file%%:*}"
        target="${file#*:}"
        [ "$target" = "$file" ] && target="${source##*/}"
        cp "$unpacked/package/$source" "$dest/$target"
        sums[$dest]+=" $target"
    done
    echo "[vendor] $spec verified"
done
for dest in "${DESTS[@]}"; do
    # shellcheck disable=SC2086 # the names hold no spaces
    (cd "$dest" && sha256sum ${sums[$dest]} >SHA256SUMS)
    echo "[vendor] wrote $dest and its SHA256SUMS"
done
