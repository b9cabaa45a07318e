#!/usr/bin/env bash
# Install every test prerequisite on a fresh Debian 12 machine (root, Python 3.11, Go) and run the whole
# suite: ruff, mypy, pytest. CI runs exactly this (see .ci/run). Rig and real-API tests that need root,
# namespaces, Debian daemons or the Go peers fail instead of skipping when CI is set.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: namespaces and links (iproute2), fault levers (nftables), probes, and for the real
# kube-apiserver its storage (etcd-server) and certificates (openssl).
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends iproute2 nftables iputils-ping etcd-server openssl >/dev/null

# The Go test peers (kube-apiserver, kube-vip) build from the Go module proxy once per version into a cache
# outside the clone (a few minutes cold, instant when cached). The build runs at the lowest CPU priority while
# the Python side installs and the emulator tier runs; the real-API tier waits for it.
build_log="$(mktemp)"
nice -n 19 bash tests/peers/build.sh >"$build_log" 2>&1 &
build_pid=$!

python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -e '.[test]'

.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/pytest -q -m "not realapi"

status=0; wait "$build_pid" || status=$?
cat "$build_log"
if [ "$status" -ne 0 ]; then echo "tests/peers/build.sh failed ($status)" >&2; exit "$status"; fi
.venv/bin/pytest -q -m realapi
