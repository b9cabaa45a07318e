"""Which Metal device is this node: `--metalDeviceID`, else the metadata service, else the node name.

Host-name matching tries the exact name, then the short name (first label) on both sides, because Metal
hostnames and Kubernetes node names differ in domain parts more often than not. No match or several is an
error that says what was tried, never a guess.
"""

from __future__ import annotations

from collections.abc import Callable

from kubevip_metal.metal.client import Device, MetalClient
from kubevip_metal.metal.metadata import Metadata


class IdentityError(Exception):
    """This node's device cannot be determined unambiguously."""


def _short(name: str) -> str:
    return name.split(".", 1)[0].lower()


def find_self(client: MetalClient, project_id: str, node_name: str, *, device_id: str | None,
              metadata: Callable[[], Metadata | None]) -> Device:
    tried = []
    if device_id:
        return client.device(device_id)
    tried.append("--metalDeviceID (not set)")
    found = metadata()
    if found is not None:
        return Device(found.device_id, found.hostname)
    tried.append("the metadata service (unreachable)")
    devices = client.devices(project_id)  # a MetalApiError goes up as it is: setup tells transient from fatal
    for how, key in (("exact host name", str.lower), ("short host name", _short)):
        matches = [d for d in devices if key(d.hostname) == key(node_name)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise IdentityError(f"{len(matches)} devices match node {node_name!r} by {how}: "
                                + ", ".join(d.id for d in matches) + "; set --metalDeviceID")
        tried.append(f"{how} {key(node_name)!r} among {len(devices)} devices")
    raise IdentityError(f"no device for node {node_name!r}; tried " + ", ".join(tried))
