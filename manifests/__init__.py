"""The YAML skeletons that `kube-vip-metal manifest` fills in (shipped inside the installed package).

Static shape lives here, where a reviewer can read it as Kubernetes YAML; what depends on the flags (the
environment, volumes, tolerations, Secrets) is added by `kubevip_metal.manifests`.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml


def load(name: str) -> list[dict[str, Any]]:
    """Every document of `<name>.yaml`, freshly parsed (callers mutate them)."""
    text = resources.files(__name__).joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    return [doc for doc in yaml.safe_load_all(text) if doc]
