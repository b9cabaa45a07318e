#!/usr/bin/env bash
# Install every test prerequisite on a fresh Debian 12 machine (root, Python 3.11, Go) and run the whole
# suite: ruff, mypy, pytest. CI runs exactly this (see .ci/run). Rig and real-API tests that need root,
# namespaces, Debian daemons or the Go peers fail instead of skipping when CI is set.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: the virtualenv (python3-venv, which Debian's python3 lacks), namespaces and links (iproute2),
# fault levers (nftables), probes, certificates for the real kube-apiserver (openssl), and BIRD 2, the BGP router the
# speaker is proven against (bird2: tests run their own instances in rig namespaces, never the package's service), and
# for tests/test_image.py podman with runc and catatonit (its pod infra process) and mmdebstrap (the registry-free base),
# and dnsmasq's binary alone (dnsmasq-base: the DNS server a DNS --address is resolved through, run by the tests in
# the router namespace; not the dnsmasq package, whose system service would start on a machine without policy-rc.d).
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends python3-venv iproute2 nftables iputils-ping openssl bird2 \
  podman runc catatonit mmdebstrap dnsmasq-base >/dev/null

# The Go test peers build from the Go module proxy, once per version, into a cache outside the clone (about
# 10 minutes cold on 2 cores, instant when cached): etcd and kube-apiserver first, then kube-vip. They build at
# the lowest CPU priority while the Python side installs and the emulator tier runs; each later tier waits for
# its binary.
builds="$(mktemp -d)"
set -m  # the builds get a process group of their own, so that leaving early (a failed tier) stops all of it
(
  for target in apiserver kube-vip; do
    status=0
    nice -n 19 bash tests/peers/build.sh "$target" >"$builds/$target.log" 2>&1 || status=$?
    echo "$status" >"$builds/$target.rc"
  done
) &
build_group=$!
set +m
trap 'kill -- -"$build_group" 2>/dev/null || true' EXIT
built() {  # wait for one build, show its output, stop here if it failed
  while [ ! -f "$builds/$1.rc" ]; do sleep 2; done
  cat "$builds/$1.log"
  if [ "$(cat "$builds/$1.rc")" != 0 ]; then echo "tests/peers/build.sh $1 failed" >&2; exit 1; fi
}

python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -e '.[test]' -e ./testbed  # the daemon, the test bed

.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/pytest -q -m "not realapi and not kubevip"
built apiserver
.venv/bin/pytest -q -m "realapi and not kubevip"
built kube-vip
.venv/bin/pytest -q -m kubevip
