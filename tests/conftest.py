"""Shared helpers: run the real console script in a subprocess, as an operator would; election candidates that
are killed at the end of a test."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence

import pytest

from kubevip_testbed.election import Candidate

pytest_plugins = ["tests.rig_support", "tests.metal_support", "tests.realapi_support"]

CLI = [sys.executable, "-m", "kubevip_metal"]


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without any kube-vip variable, plus `extra`."""
    from kubevip_metal.options import OPTIONS

    names = {name for option in OPTIONS for name in option.env}
    env = {k: v for k, v in os.environ.items() if k not in names}
    env.update(extra or {})
    return env


def run_cli(args: Sequence[str], env: Mapping[str, str] | None = None,
            timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=clean_env(env), timeout=timeout)


@pytest.fixture
def candidates() -> Iterator[list[Candidate]]:
    """Election candidates a test starts (append them); every one still running is killed at the end."""
    started: list[Candidate] = []
    yield started
    for candidate in started:
        candidate.kill()


@pytest.fixture
def cli() -> object:
    return run_cli
