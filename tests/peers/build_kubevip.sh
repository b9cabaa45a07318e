#!/usr/bin/env bash
# Build the Go project kube-vip (github.com/kube-vip/kube-vip) from the Go
# module proxy as a *test peer* for kube-vip-metal.  Nothing built here is
# committed; only this script is.
#
# usage: build_kubevip.sh CACHE_DIR
#
#   KUBEVIP_VERSIONS  versions to build (default "v1.0.0 v0.7.2")
#
# Output: CACHE_DIR/bin/kube-vip-VERSION (static, CGO_ENABLED=0).
# Module and build caches live in CACHE_DIR/gomod and CACHE_DIR/gocache.
#
# Notes:
#   * kube-vip's main package is the module root (main.go); it prints
#     main.Version / main.Build, which are set with -X below.
#   * the proxy's checksum database has no entry for github.com/kube-vip/kube-vip
#     (sumdb lookup returns 404), so only that module is exempted from the
#     sumdb check via GONOSUMDB; every dependency is still verified.
#   * v1.0.0 needs go >= 1.24.4 and v0.7.2 go >= 1.21; the installed Go
#     (1.26.x) suffices.  If a future version needs a newer Go, set
#     GOTOOLCHAIN=go1.27.3 in the environment before calling this script.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 CACHE_DIR" >&2
    exit 2
fi

mkdir -p "$1"
CACHE_DIR=$(cd "$1" && pwd)
VERSIONS=${KUBEVIP_VERSIONS:-"v1.0.0 v0.7.2"}
MODULE=github.com/kube-vip/kube-vip

export GOMODCACHE="$CACHE_DIR/gomod"
export GOCACHE="$CACHE_DIR/gocache"
export GOFLAGS=-mod=mod
export CGO_ENABLED=0
export GONOSUMDB="${GONOSUMDB:+$GONOSUMDB,}$MODULE"
export GOWORK=off

mkdir -p "$CACHE_DIR/bin" "$GOMODCACHE" "$GOCACHE"

WORK=""
TMPBIN=""
cleanup() {
    if [[ -n "$TMPBIN" ]]; then
        rm -f "$TMPBIN"
    fi
    if [[ -n "$WORK" && -d "$WORK" ]]; then
        # the module cache is read-only; the wrapper dir is not, but be safe
        chmod -R u+w "$WORK" 2>/dev/null || true
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

for version in $VERSIONS; do
    out="$CACHE_DIR/bin/kube-vip-$version"
    if [[ -x "$out" && -f "$out" ]]; then
        echo "kube-vip $version: cached"
        continue
    fi

    start=$(date +%s)
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/kubevip-build.XXXXXX")

    # Fetch the module first so its go.mod can be inspected for replace lines.
    go mod download "$MODULE@$version"
    src="$GOMODCACHE/$MODULE@$version"
    if [[ ! -f "$src/main.go" ]]; then
        echo "kube-vip $version: no main.go at module root ($src)" >&2
        exit 1
    fi

    (
        cd "$WORK"
        cat > go.mod <<EOF
module peers/kubevip

go 1.21

require $MODULE $version
EOF
        # Copy replace directives (single-line and block form) from kube-vip's
        # go.mod; replace directives of dependencies are otherwise ignored.
        awk '
            /^replace[ \t]*\(/ { inblock = 1; print; next }
            inblock { print; if ($0 ~ /^\)/) inblock = 0; next }
            /^replace[ \t]/ { print }
        ' "$src/go.mod" >> go.mod

        cat > tools.go <<EOF
//go:build tools

package tools

import _ "$MODULE"
EOF
        t0=$(date +%s)
        # quiet unless it fails: a cold run downloads a few hundred modules
        go mod tidy >tidy.log 2>&1 || { cat tidy.log >&2; exit 1; }
        t1=$(date +%s)
        echo "kube-vip $version: go mod tidy (dependency download) $((t1 - t0)) s" >&2
        go build -trimpath \
            -ldflags "-s -w -X=main.Version=$version -X=main.Build=proxy-$version" \
            -o "$WORK/kube-vip" "$MODULE"
        echo "kube-vip $version: go build $(($(date +%s) - t1)) s" >&2
    )
    # Copy next to the target (same filesystem), then rename atomically.
    TMPBIN="$CACHE_DIR/bin/.kube-vip-$version.tmp.$$"
    cp "$WORK/kube-vip" "$TMPBIN"
    chmod 0755 "$TMPBIN"
    mv -f "$TMPBIN" "$out"
    TMPBIN=""
    cleanup
    WORK=""

    end=$(date +%s)
    size=$(stat -c %s "$out")
    mib=$(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1048576 }')
    echo "kube-vip $version: built in $((end - start)) s, $mib MiB"
done
