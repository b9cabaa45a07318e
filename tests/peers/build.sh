#!/usr/bin/env bash
# Build the Go test peers from the Go module proxy, once per version, into a cache outside the clone:
# etcd and kube-apiserver (k8s.io/kubernetes), each through a wrapper module, and kube-vip
# (tests/peers/build_kubevip.sh). The product stays pure Python: these binaries exist only for tests and
# benchmarks, and are never committed. (Debian's etcd-server is 3.4, which kube-apiserver 1.35 only half
# supports: no watch progress requests, so some watches fail with 500 where a real cluster's would not.)
#
#   usage: tests/peers/build.sh [apiserver|kube-vip|all]      (default all; apiserver includes etcd)
#
# The cache is $KVM_PEERS_DIR (default /var/cache/kube-vip-metal/peers); kube-vip versions are
# $KUBEVIP_VERSIONS (default v1.0.0, the one the tests use; the failover benchmark also wants v0.7.2).
#
# A binary is built to a temporary name and renamed into place, so an interrupted build never leaves a
# half-written one; a second run with the binaries present takes well under a second.
set -euo pipefail
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"  # where the Go toolchain lives on these machines
HERE="$(cd "$(dirname "$0")" && pwd)"
TARGET="${1:-all}"
case "$TARGET" in apiserver|kube-vip|all) ;; *) echo "usage: $0 [apiserver|kube-vip|all]" >&2; exit 2;; esac
CACHE="${KVM_PEERS_DIR:-/var/cache/kube-vip-metal/peers}"
K8S="${K8S_VERSION:-v1.35.4}"             # k8s.io/kubernetes release
ETCD="${ETCD_VERSION:-v3.6.16}"           # go.etcd.io/etcd release
STAGING="v0.${K8S#v1.}"                   # its published staging modules: v1.35.4 -> v0.35.4
export GOMODCACHE="$CACHE/gomod" GOCACHE="$CACHE/gocache" GOFLAGS=-mod=mod CGO_ENABLED=0
mkdir -p "$CACHE/bin"

etcd="$CACHE/bin/etcd-$ETCD"
if [ "$TARGET" = kube-vip ]; then
  :
elif [ -x "$etcd" ]; then
  echo "etcd $ETCD: cached ($etcd)"
else
  started=$(date +%s)
  work="$(mktemp -d)"
  # go.etcd.io/etcd/server/v3 replaces its sibling modules with local paths: pin each at the same release
  {
    echo "module kube-vip-metal/peers/etcd"; echo; echo "go 1.26.0"; echo "require ("
    for module in server/v3 api/v3 client/pkg/v3 client/v3 pkg/v3; do printf '\tgo.etcd.io/etcd/%s %s\n' "$module" "$ETCD"; done
    echo ")"
  } > "$work/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' > "$work/tools.go"
  (cd "$work" && go mod tidy >/dev/null 2>&1)
  downloaded=$(date +%s)
  (cd "$work" && go build -trimpath -ldflags='-s -w' -o "$etcd.partial" go.etcd.io/etcd/server/v3)
  mv "$etcd.partial" "$etcd"
  rm -rf "$work"
  echo "etcd $ETCD: downloads $((downloaded - started)) s, compile $(( $(date +%s) - downloaded )) s, $(( $(stat -c %s "$etcd") / 1048576 )) MiB"
fi

apiserver="$CACHE/bin/kube-apiserver-$K8S"
if [ "$TARGET" = kube-vip ]; then
  :
elif [ -x "$apiserver" ]; then
  echo "kube-apiserver $K8S: cached ($apiserver)"
else
  started=$(date +%s)
  work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
  cd "$work"
  # k8s.io/kubernetes requires every staging module at v0.0.0 and replaces it with a path inside its own
  # repository; outside it, each must be replaced by its published twin at the matching v0.x.y.
  gomod="$(go mod download -json "k8s.io/kubernetes@$K8S" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  {
    echo "module kube-vip-metal/peers/apiserver"; echo
    grep -m1 '^go ' "$gomod"
    echo "require k8s.io/kubernetes $K8S"
    echo "replace ("
    for module in $(grep -E '^\s+k8s.io/[a-z0-9-]+ v0.0.0$' "$gomod" | awk '{print $1}' | sort -u); do
      version="$STAGING"
      # the proxy does not serve every staging module at every patch release (none of those is linked in)
      if ! (cd / && go list -m "$module@$version" >/dev/null 2>&1); then
        version="$(cd / && go list -m -versions "$module" | tr ' ' '\n' | grep "^${STAGING%.*}\." | tail -1)"
      fi
      printf '\t%s => %s %s\n' "$module" "$module" "$version"
    done
    echo ")"
  } > go.mod
  printf '//go:build tools\n\npackage tools\n\nimport _ "k8s.io/kubernetes/cmd/kube-apiserver"\n' > tools.go
  go mod tidy -e >/dev/null 2>&1 || true
  downloaded=$(date +%s)
  minor="${K8S#v1.}"; minor="${minor%%.*}"
  ldflags="-s -w"
  for package in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags="$ldflags -X $package.gitVersion=$K8S -X $package.gitMajor=1 -X $package.gitMinor=$minor -X $package.gitTreeState=clean"
  done
  go build -trimpath -ldflags="$ldflags" -o "$apiserver.partial" k8s.io/kubernetes/cmd/kube-apiserver
  mv "$apiserver.partial" "$apiserver"
  done_at=$(date +%s)
  echo "kube-apiserver $K8S: downloads $((downloaded - started)) s, compile $((done_at - downloaded)) s, $(( $(stat -c %s "$apiserver") / 1048576 )) MiB"
  cd "$HERE"
fi

if [ "$TARGET" != apiserver ]; then
  KUBEVIP_VERSIONS="${KUBEVIP_VERSIONS:-v1.0.0}" bash "$HERE/build_kubevip.sh" "$CACHE"
fi

# Only the binaries are needed from here on: drop the module and build caches (about 5 GB after a cold build)
# unless asked to keep them for building other versions.
if [ "${KVM_KEEP_GO_CACHES:-}" != 1 ]; then
  go clean -cache -modcache >/dev/null 2>&1 || true
fi
