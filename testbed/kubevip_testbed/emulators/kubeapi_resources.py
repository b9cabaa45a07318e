"""The resource table of the Kubernetes API emulator and the discovery documents derived from it.

One row per resource, no code per resource: the store and the HTTP layer read everything they need (scope,
subresources, what a delete answers, which fields a field selector may name) from `ResourceDef`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Verbs the emulator implements for every resource (no deletecollection, no proxy).
VERBS = ("create", "delete", "get", "list", "patch", "update", "watch")
SUBRESOURCE_VERBS = ("get", "patch", "update")

# client 37 validates every field of /version as required.
VERSION_INFO: dict[str, str] = {
    "major": "1",
    "minor": "37",
    "emulationMajor": "1",
    "emulationMinor": "37",
    "minCompatibilityMajor": "1",
    "minCompatibilityMinor": "36",
    "gitVersion": "v1.37.0+kubevip-emulator",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z",
    "goVersion": "go1.25.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}


@dataclass(frozen=True)
class ResourceDef:
    """One served resource: where it lives in the URL space and which server-side rules apply to it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    has_status: bool = False
    # The real server answers DELETE with the deleted object for these (Services, Namespaces), else a Status.
    delete_returns_object: bool = False
    # Status the server itself sets on create (Services start with an empty load balancer status).
    create_status: dict[str, Any] | None = None
    # Status of the object a DELETE answers while it terminates (Namespaces: phase Terminating).
    delete_status: dict[str, Any] | None = None
    # Fields a field selector may name besides metadata.name and metadata.namespace.
    extra_fields: tuple[str, ...] = field(default=())
    # metadata.generation is kept (1 on create, +1 per spec change) only by some kinds' registries.
    has_generation: bool = False
    # A PUT of a missing object creates it (the registry's AllowCreateOnUpdate): Leases, Services, Events.
    create_on_update: bool = False
    # A PUT without metadata.resourceVersion is accepted (AllowUnconditionalUpdate); Leases refuse it with 422.
    unconditional_update: bool = True
    # Served from the watch cache on the real server; Events are watched straight from etcd (no watch cache), which
    # words a compacted resourceVersion differently.
    watch_cache: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        """`coordination.k8s.io/v1/leases`, `v1/services`: the name `get_object` takes."""
        return f"{self.api_version}/{self.plural}"

    @property
    def qualified(self) -> str:
        """`leases.coordination.k8s.io`, `services`: how the real server names the resource in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def qualified_kind(self) -> str:
        """`Lease.coordination.k8s.io`, `Service`: the form used in Invalid messages."""
        return f"{self.kind}.{self.group}" if self.group else self.kind


_EVENT_FIELDS = ("involvedObject.kind", "involvedObject.name", "involvedObject.namespace", "involvedObject.uid",
                 "reason", "type")

RESOURCES: tuple[ResourceDef, ...] = (
    ResourceDef("", "v1", "namespaces", "Namespace", namespaced=False, short_names=("ns",), has_status=True,
                delete_returns_object=True, create_status={"phase": "Active"}, delete_status={"phase": "Terminating"},
                extra_fields=("status.phase",)),
    ResourceDef("", "v1", "nodes", "Node", namespaced=False, short_names=("no",), has_status=True,
                extra_fields=("spec.unschedulable",)),
    ResourceDef("", "v1", "services", "Service", namespaced=True, short_names=("svc",), has_status=True,
                delete_returns_object=True, create_status={"loadBalancer": {}}, extra_fields=("spec.type",),
                create_on_update=True),
    ResourceDef("", "v1", "secrets", "Secret", namespaced=True, extra_fields=("type",)),
    ResourceDef("", "v1", "configmaps", "ConfigMap", namespaced=True, short_names=("cm",)),
    ResourceDef("", "v1", "events", "Event", namespaced=True, short_names=("ev",), extra_fields=_EVENT_FIELDS,
                create_on_update=True, watch_cache=False),
    ResourceDef("coordination.k8s.io", "v1", "leases", "Lease", namespaced=True, create_on_update=True,
                unconditional_update=False),
    ResourceDef("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", namespaced=True, has_generation=True),
    ResourceDef("events.k8s.io", "v1", "events", "Event", namespaced=True, short_names=("ev",),
                extra_fields=("regarding.kind", "regarding.name", "regarding.namespace", "reason", "type"),
                create_on_update=True, watch_cache=False),
)

BY_KEY: dict[str, ResourceDef] = {r.key: r for r in RESOURCES}


def group_versions() -> dict[str, list[str]]:
    """Group name → its versions, in table order (the core group is "")."""
    found: dict[str, list[str]] = {}
    for r in RESOURCES:
        versions = found.setdefault(r.group, [])
        if r.version not in versions:
            versions.append(r.version)
    return found


def find(group: str, version: str, plural: str) -> ResourceDef | None:
    return BY_KEY.get(f"{group}/{version}/{plural}" if group else f"{version}/{plural}")


def is_served(group: str, version: str) -> bool:
    return version in group_versions().get(group, [])


def api_versions(server_address: str) -> dict[str, Any]:
    """`/api`: the core group's versions (client 37 requires serverAddressByClientCIDRs)."""
    return {
        "kind": "APIVersions",
        "versions": group_versions().get("", []),
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def api_group(group: str) -> dict[str, Any]:
    versions = [{"groupVersion": f"{group}/{v}", "version": v} for v in group_versions()[group]]
    return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": versions,
            "preferredVersion": versions[0]}


def api_group_list() -> dict[str, Any]:
    """`/apis`: every named group."""
    groups = [api_group(g) for g in group_versions() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_resource_list(group: str, version: str) -> dict[str, Any]:
    """`/api/v1`, `/apis/<group>/<version>`: resources and subresources with their verbs."""
    resources: list[dict[str, Any]] = []
    for r in RESOURCES:
        if (r.group, r.version) != (group, version):
            continue
        entry: dict[str, Any] = {"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
                                 "kind": r.kind, "verbs": list(VERBS)}
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        resources.append(entry)
        if r.has_status:
            resources.append({"name": f"{r.plural}/status", "singularName": "", "namespaced": r.namespaced,
                              "kind": r.kind, "verbs": list(SUBRESOURCE_VERBS)})
    group_version = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}
