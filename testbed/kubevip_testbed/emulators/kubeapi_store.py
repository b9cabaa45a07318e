"""The object store of the Kubernetes API emulator: one revision counter, a bounded event history, watchers.

It plays etcd plus the generic registry: every write bumps one global revision (an object's resourceVersion is the
revision of its last write), a write carrying a stale resourceVersion is refused with 409, and the last `history`
events are kept so that a watch can resume from a resourceVersion, or be told 410 Gone when it is too old.

Writes run on the emulator's event loop (they hand events to asyncio queues); `snapshot` may be called from any
thread. Stored objects are never mutated in place: every write stores a new dict, so readers can share them.
"""

from __future__ import annotations

import asyncio
import copy
import re
import secrets
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubevip_testbed.emulators import kubeapi_schema as schema
from kubevip_testbed.emulators import kubeapi_status as st
from kubevip_testbed.emulators.kubeapi_patch import (
    PatchError,
    PatchFormatError,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)
from kubevip_testbed.emulators.kubeapi_resources import ResourceDef
from kubevip_testbed.emulators.kubeapi_selectors import FieldSelector, LabelSelector

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH)

# Metadata only the server writes; a client's values for these are ignored on update.
_SYSTEM_META = ("uid", "creationTimestamp", "name", "namespace", "generation", "deletionTimestamp",
                "deletionGracePeriodSeconds")
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the real server's: no vowels, no look-alikes

Key = tuple[str, str, str]  # (resource key, namespace or "", name)


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class StoredEvent:
    """One write, as etcd would record it: the state after (`obj`) and before (`prev`, None for ADDED)."""

    revision: int
    type: str
    resource: ResourceDef
    namespace: str
    obj: dict[str, Any]
    prev: dict[str, Any] | None


@dataclass(eq=False)
class Watcher:
    """One open watch: its filter and the queue the store feeds."""

    resource: ResourceDef
    namespace: str | None  # None: every namespace
    labels: LabelSelector
    fields: FieldSelector
    queue: asyncio.Queue[StoredEvent | None] = field(default_factory=asyncio.Queue)  # None: a wake-up

    def matches(self, obj: dict[str, Any]) -> bool:
        return self.labels.matches(obj) and self.fields.matches(obj)

    def translate(self, event: StoredEvent) -> tuple[str, dict[str, Any]] | None:
        """The event this watcher sees, if any: an object entering or leaving the selector is ADDED or DELETED."""
        if event.resource is not self.resource:
            return None
        if self.namespace is not None and event.namespace != self.namespace:
            return None
        if event.type == "DELETED":
            return ("DELETED", event.obj) if self.matches(event.obj) else None
        now = self.matches(event.obj)
        before = event.prev is not None and self.matches(event.prev)
        if now and before:
            return "MODIFIED", event.obj
        if now:
            return "ADDED", event.obj
        if before:
            return "DELETED", event.obj
        return None


def parse_resource_version(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise st.bad_request(f'resourceVersion: Invalid value: "{value}": must be an unsigned integer')
    return int(value)


def _content(obj: dict[str, Any], r: ResourceDef) -> dict[str, Any]:
    """What `metadata.generation` tracks: everything but metadata (and status, when it is a subresource)."""
    skip = {"metadata", "kind", "apiVersion"} | ({"status"} if r.has_status else set())
    return {k: v for k, v in obj.items() if k not in skip}


def _without_rv(obj: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "resourceVersion"}
    return {**obj, "metadata": meta}


class Store:
    """Objects of every served resource, the global revision and the recent history of writes."""

    def __init__(self, history: int = 1000) -> None:
        if history < 1:
            raise ValueError(f"history must be at least 1, got {history}")
        self._lock = threading.Lock()
        self._objects: dict[Key, dict[str, Any]] = {}
        self._revision = 0
        self._compacted = 0  # the newest revision no longer in the history
        self._history: deque[StoredEvent] = deque()
        self._history_size = history
        self._watchers: set[Watcher] = set()

    @property
    def revision(self) -> int:
        return self._revision

    # --- reads -------------------------------------------------------------------------------------------------

    def snapshot(self, r: ResourceDef, namespace: str | None, name: str) -> dict[str, Any] | None:
        """A private copy of one object; safe from any thread."""
        with self._lock:
            obj = self._objects.get((r.key, namespace or "", name))
            return copy.deepcopy(obj) if obj is not None else None

    def get(self, r: ResourceDef, namespace: str, name: str) -> dict[str, Any]:
        obj = self._objects.get((r.key, namespace, name))
        if obj is None:
            raise st.not_found(r, name)
        return obj

    def list_objects(self, r: ResourceDef, namespace: str | None, labels: LabelSelector, fields: FieldSelector,
             resource_version: str | None, match: str | None) -> dict[str, Any]:
        """A `<Kind>List`; with resourceVersionMatch=Exact, the state at that revision rebuilt from the history."""
        if match not in (None, "", "Exact", "NotOlderThan"):
            raise st.bad_request(f'resourceVersionMatch: Unsupported value: "{match}": supported values: '
                                 '"Exact", "NotOlderThan"')
        requested = parse_resource_version(resource_version)
        if match and requested is None:
            raise st.bad_request("resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless "
                                 "resourceVersion is provided")
        with self._lock:
            current = self._revision
            if requested is not None and requested > current:
                raise st.timeout(f"Too large resource version: {requested}, current: {current}")
            if match == "Exact" and requested is not None:
                if requested < self._compacted:
                    raise st.expired("The resourceVersion for the provided list is too old.")
                objects, list_rv = self._state_at(r, requested), requested
            else:
                objects = {k: v for k, v in self._objects.items() if k[0] == r.key}
                list_rv = current
        items = [_list_item(obj) for key, obj in sorted(objects.items())
                 if (namespace is None or key[1] == namespace) and labels.matches(obj) and fields.matches(obj)]
        return {"kind": f"{r.kind}List", "apiVersion": r.api_version,
                "metadata": {"resourceVersion": str(list_rv)}, "items": items}

    def _state_at(self, r: ResourceDef, revision: int) -> dict[Key, dict[str, Any]]:
        """Undo, newest first, every write after `revision`."""
        state = {k: v for k, v in self._objects.items() if k[0] == r.key}
        for event in reversed(self._history):
            if event.revision <= revision:
                break
            if event.resource is not r:
                continue
            key = (r.key, event.namespace, event.obj["metadata"]["name"])
            if event.prev is None:
                state.pop(key, None)
            else:
                state[key] = event.prev
        return state

    # --- watches -----------------------------------------------------------------------------------------------

    def watch(self, r: ResourceDef, namespace: str | None, labels: LabelSelector, fields: FieldSelector,
              resource_version: str | None) -> tuple[list[tuple[str, dict[str, Any]]], Watcher]:
        """Register a watcher; return the events it must see first (replayed or synthetic ADDED) and the watcher.

        Registration and the initial events are taken in one step, so no write falls between them.
        """
        requested = parse_resource_version(resource_version)
        watcher = Watcher(r, namespace, labels, fields)
        initial: list[tuple[str, dict[str, Any]]] = []
        with self._lock:
            if not requested:  # unset or "0": the current state as ADDED, then what follows
                for key, obj in sorted(self._objects.items()):
                    if key[0] == r.key and (namespace is None or key[1] == namespace) and watcher.matches(obj):
                        initial.append(("ADDED", obj))
            else:
                if requested < self._compacted:
                    raise st.expired(f"too old resource version: {requested} ({self._compacted})" if r.watch_cache
                                     else "The resourceVersion for the provided watch is too old.")
                for event in self._history:
                    if event.revision > requested and (seen := watcher.translate(event)) is not None:
                        initial.append(seen)
            self._watchers.add(watcher)
        return initial, watcher

    def compact(self) -> int:
        """Forget every write before the current revision, as etcd's compaction does; return that revision."""
        with self._lock:
            while self._history and self._history[0].revision < self._revision:
                self._history.popleft()
            self._compacted = max(self._compacted, self._revision - 1)
            return self._revision

    def unwatch(self, watcher: Watcher) -> None:
        with self._lock:
            self._watchers.discard(watcher)

    # --- writes ------------------------------------------------------------------------------------------------

    def create(self, r: ResourceDef, namespace: str, body: Any) -> dict[str, Any]:
        obj = _checked_body(r, body)
        meta = obj["metadata"]
        _settle_namespace(r, namespace, meta)
        if meta.get("resourceVersion"):
            raise st.internal_error("resourceVersion should not be set on objects to be created")
        if not meta.get("name"):
            prefix = meta.get("generateName")
            if not isinstance(prefix, str) or not prefix:
                raise st.invalid(r, "", "metadata.name", "FieldValueRequired",
                                 "Required value: name or generateName is required")
            meta["name"] = prefix + "".join(secrets.choice(_GENERATE_ALPHABET) for _ in range(5))
        _check_name(r, meta["name"])
        schema.validate(r, obj)
        for server_only in ("managedFields", "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(server_only, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        if r.has_generation:
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        if r.create_status is not None:
            obj["status"] = copy.deepcopy(r.create_status)
        with self._lock:
            key = (r.key, namespace, meta["name"])
            if key in self._objects:
                raise st.already_exists(r, meta["name"])
            return self._write(r, key, obj, None, "ADDED")

    def update(self, r: ResourceDef, namespace: str, name: str, body: Any,
               subresource: str | None) -> tuple[dict[str, Any], bool]:
        """PUT: conditional on the body's resourceVersion if it has one (some kinds require one); a missing object is
        created for the kinds that allow it. Returns the object and whether it was created."""
        incoming = _checked_body(r, body)
        with self._lock:
            old = self._objects.get((r.key, namespace, name))
        if old is None and r.create_on_update and subresource is None:
            meta = incoming["metadata"]
            if meta.get("name") not in (None, "", name):
                raise _name_mismatch(meta.get("name"), name)
            meta["name"] = name
            meta.pop("resourceVersion", None)
            return self.create(r, namespace, incoming), True
        with self._lock:
            old = self.get(r, namespace, name)
            return self._apply_update(r, namespace, name, old, incoming, subresource), False

    def patch(self, r: ResourceDef, namespace: str, name: str, patch_type: str, patch: Any,
              subresource: str | None) -> dict[str, Any]:
        """PATCH: apply to the stored object, then proceed as an update (a resourceVersion in it is a precondition)."""
        with self._lock:
            old = self.get(r, namespace, name)
            base = copy.deepcopy(old)
            if patch_type == JSON_PATCH:
                operations = _json_patch_operations(patch)
                try:
                    patched = json_patch(base, operations)
                except (PatchFormatError, PatchError):
                    raise st.unprocessable() from None
            elif patch_type == MERGE_PATCH:
                patched = merge_patch(base, _patch_map(patch, "error decoding patch: "))
            else:
                patched = strategic_merge_patch(base, _patch_map(patch, ""))
            if isinstance(patched, dict) and isinstance(patched.get("metadata"), dict):
                patched["metadata"].setdefault("resourceVersion", old["metadata"]["resourceVersion"])
            return self._apply_update(r, namespace, name, old, _checked_body(r, patched), subresource)

    def delete(self, r: ResourceDef, namespace: str, name: str, options: dict[str, Any]) -> dict[str, Any]:
        """Remove now, or mark for deletion while finalizers remain; answer as the real server does."""
        with self._lock:
            old = self.get(r, namespace, name)
            meta = old["metadata"]
            preconditions = options.get("preconditions") or {}
            for field_name, key in (("UID", "uid"), ("ResourceVersion", "resourceVersion")):
                want = preconditions.get(key)
                if want and want != meta.get(key):
                    raise st.precondition_failed(r, name, field_name, want, str(meta.get(key)))
            if meta.get("finalizers"):
                if meta.get("deletionTimestamp"):
                    return old
                marked = copy.deepcopy(old)
                marked["metadata"]["deletionTimestamp"] = now_rfc3339()
                marked["metadata"]["deletionGracePeriodSeconds"] = 0
                return self._write(r, (r.key, namespace, name), marked, old, "MODIFIED")
            final = old
            if r.delete_status is not None:  # what the object looks like once its deletion has begun
                final = {**old, "metadata": {**meta, "deletionTimestamp": now_rfc3339()},
                         "status": copy.deepcopy(r.delete_status)}
            last = self._remove(r, (r.key, namespace, name), final, old)
        if r.delete_returns_object:
            return last
        details = st.resource_details(r, name, uid=meta.get("uid"))
        return st.status_object(200, "", "", details)

    def _apply_update(self, r: ResourceDef, namespace: str, name: str, old: dict[str, Any],
                      incoming: dict[str, Any], subresource: str | None) -> dict[str, Any]:
        meta_in = incoming["metadata"]
        _settle_namespace(r, namespace, meta_in)
        if meta_in.get("name") != name:
            raise _name_mismatch(meta_in.get("name"), name)
        wanted_rv = meta_in.get("resourceVersion")
        if not wanted_rv and not r.unconditional_update:
            raise st.resource_version_required(r, name)
        if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
            raise st.conflict(r, name)
        new = incoming
        meta = new["metadata"]
        for system in _SYSTEM_META:
            if system in old["metadata"]:
                meta[system] = old["metadata"][system]
            else:
                meta.pop(system, None)
        meta.pop("managedFields", None)
        meta.pop("selfLink", None)
        if subresource == "status":
            # The status subresource writes the status and the metadata; everything else stays as stored.
            status = new.get("status")
            new = {**{k: v for k, v in old.items() if k not in ("metadata", "status")}, "metadata": meta}
            if status is not None:
                new["status"] = status
        else:
            if r.has_status:
                if "status" in old:
                    new["status"] = old["status"]
                else:
                    new.pop("status", None)
            if r.has_generation and _content(new, r) != _content(old, r):
                meta["generation"] = int(old["metadata"].get("generation", 0)) + 1
            schema.validate(r, new)
        key = (r.key, namespace, name)
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new == old:
            return old  # a no-op write stores nothing and keeps the resourceVersion, as the real server does
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            return self._remove(r, key, new, old)
        return self._write(r, key, new, old, "MODIFIED")

    def _write(self, r: ResourceDef, key: Key, obj: dict[str, Any], prev: dict[str, Any] | None,
               kind: str) -> dict[str, Any]:
        self._revision += 1
        obj["metadata"]["resourceVersion"] = str(self._revision)
        self._objects[key] = obj
        self._record(StoredEvent(self._revision, kind, r, key[1], obj, prev))
        return obj

    def _remove(self, r: ResourceDef, key: Key, final: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
        """Delete `key`; the DELETED event carries the final state under the deletion's own revision."""
        self._revision += 1
        last = {**final, "metadata": {**final["metadata"], "resourceVersion": str(self._revision)}}
        del self._objects[key]
        self._record(StoredEvent(self._revision, "DELETED", r, key[1], last, old))
        return last

    def _record(self, event: StoredEvent) -> None:
        self._history.append(event)
        while len(self._history) > self._history_size:
            self._compacted = self._history.popleft().revision
        for watcher in self._watchers:
            if watcher.resource is event.resource:
                watcher.queue.put_nowait(event)


def _list_item(obj: dict[str, Any]) -> dict[str, Any]:
    """Items of a real list carry no kind/apiVersion of their own."""
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


def _patch_map(patch: Any, prefix: str) -> dict[str, Any]:
    """A merge patch must decode into a JSON object (worded as Go's decoder)."""
    if patch is None and prefix:
        raise st.bad_request(f"{prefix}unexpected end of JSON input")
    if not isinstance(patch, dict):
        raise st.bad_request(f"{prefix}json: cannot unmarshal {schema.json_type(patch)} into Go value of type "
                             "map[string]interface {}")
    return patch


def _json_patch_operations(patch: Any) -> list[Any]:
    """A JSON patch must decode into a list of objects; what they say is checked when it is applied (422)."""
    if patch is None:
        return []
    if not isinstance(patch, list):
        raise st.bad_request(f"error decoding patch: json: cannot unmarshal {schema.json_type(patch)} into Go value of "
                             "type []handlers.jsonPatchOp")
    for op in patch:
        if op is not None and not isinstance(op, dict):
            raise st.bad_request(f"error decoding patch: json: cannot unmarshal {schema.json_type(op)} into Go "
                                 "value of type handlers.jsonPatchOp")
    return [op or {} for op in patch]


def _name_mismatch(given: Any, name: str) -> st.ApiError:
    return st.bad_request(f"the name of the object ({given or ''}) does not match the name on the URL ({name})")


def _checked_body(r: ResourceDef, body: Any) -> dict[str, Any]:
    """A private copy of a request object, with its kind and apiVersion checked and filled in."""
    if not isinstance(body, dict):
        raise st.bad_request("the body of the request must be a JSON object")
    obj = copy.deepcopy(body)
    if obj.get("apiVersion") not in (None, "", r.api_version):
        raise st.bad_request(f"the API version in the data ({obj['apiVersion']}) does not match the expected API "
                             f"version ({r.api_version})")
    if obj.get("kind") not in (None, "", r.kind):
        raise st.bad_request(f"the kind in the data ({obj['kind']}) does not match the expected kind ({r.kind})")
    obj["apiVersion"], obj["kind"] = r.api_version, r.kind
    meta = obj.get("metadata")
    if meta is None:
        obj["metadata"] = meta = {}
    elif not isinstance(meta, dict):
        raise st.bad_request("metadata must be a JSON object")
    name = str(meta.get("name") or "")
    for map_field in ("labels", "annotations"):  # selectors and clients rely on string maps
        value = meta.get(map_field)
        if value is not None and not (isinstance(value, dict) and
                                      all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())):
            raise st.invalid(r, name, f"metadata.{map_field}", "FieldValueInvalid",
                             "Invalid value: must be a map of strings to strings")
    causes = [cause for key, value in (meta.get("labels") or {}).items() for cause in _label_causes(key, value)]
    if causes:
        raise st.invalid_causes(r, name, causes)
    finalizers = meta.get("finalizers")
    if finalizers is not None and not (isinstance(finalizers, list) and all(isinstance(f, str) for f in finalizers)):
        raise st.invalid(r, name, "metadata.finalizers", "FieldValueInvalid",
                         "Invalid value: must be a list of strings")
    schema.decode(r, obj)
    return obj


_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NAME_HELP = ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
              "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
              "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
_VALUE_HELP = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and "
               "must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', "
               "regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")


def _label_causes(key: str, value: str) -> list[tuple[str, str, str]]:
    """apimachinery's ValidateLabels: the key a qualified name (an optional DNS-subdomain prefix of at most 253
    characters and `/`, then a name of at most 63), the value at most 63 characters of the same alphabet."""
    causes = []
    prefix, _, name = key.rpartition("/")
    key_errors = []
    if "/" in key and not prefix:
        key_errors.append("prefix part must be non-empty")
    elif prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        key_errors.append("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                          "characters, '-' or '.', and must start and end with an alphanumeric character")
    if not name:
        key_errors.append("name part must be non-empty")
    elif len(name) > 63:
        key_errors.append("name part must be no more than 63 characters")
    elif not _QUALIFIED_NAME.match(name):
        key_errors.append(_NAME_HELP)
    for error in key_errors:
        causes.append(("metadata.labels", "FieldValueInvalid", f'Invalid value: "{key}": {error}'))
    if len(value) > 63:
        causes.append(("metadata.labels", "FieldValueInvalid",
                       f'Invalid value: "{value}": must be no more than 63 characters'))
    elif not _LABEL_VALUE.match(value):
        causes.append(("metadata.labels", "FieldValueInvalid", f'Invalid value: "{value}": {_VALUE_HELP}'))
    return causes


def _settle_namespace(r: ResourceDef, namespace: str, meta: dict[str, Any]) -> None:
    """The URL decides the namespace; a different one in the body is an error (cluster-scoped: it is dropped)."""
    given = meta.get("namespace") or ""
    if not r.namespaced:
        meta.pop("namespace", None)
    elif not given:
        meta["namespace"] = namespace
    elif given != namespace:
        raise st.bad_request("the namespace of the provided object does not match the namespace sent on the request")


def _check_name(r: ResourceDef, name: Any) -> None:
    if not isinstance(name, str) or "/" in name or name in (".", ".."):
        raise st.invalid(r, str(name), "metadata.name", "FieldValueInvalid",
                         f'Invalid value: "{name}": may not contain \'/\' or be "." or ".."')
