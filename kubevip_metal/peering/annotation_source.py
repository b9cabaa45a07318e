"""The node-annotation source of BGP settings (`--annotations PREFIX`): the Node read by name, then watched.

At start the manager waits (NotReady, retried with backoff, so the log says what is missing at a modest rate)
until the annotations give at least one complete peer; the CCM writes them late. Afterwards each change is
parsed; a change that removes them, or a malformed value, keeps the last good settings (the sessions stay up)
and is reported once per distinct problem, naming the annotation key, never a password.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from generic.logfmt import get_logger
from kubevip_metal.errors import NotReady
from kubevip_metal.peering.annotations import (
    AnnotationError,
    AnnotationsMissing,
    ParsedAnnotations,
    parse_annotations_full,
)
from kubevip_metal.peering.node_watch import NodeWatch, read_annotations
from kubevip_metal.peering.settings import Discovered

log = get_logger("kubevip_metal.peering.annotations")

Parse = Callable[[Mapping[str, str], str], ParsedAnnotations]


class AnnotationSource:
    name = "annotations"

    def __init__(self, api: Any, node: str, prefix: str, *, parse: Parse = parse_annotations_full,
                 read: Callable[[Any, str], Mapping[str, str]] = read_annotations) -> None:
        self._api, self.node, self.prefix = api, node, prefix
        self._parse, self._read = parse, read
        self._watch: NodeWatch | None = None
        self._on_change: Callable[[Discovered], None] | None = None
        self._problem: str | None = None  # the last problem reported, so each is said once
        self._last: Discovered | None = None
        self._notes: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def first(self) -> Discovered:
        try:
            annotations = self._read(self._api, self.node)
        except Exception as exc:  # 404 before the node registered, or the API server not answering yet
            status = getattr(exc, "status", None)
            raise NotReady(f"BGP annotations: cannot read node {self.node!r}: "
                           + (f"HTTP {status}" if status else type(exc).__name__)) from None
        try:
            found = self._interpret(annotations)
        except AnnotationsMissing as exc:
            raise NotReady(f"waiting for the BGP annotations of node {self.node!r}: {exc}") from None
        except AnnotationError as exc:
            raise NotReady(f"BGP annotations of node {self.node!r}: {exc}") from None
        self._last = found
        return found

    def _interpret(self, annotations: Mapping[str, str]) -> Discovered:
        parsed = self._parse(annotations, self.prefix)
        if parsed.notes != self._notes:
            self._notes = parsed.notes
            for note in parsed.notes:
                log.warning("bgp.annotations_note", node=self.node, layout=parsed.layout.value, note=note)
        return parsed.discovered

    def start(self, on_change: Callable[[Discovered], None]) -> None:
        self._on_change = on_change
        self._watch = NodeWatch(self._api, self.node, self._seen).start()

    def refresh(self) -> None:
        """Nothing to do: the watch already delivers every change."""

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()

    def _report(self, problem: str, level: str) -> None:
        if problem != self._problem:
            self._problem = problem
            getattr(log, level)("bgp.annotations_problem", node=self.node, problem=problem,
                                effect="keeping the last good BGP settings")

    def _seen(self, annotations: Mapping[str, str] | None) -> None:
        with self._lock:
            if annotations is None:
                self._report("the node was deleted", "warning")
                return
            try:
                found = self._interpret(annotations)
            except AnnotationsMissing as exc:
                self._report(f"annotations missing: {exc}", "warning")
                return
            except AnnotationError as exc:
                self._report(str(exc), "error")
                return
            if self._problem is not None:
                log.info("bgp.annotations_good_again", node=self.node)
                self._problem = None
            if found == self._last:
                return
            self._last = found
            callback = self._on_change
        if callback is not None:
            callback(found)
