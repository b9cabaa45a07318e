"""List, then watch, one kind of object (Services, EndpointSlices) with one thread and one watch for all of them.

The client-go informer pattern, small: a list gives the whole state and a resourceVersion; a watch from that
version gives every change after it. A watch that ends (its timeout, a dropped connection) resumes from the last
version seen, so nothing is missed; a 410 Gone (the version is older than the server keeps) means changes may
have been missed, so the informer lists again and hands over the whole state as a reset. Objects stay raw JSON
dicts: 10,000 Services deserialised into the client's models would cost seconds and megabytes for nothing.

The consumer gets `on_reset(objects)` with everything there is (after every list), and `on_events(events)` with
what happened since, as (type, object) pairs in order; it queues them and applies a burst in one pass on its own
thread (kubevip_metal.services.controller, and the per-Service elections and the node watch).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from typing import Any

import tenacity

from generic.logfmt import get_logger

log = get_logger("generic.informer")

WATCH_SECONDS = 300  # server-side timeout of one watch; it then resumes from the last version seen
LIST_TIMEOUT = 60.0
PAGE = 500  # objects per list page

Obj = dict[str, Any]
Event = tuple[str, Obj]


class Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


class Informer:
    """`list_fn` / `watch_fn`: the client's list call for the kind (e.g. CoreV1Api.list_service_for_all_namespaces,
    or a namespaced one with its namespace bound). Delivered in the informer's own thread."""

    def __init__(self, name: str, list_fn: Callable[..., Any], on_reset: Callable[[list[Obj]], None],
                 on_events: Callable[[list[Event]], None], *, watch_seconds: int = WATCH_SECONDS) -> None:
        self.name, self._list_fn = name, list_fn
        self._on_reset, self._on_events = on_reset, on_events
        self._watch_seconds = watch_seconds
        self._stop = threading.Event()
        self._response: Any = None  # the open watch, closed by close() to end it at once
        self._version: str | None = None
        self.resets = 0  # how many times the whole state was listed (1 + one per 410 or failed resume)
        self._thread = threading.Thread(target=self._run, name=f"informer-{name}", daemon=True)

    def start(self) -> Informer:
        self._thread.start()
        return self

    def close(self, timeout: float = 1.0) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()  # urllib3 2: unblocks the reading thread
        self._thread.join(timeout)

    def _pause(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _run(self) -> None:
        retrying = tenacity.Retrying(
            wait=tenacity.wait_exponential_jitter(multiplier=0.2, max=10.0, jitter=0.2),
            stop=lambda _state: self._stop.is_set(),
            sleep=self._pause,
            retry=tenacity.retry_if_exception_type(Exception),
            reraise=False,
            before_sleep=lambda state: log.warning(
                "informer.retry", kind=self.name, attempt=state.attempt_number,
                error=_describe(state.outcome.exception() if state.outcome else None)),
        )
        while not self._stop.is_set():
            try:
                retrying(self._cycle)
            except tenacity.RetryError:
                return

    def _cycle(self) -> None:
        """List if there is no version to resume from, then watch until the watch ends."""
        if self._version is None:
            self._relist()
        try:
            self._watch()
        except Expired:
            log.info("informer.expired", kind=self.name, version=self._version, effect="listing again")
            self._version = None
            return
        self._stop.wait(0.05)  # a server that ends every watch at once must not make this spin

    def _relist(self) -> None:
        items: list[Obj] = []
        token: str | None = None
        version = ""
        while True:
            kwargs: dict[str, Any] = {"limit": PAGE, "_preload_content": False, "_request_timeout": LIST_TIMEOUT}
            if token:
                kwargs["_continue"] = token
            response = self._list_fn(**kwargs)
            page = json.loads(response.data)
            items.extend(page.get("items") or [])
            metadata = page.get("metadata") or {}
            version = str(metadata.get("resourceVersion") or version)
            token = metadata.get("continue") or None
            if not token:
                break
        kind = (page.get("kind") or "List").removesuffix("List")
        for item in items:  # a list's items carry no kind; the consumer may want it
            item.setdefault("kind", kind)
        self._version = version
        self.resets += 1
        log.info("informer.listed", kind=self.name, objects=len(items), version=version)
        self._on_reset(items)

    def _watch(self) -> None:
        """One watch from the last version, read line by line as raw JSON events (the client's Watch helper
        cannot hand over an ERROR event without deserialising it: it raises KeyError on the 410 we need)."""
        from kubernetes.client.exceptions import ApiException
        from kubernetes.watch import watch

        iter_resp_lines: Any = watch.iter_resp_lines  # untyped in the client

        try:
            response = self._list_fn(watch=True, resource_version=self._version, allow_watch_bookmarks=True,
                                     timeout_seconds=self._watch_seconds, _preload_content=False,
                                     _request_timeout=self._watch_seconds + 10)
        except ApiException as exc:
            if exc.status == 410:
                raise Expired() from None
            raise
        self._response = response
        try:
            for line in iter_resp_lines(response):
                if self._stop.is_set():
                    return
                if not line or not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Expired()
                    raise RuntimeError(f"watch error: {obj.get('message', obj)}")
                version = (obj.get("metadata") or {}).get("resourceVersion")
                if version:
                    self._version = str(version)
                if kind != "BOOKMARK":
                    self._on_events([(str(kind), obj)])  # the consumer coalesces on its own thread
        finally:
            self._response = None
            response.close()
            response.release_conn()


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown"
    status = getattr(exc, "status", None)
    return f"HTTP {status}" if status else f"{type(exc).__name__}: {exc}"[:200]

