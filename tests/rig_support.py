"""Pytest fixtures for tests on the namespace rig (registered by `pytest_plugins` in tests/conftest.py).

A machine that cannot run the rig skips these tests on a workstation but fails them in CI (`CI` set), so a
missing install step shows up as red instead of as silently skipped coverage.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from kubevip_testbed.rig import Rig, prerequisites_missing


def require(what: str, missing: list[str]) -> None:
    """Skip (or, with CI set, fail) the calling test when `missing` names anything `what` needs."""
    if not missing:
        return
    reason = f"{what} unavailable: " + "; ".join(missing)
    if os.environ.get("CI"):
        pytest.fail(reason + " (CI is set, so this fails instead of skipping)", pytrace=False)
    pytest.skip(reason)


def require_rig() -> None:
    """Skip (or, with CI set, fail) the calling test when the machine cannot run a rig."""
    require("namespace rig", prerequisites_missing())


def _rig(request: pytest.FixtureRequest, nodes: int) -> Rig:
    require_rig()
    rig = Rig(nodes=nodes)
    request.addfinalizer(rig.down)  # registered before up(): runs on failure, error or interrupt
    return rig.up()


@pytest.fixture
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    """A fresh three-node rig per test."""
    yield _rig(request, 3)


@pytest.fixture(scope="module")
def rig_module(request: pytest.FixtureRequest) -> Iterator[Rig]:
    """One three-node rig shared by a module's tests, for tests that leave it as they found it."""
    yield _rig(request, 3)
