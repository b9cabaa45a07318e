"""`pip install .` puts the daemon on a node and nothing else: no test bed (emulators, rig, lab), no aiohttp, no
openapi-core. The test bed is its own distribution (`testbed/`), and `kube-vip-metal lab` without it says in one
line what to install.

The wheels are built from a copy of the checkout, as pip builds them for `pip install .` and `pip install
./testbed` (a few seconds: pip's isolated build environment comes from its cache)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEST_BED_ONLY = ("aiohttp", "openapi-core", "openapi_core", "kube-vip-metal-testbed")
DAEMON_MODULES = ["kubevip_metal.cli", "kubevip_metal.manager", "kubevip_metal.config", "kubevip_metal.manifests"]

# `kube-vip-metal lab` with one top-level module made unimportable, as on a machine that lacks it
WITHOUT = """
import sys
from importlib.abc import MetaPathFinder

class Without(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == sys.argv[1]:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Without())
from kubevip_metal.cli import main
raise SystemExit(main(["lab"]))
"""


def _wheel(name: str, wheels: dict[str, zipfile.ZipFile]) -> zipfile.ZipFile:
    return next(wheel for file, wheel in wheels.items() if file.startswith(name + "-"))


def _requires(wheel: zipfile.ZipFile) -> list[str]:
    metadata = next(name for name in wheel.namelist() if name.endswith(".dist-info/METADATA"))
    return Parser().parsestr(wheel.read(metadata).decode()).get_all("Requires-Dist") or []


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, zipfile.ZipFile]:
    """The two wheels pip builds from this checkout, by file name."""
    source = tmp_path_factory.mktemp("checkout") / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"))
    out = source.parent / "wheels"
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                             "--disable-pip-version-check", "-w", str(out), str(source), str(source / "testbed")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return {path.name: zipfile.ZipFile(path) for path in sorted(out.glob("*.whl"))}


def test_the_daemon_wheel_holds_the_daemon_only(wheels: dict[str, zipfile.ZipFile]) -> None:
    daemon = _wheel("kube_vip_metal", wheels)
    packages = {name.split("/")[0] for name in daemon.namelist() if not name.split("/")[0].endswith(".dist-info")}
    assert packages == {"kubevip_metal", "generic", "manifests"}
    assert not [name for name in daemon.namelist()
                if any(part in name for part in ("emulators", "/rig/", "/lab/", "metal_spec", "testbed"))]
    assert any(name.startswith("manifests/") and name.endswith(".yaml") for name in daemon.namelist())
    runtime = [req for req in _requires(daemon) if "extra ==" not in req]
    assert runtime and not [req for req in _requires(daemon) if req.lower().startswith(TEST_BED_ONLY)]


def test_the_test_bed_wheel_holds_the_test_bed_and_its_data(wheels: dict[str, zipfile.ZipFile]) -> None:
    testbed = _wheel("kube_vip_metal_testbed", wheels)
    names = testbed.namelist()
    packages = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert packages == {"kubevip_testbed"}
    for module in ("emulators/kubeapi.py", "emulators/metalapi.py", "rig/rig.py", "lab/run.py", "lab/probe.py",
                   "peers/apiserver.py", "emulators/metal_spec/openapi3.patched.yaml", "py.typed"):
        assert f"kubevip_testbed/{module}" in names, module
    requires = {req.split(">")[0].split("=")[0].strip() for req in _requires(testbed)}
    assert requires == {"kube-vip-metal", "aiohttp", "openapi-core"}


def test_the_daemon_imports_nothing_of_the_test_bed() -> None:
    code = (f"import sys\nimport {', '.join(DAEMON_MODULES)}\nimport json\n"
            "print(json.dumps(sorted(name for name in sys.modules if name.split('.')[0] in "
            "('aiohttp', 'openapi_core', 'kubevip_testbed'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd="/")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_no_daemon_module_imports_the_test_bed_but_the_lab_command() -> None:
    """The one way in is `kube-vip-metal lab` (cli.py's _run_lab), which says what to install when it is absent."""
    importing = re.compile(r"^\s*(from|import)\s+kubevip_testbed\b", re.M)
    found = sorted(str(path.relative_to(ROOT)) for package in ("kubevip_metal", "generic", "manifests")
                   for path in (ROOT / package).rglob("*.py") if importing.search(path.read_text()))
    assert found == ["kubevip_metal/cli.py"]


@pytest.mark.parametrize(("absent", "says"), [
    ("kubevip_testbed", "kube-vip-metal: error: lab: the test bed is not installed (pip install ./testbed from a "
                        "checkout)"),
    ("aiohttp", "kube-vip-metal: error: lab: the test bed lacks aiohttp (pip install ./testbed from a checkout)"),
])
def test_lab_without_the_test_bed_says_what_to_install(absent: str, says: str) -> None:
    result = subprocess.run([sys.executable, "-c", WITHOUT, absent], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr, result.stdout) == (2, says + "\n", "")
