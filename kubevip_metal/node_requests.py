"""The Node requests of the two node labellers (`--enableNodeLabeling`), and what their answers mean, in one place.

`kubevip_metal.daemon.nodelabels` (the control plane's `kube-vip.io/has-ip`) and `kubevip_metal.services.labels`
(`service-provided.kube-vip.io/*`) both write a Node's labels with a JSON merge patch through the daemon's one API
client, each with a timeout, and both need the same reading of an answer: worth another attempt (`Transient`: no
client or connection yet, 404 while our Node is not registered, 409, 429, 5xx), refused for good (`Refused`: 403
when the RBAC lacks `patch` on nodes, 422), or, for another Node, deleted meanwhile (`Gone`).

A label value is at most 63 characters of `[A-Za-z0-9._-]`, beginning and ending with an alphanumeric, so an IPv6
address cannot be written as is: `label_value` writes an IPv4 address as is (`192.0.2.10`), an IPv6 address as its
16 bytes in 32 lower-case hex digits (`2001:db8::10` -> `20010db8000000000000000000000010`, as kube-vip's hex
encoding), and several addresses (dual stack) joined by `_`, IPv4 first (two: at most 15 + 1 + 32 = 48 characters);
an address that would not fit any more is left out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote

from generic.parse import IPAddress

VALUE_LIMIT = 63  # a label value's maximum length
MERGE_PATCH = "application/merge-patch+json"
REQUEST_TIMEOUT = 5.0


def label_value(addresses: Iterable[IPAddress]) -> str:
    """The label value for `addresses` (see the module's docstring); "" for none."""
    parts: list[str] = []
    for ip in sorted(set(addresses), key=lambda a: (a.version, a.packed)):
        text = str(ip) if ip.version == 4 else ip.packed.hex()
        if len("_".join([*parts, text])) <= VALUE_LIMIT:
            parts.append(text)
    return "_".join(parts)


def node_path(name: str) -> str:
    return f"/api/v1/nodes/{quote(name, safe='')}"


class Transient(Exception):
    """Worth another attempt."""


class Refused(Exception):
    """The API server refused for good (403, 422)."""


class Gone(Exception):
    """Another Node was deleted meanwhile: nothing to change there."""


class NodeRequests:
    """Requests about Nodes through the daemon's API client (`api_client()`: the client now, None while not made
    yet; an `ApiClientSelector` is asked for its current client), each with `timeout`."""

    def __init__(self, api_client: Callable[[], Any], own_node: str, timeout: float = REQUEST_TIMEOUT) -> None:
        self._api_client, self.own_node, self._timeout = api_client, own_node, timeout
        self.succeeded = 0  # requests answered 2xx, for tests and metrics

    def patch_labels(self, node: str, labels: Mapping[str, str | None]) -> None:
        """A merge patch of `node`'s labels (None removes one). `Gone` when another Node no longer exists."""
        self.send("PATCH", node_path(node), body={"metadata": {"labels": dict(labels)}}, content_type=MERGE_PATCH)

    def send(self, method: str, path: str, *, body: Any = None, query: dict[str, str] | None = None,
             content_type: str = "application/json") -> Any:
        """The answer's JSON ({} when empty); raises `Transient`, `Refused` or `Gone` (see the module)."""
        from http.client import HTTPException

        from generic.kuberest import transport_of

        api = self._api_client()
        if callable(api):  # an ApiClientSelector
            api = api()
        if api is None:
            raise Transient("no Kubernetes API client yet")
        try:
            response = transport_of(api).request(method, path, body=body, query=query, timeout=self._timeout,
                                                 content_type=content_type)
        except (HTTPException, OSError) as exc:
            raise Transient(f"{type(exc).__name__}: {exc}") from None
        status = response.status
        if 200 <= status < 300:
            self.succeeded += 1
            return response.json() if response.data else {}
        if status == 404 and path.startswith("/api/v1/nodes/") and path != node_path(self.own_node):
            raise Gone()
        if status in (404, 409, 429) or status >= 500:  # our own Node not registered yet: retried
            raise Transient(f"HTTP {status} {response.reason}")
        raise Refused(f"HTTP {status} {response.reason}")
