#!/usr/bin/env bash
# Install every benchmark prerequisite on Debian 12, as root, from a checkout: the Debian packages (the rig's tools,
# keepalived for failover.py's VRRP rows, BIRD 2 for bgp.py's router, dnsmasq's binary for dns_move.py's DNS server, openssl for the real kube-apiserver's
# certificates), the virtualenv .venv with the test tools and the test bed, and the Go peers failover.py and bgp.py
# measure (etcd and kube-apiserver, kube-vip v1.0.0 and v0.7.2; cached by version, a second run takes a second). The Go peers need Go 1.26 (on the PATH or in
# /usr/local/go). Every benchmark that finds something missing names this script.
#
#   usage: bash benchmarks/prerequisites.sh          then: .venv/bin/python benchmarks/<name>.py [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends python3-venv iproute2 nftables iputils-ping openssl keepalived bird2 \
  dnsmasq-base >/dev/null

python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -e '.[test]' -e ./testbed

if ! command -v go >/dev/null && [ ! -x /usr/local/go/bin/go ]; then
  echo "benchmarks/prerequisites.sh: Go 1.26 is needed to build the Go peers (https://go.dev/dl/, into /usr/local/go)" >&2
  exit 1
fi
bash tests/peers/build.sh apiserver
KUBEVIP_VERSIONS="v1.0.0 v0.7.2" bash tests/peers/build.sh kube-vip
