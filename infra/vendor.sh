#!/usr/bin/env bash
# Brings the dashboard's browser libraries from the npm registry at pinned
# versions into services/projector/assets/vendor/, which the projector
# binary embeds. The tarball of each package must match the integrity hash
# pinned here; the files taken from it are recorded in SHA256SUMS, which a
# unit test holds the embedded copies to.
#
#   infra/vendor.sh          fetch, verify and (re)write the vendored files
#   infra/vendor.sh check    verify the vendored files against SHA256SUMS only
#
# To move to a new version: change the version and integrity below (both
# from `npm view NAME@VERSION dist.integrity`), run the script, commit.
set -euo pipefail
cd "$(dirname "$0")/.."

DEST=services/projector/assets/vendor

# package@version | npm integrity of its tarball | files taken (from package/)
PACKAGES=(
    "htmx.org@2.0.11|sha512-Thx/WtpeOQqSrqBCw/A1cwGJGg4UrVa3+sW0GmrM3p4gJgO89ecH4qtbnyzDDWFvBTqjnIMCgELTNt636dtamA==|dist/htmx.min.js LICENSE:htmx.LICENSE"
    "uplot@1.6.32|sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw==|dist/uPlot.iife.min.js dist/uPlot.min.css LICENSE:uPlot.LICENSE"
)

if [ "${1:-}" = "check" ]; then
    (cd "$DEST" && sha256sum --check --quiet SHA256SUMS)
    echo "[vendor] every vendored file matches SHA256SUMS"
    exit 0
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/rapport-vendor.XXXXXX")"
trap 'rm -rf "$work"' EXIT
sums=()
for entry in "${PACKAGES[@]}"; do
    IFS='|' read -r spec integrity files <<<"$entry"
    tarball="$(cd "$work" && npm pack --silent "$spec")"
    algorithm="${integrity%%-*}"
    actual="$algorithm-$(openssl dgst "-$algorithm" -binary "$work/$tarball" | base64 -w0)"
    if [ "$actual" != "$integrity" ]; then
        echo "[vendor] $spec: the tarball's hash is $actual, not the pinned $integrity" >&2
        exit 1
    fi
    mkdir -p "$work/${spec%@*}"
    tar -xzf "$work/$tarball" -C "$work/${spec%@*}"
    for file in $files; do
        source="${file%%:*}"
        target="${file#*:}"
        [ "$target" = "$file" ] && target="${source##*/}"
        cp "$work/${spec%@*}/package/$source" "$DEST/$target"
        sums+=("$target")
    done
    echo "[vendor] $spec verified"
done
(cd "$DEST" && sha256sum "${sums[@]}" >SHA256SUMS)
echo "[vendor] wrote $DEST and its SHA256SUMS"
