"""Put the Metal integration together at start: client, project, this device, and the EIP reservation.

Errors that will not go away by waiting (no such project or reservation, a refused token, an ambiguous
device) are `MetalSetupFatal` (a `FatalError`: the manager exits with one clear line). Anything transient (API
down, 429, 5xx) is `MetalSetupPending` (a `NotReady`: the manager keeps retrying and says so in the log).
"""

from __future__ import annotations

from kubevip_metal.config import Config
from kubevip_metal.errors import FatalError, NotReady
from kubevip_metal.metal import metadata
from kubevip_metal.metal.client import Device, MetalClient
from kubevip_metal.metal.eip import ElasticIp
from kubevip_metal.metal.identity import IdentityError, find_self
from kubevip_metal.metal.retry import MetalApiError


class MetalSetupFatal(FatalError):
    pass


class MetalSetupPending(NotReady):
    pass


def classify(exc: MetalApiError) -> Exception:
    """A Metal API failure as the daemon treats it: 4xx but 429 will not heal (fatal), the rest may (pending)."""
    if exc.status is not None and 400 <= exc.status < 500 and exc.status != 429:
        return MetalSetupFatal(f"Metal API: {exc}")
    return MetalSetupPending(f"Metal API: {exc}")


def metal_client(config: Config) -> MetalClient:
    """The production client, from the configuration's token and URL."""
    if config.metal.api_key is None:
        raise MetalSetupFatal("no Metal API token")
    return MetalClient(config.metal.api_key, config.metal.api_url)


def locate(config: Config, client: MetalClient) -> tuple[str, Device]:
    """The project's id and this node's device (`--metalDeviceID`, the metadata service, or the node name)."""
    metal = config.metal
    assert config.node_name is not None
    try:
        project_id = metal.project_id or client.project_id_by_name(metal.project or "")
        device = find_self(client, project_id, config.node_name, device_id=metal.device_id,
                           metadata=lambda: metadata.fetch(metal.metadata_url, attempts=2))
    except MetalApiError as exc:
        raise classify(exc) from None
    except IdentityError as exc:
        raise MetalSetupFatal(str(exc)) from None
    return project_id, device


def elastic_ip(config: Config, client: MetalClient) -> ElasticIp:
    """This device's Elastic IP controller for the control-plane address, after checking the project has it."""
    if not config.vip.addresses:
        raise MetalSetupFatal("the Elastic IP mode needs --address to be an IP address")
    project_id, device = locate(config, client)
    address = config.vip.addresses[0]
    try:
        client.reservation(project_id, address)  # an address that is not an EIP of the project is fatal
    except MetalApiError as exc:
        raise classify(exc) from None
    return ElasticIp(client, project_id, device, address)
