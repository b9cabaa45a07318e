"""The Equinix Metal metadata service: this device's id (and BGP neighbours) without an API key.

It answers only from the device itself, identified by source address; it is the most reliable way to know
which device we are (kube-vip matched `os.Hostname()` against the project's devices). Unreachable or not
a Metal device: the caller falls back to matching host names through the API.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests
import tenacity

from generic.logfmt import get_logger

log = get_logger("kubevip_metal.metal.metadata")

DEFAULT_URL = "https://metadata.platformequinix.com/metadata"
TIMEOUT = (2.0, 5.0)


@dataclass(frozen=True)
class Metadata:
    device_id: str
    hostname: str
    bgp_neighbors: tuple[dict[str, Any], ...]


def fetch(url: str = DEFAULT_URL, *, attempts: int = 3, session: requests.Session | None = None) -> Metadata | None:
    """This device's metadata, or None when the service cannot be reached or answers nonsense."""
    http = session or requests.Session()

    def get() -> requests.Response:
        response = http.get(url, timeout=TIMEOUT, headers={"Accept": "application/json"})
        if response.status_code == 429 or response.status_code >= 500:
            response.raise_for_status()
        return response

    try:
        response = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(requests.RequestException),
            wait=tenacity.wait_exponential_jitter(multiplier=0.2, max=2.0, jitter=0.2),
            stop=tenacity.stop_after_attempt(attempts),
            reraise=True,
        )(get)
    except requests.RequestException as exc:
        log.info("metal.metadata_unavailable", url=url, error=type(exc).__name__)
        return None
    if response.status_code != 200:
        log.info("metal.metadata_unavailable", url=url, status=response.status_code)
        return None
    try:
        doc = response.json()
    except ValueError:
        log.warning("metal.metadata_invalid", url=url, reason="not JSON")
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("id"), str) or not doc["id"]:
        log.warning("metal.metadata_invalid", url=url, reason="no device id")
        return None
    raw = doc.get("bgp_neighbors")
    neighbors: list[object] = raw if isinstance(raw, list) else []
    return Metadata(doc["id"], str(doc.get("hostname") or ""),
                    tuple(n for n in neighbors if isinstance(n, dict)))
