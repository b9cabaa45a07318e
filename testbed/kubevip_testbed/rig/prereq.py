"""What the machine lacks for a rig, in words an operator can act on (fixtures skip or fail with them).

`TOOLS` is the one list of the Debian packages a rig (and so `kube-vip-metal lab`) needs: README's first command
installs exactly `PACKAGES` plus python3-venv, and a test keeps the two in step.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

TOOLS = {"ip": "iproute2", "nft": "nftables", "ping": "iputils-ping"}  # command -> the Debian package that has it
PACKAGES = frozenset(TOOLS.values())
_CAPABILITIES = {12: "CAP_NET_ADMIN", 21: "CAP_SYS_ADMIN"}  # links and sysctls; setns and netns mounts


def _effective_capabilities() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def prerequisites_missing() -> list[str]:
    """Empty when a rig can run here, else one entry per missing piece (`not root`, `nft not found ...`)."""
    if sys.platform != "linux":
        return ["not Linux (network namespaces)"]
    missing = []
    if os.geteuid() != 0:
        missing.append("not root")
    capabilities = _effective_capabilities()
    missing += [f"no {name}" for bit, name in _CAPABILITIES.items() if not capabilities >> bit & 1]
    missing += [f"{tool} not found (apt-get install {package})" for tool, package in TOOLS.items()
                if shutil.which(tool) is None]
    return missing
