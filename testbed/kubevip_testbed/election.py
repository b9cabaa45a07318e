"""Candidates as real processes, and the arithmetic that proves two of them never led at once.

Shared by the election tests and `benchmarks/election.py`: a candidate is any command that prints the JSON
leadership events of `python -m generic.election` (ours) or of the tests' official client-go-style elector."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

Interval = tuple[str, float, float]


class Candidate:
    """One campaigning process; its JSON event lines are collected as they arrive."""

    def __init__(self, name: str, argv: Sequence[str]) -> None:
        self.name, self.argv = name, list(argv)
        self.events: list[dict[str, Any]] = []
        self.deaths: list[float] = []  # monotonic instants at which we killed it
        self.process: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    def start(self) -> Candidate:
        self.process = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        threading.Thread(target=self._read, args=(self.process,), daemon=True).start()
        return self

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                self.events.append(event)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """A crash: SIGKILL, nothing is released; whatever it led ends now."""
        if self.alive:
            assert self.process is not None
            self.process.kill()
            self.deaths.append(time.monotonic())
            self.process.wait(5)

    def terminate(self, timeout: float = 5) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self.deaths.append(time.monotonic())
        return code

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.events)

    def _marks(self) -> list[tuple[float, str]]:
        """Leadership changes and kills in time order (a replacement process inherits its predecessor's)."""
        return sorted([(e["mono"], e["event"]) for e in self.snapshot()
                       if e["event"] in ("started_leading", "stopped_leading")]
                      + [(at, "killed") for at in self.deaths])

    def is_leading(self) -> bool:
        marks = self._marks()
        return self.alive and bool(marks) and marks[-1][1] == "started_leading"

    def intervals(self, now: float | None = None) -> list[Interval]:
        """Leadership spans from its own callbacks; a span still open when it was killed ends at the kill."""
        spans, start = [], None
        for at, kind in self._marks():
            if kind == "started_leading":
                start = at
            elif start is not None:
                spans.append((self.name, start, at))
                start = None
        if start is not None:
            spans.append((self.name, start, now if now is not None else time.monotonic()))
        return spans


def overlaps(candidates: Sequence[Candidate]) -> list[tuple[Interval, Interval]]:
    spans = sorted((span for c in candidates for span in c.intervals()), key=lambda span: span[1])
    return [(a, b) for i, a in enumerate(spans) for b in spans[i + 1:] if a[0] != b[0] and b[1] < a[2]]


def leaders(candidates: Sequence[Candidate]) -> list[str]:
    return [c.name for c in candidates if c.is_leading()]


def ours(name: str, kubeconfig: Path, lease: str, timers: str) -> Candidate:
    return Candidate(name, [sys.executable, "-m", "generic.election", "--kubeconfig", str(kubeconfig),
                            "--identity", name, "--lease", lease, "--timers", timers])
