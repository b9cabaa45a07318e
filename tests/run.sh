#!/usr/bin/env bash
# Install every test prerequisite on a fresh Debian 12 machine (root, Python 3.11) and run the whole
# suite: ruff, mypy, pytest. CI runs exactly this (see .ci/run). Rig tests that need root, namespaces or
# Debian daemons fail instead of skipping when CI is set.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the rig needs: namespaces and links (iproute2), fault levers (nftables), probes.
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends iproute2 nftables iputils-ping >/dev/null

python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -e '.[test]'

.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/pytest -q
