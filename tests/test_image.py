"""The container image is real: the Containerfile builds the very image the manifests name, and that image, run by
podman from the generated static pod in two rig nodes, holds the VIP and hands it over on a failover.

No registry is reachable on the test machines, so the base is a Debian 12 root file system made by mmdebstrap and
imported as `localhost/kube-vip-metal-test-base:bookworm` (kept between runs, by name); the build reaches PyPI through
the host's network with the host's CA bundle and pip settings mounted read-only for the build only. podman gets its
own containers.conf in the test's temporary directory (runc, explicit ulimits: this machine's root lacks
CAP_SYS_RESOURCE and runs hybrid cgroups v1, where podman's defaults fail); the machine's configuration is untouched.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubevip_metal import __version__
from kubevip_metal.manifests import _image
from kubevip_metal.options import BY_NAME
from kubevip_testbed.lab.api_backend import EmulatorBackend
from kubevip_testbed.rig import Rig, prerequisites_missing
from tests.rig_support import require

ROOT = Path(__file__).resolve().parent.parent
CONTAINERFILE = (ROOT / "Containerfile").read_text()
IMAGE = _image(str(BY_NAME["image"].default))  # what `manifest` writes when no --image is given
BASE = "localhost/kube-vip-metal-test-base:bookworm"
VIP = "198.51.100.10"
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
"""
# command -> Debian package; tests/run.sh installs them (catatonit is the pod's infra process)
TOOLS = {"podman": "podman", "runc": "runc", "catatonit": "catatonit", "mmdebstrap": "mmdebstrap",
         "nsenter": "util-linux"}
CAP_NET_ADMIN_AND_NET_RAW = 1 << 12 | 1 << 13


def test_the_containerfile_builds_the_image_the_manifests_name() -> None:
    """The tag README builds, the manifests' default image and the Containerfile's version label agree with the
    package version; the build context leaves the test bed out."""
    assert f"ghcr.io/kube-vip-metal/kube-vip-metal:v{__version__}" == IMAGE
    readme = (ROOT / "README.md").read_text()
    assert f"podman build -t {IMAGE} ." in readme
    assert f"podman build -t {IMAGE} ." in CONTAINERFILE
    assert re.search(r"^ARG VERSION=(\S+)$", CONTAINERFILE, re.M) is not None
    assert re.findall(r"^ARG VERSION=(\S+)$", CONTAINERFILE, re.M) == [__version__]
    assert re.findall(r'^ENTRYPOINT \["kube-vip-metal"\]$', CONTAINERFILE, re.M)
    ignore = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert ignore[0] == "*", "the context is a allow-list"
    assert not [line for line in ignore if "testbed" in line or "tests" in line]


class Podman:
    """podman with this test's containers.conf."""

    def __init__(self, workdir: Path) -> None:
        conf = workdir / "containers.conf"
        conf.write_text(CONTAINERS_CONF)
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf)}

    def run(self, *args: str, netns: str | None = None, check: bool = True, timeout: float = 60,
            stdin: Any = None) -> subprocess.CompletedProcess[str]:
        argv = ["podman", *args]
        if netns is not None:  # hostNetwork then means this namespace (`ip netns exec` would remount /sys)
            argv = ["nsenter", f"--net=/run/netns/{netns}", *argv]
        result = subprocess.run(argv, env=self.env, stdin=stdin, capture_output=True, text=True, timeout=timeout,
                                check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def ensure_base(self) -> None:
        """The registry-free Debian 12 base, made once and then found by name (about 60 s)."""
        if self.run("image", "exists", BASE, check=False).returncode == 0:
            return
        debootstrap = subprocess.Popen(
            ["mmdebstrap", "--quiet", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
             "bookworm", "-"], stdout=subprocess.PIPE)
        try:
            self.run("import", "-", BASE, stdin=debootstrap.stdout, timeout=600)
        finally:
            assert debootstrap.stdout is not None
            debootstrap.stdout.close()
            assert debootstrap.wait(600) == 0, "mmdebstrap failed"

    def build(self) -> None:
        """README's build command, on the test base, with PyPI reachable for the build only. No intermediate
        images are kept (--layers=false), and the image this build replaces is removed, so that runs do not pile
        up untagged images."""
        before = self.run("image", "inspect", "--format={{.Id}}", IMAGE, check=False).stdout.strip()
        mounts = [f"--volume={path}:{path}:ro" for path in ("/etc/ssl/certs/ca-certificates.crt", "/etc/pip.conf")
                  if Path(path).exists()]
        self.run("build", "--layers=false", "--network=host", *mounts, f"--build-arg=BASE={BASE}",
                 "--file", "Containerfile", "--tag", IMAGE, str(ROOT), timeout=900)
        after = self.run("image", "inspect", "--format={{.Id}}", IMAGE).stdout.strip()
        if before and before != after:
            self.run("image", "rm", before, check=False)  # refused while a container uses it: then it stays


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Podman:
    require("container image test", prerequisites_missing() + [
        f"{tool} not found (apt-get install {package})" for tool, package in TOOLS.items()
        if shutil.which(tool) is None])
    engine = Podman(tmp_path_factory.mktemp("podman"))
    started = time.monotonic()
    engine.ensure_base()
    based = time.monotonic()
    engine.build()
    print(f"base {based - started:.0f} s, build {time.monotonic() - based:.0f} s")
    return engine


def _inspect(podman: Podman, *args: str) -> Any:
    return json.loads(podman.run(*args).stdout)[0]


def test_the_image(podman: Podman) -> None:
    """Labels from the package, root with the entry point, ExaBGP importable and runnable, no test bed."""
    image = _inspect(podman, "image", "inspect", IMAGE)
    labels = image["Config"]["Labels"]
    assert labels["org.opencontainers.image.version"] == __version__
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert image["Config"]["Entrypoint"] == ["kube-vip-metal"] and image["Config"]["User"] == "0:0"
    print(f"image {IMAGE}: {image['Size'] / 1e6:.0f} MB")
    probe = ("import importlib.util as u, exabgp, kubevip_metal as k; "
             "assert u.find_spec('kubevip_testbed') is None and u.find_spec('tests') is None; print(k.__version__)")
    result = podman.run("run", "--rm", "--network=none", "--entrypoint=python3", IMAGE, "-c", probe)
    assert result.stdout.strip() == __version__
    exabgp = podman.run("run", "--rm", "--network=none", "--entrypoint=python3", IMAGE, "-m", "exabgp", "version")
    assert "ExaBGP" in exabgp.stdout + exabgp.stderr
    usage = podman.run("run", "--rm", "--network=none", IMAGE, "--help").stdout  # the entry point is the daemon
    assert "manager" in usage and "manifest" in usage


def _static_pod(node: str, pod_name: str, kubeconfig_dir: Path) -> str:
    """The generated static pod for `node`, edited only where podman 4.3's `kube play` differs from the kubelet."""
    argv = [sys.executable, "-m", "kubevip_metal", "manifest", "pod", "--controlplane", "--arp", "--leaderElection",
            "--address", VIP, "--interface", "eth0"]
    env = {key: value for key, value in os.environ.items()
           if not any(key in option.env for option in BY_NAME.values())}
    (pod,) = yaml.safe_load_all(subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout)
    (container,) = pod["spec"]["containers"]
    assert container["image"] == IMAGE
    # 1. a pod name is machine-wide for podman (the kubelet has one node per machine): one pod per rig node
    pod["metadata"]["name"] = pod_name
    # 2. kube play refuses a fieldRef to spec.nodeName ("not valid or not supported"): the value the kubelet would
    #    give, literally
    (nodename,) = [entry for entry in container["env"] if entry["name"] == "vip_nodename"]
    assert nodename.pop("valueFrom") == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    nodename["value"] = node
    # 3. the /etc/kubernetes Directory hostPath (which kube play refuses when it does not exist) is this node's
    #    directory with its admin.conf
    (volume,) = pod["spec"]["volumes"]
    assert volume["hostPath"] == {"path": "/etc/kubernetes", "type": "Directory"}
    volume["hostPath"]["path"] = str(kubeconfig_dir)
    return yaml.safe_dump(pod)


def _wait(what: str, condition: Callable[[], bool], timeout: float, diagnostics: Callable[[], str]) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout:g} s: {what}\n{diagnostics()}")
        time.sleep(0.1)
    return time.monotonic() - started


@pytest.fixture
def cluster(request: pytest.FixtureRequest, podman: Podman, tmp_path: Path) -> Iterator[tuple[Rig, EmulatorBackend]]:
    rig = Rig(nodes=2)
    request.addfinalizer(rig.down)  # last: the pods (their conmon runs in the nodes' namespaces) go first
    rig.up()
    api = EmulatorBackend()
    server = api.start(rig.node_names, rig.listen_socket("router", rig.ipv4("router"), 6443))
    request.addfinalizer(api.stop)
    for node in rig.node_names:
        (tmp_path / node).mkdir()
        api.write_kubeconfig(node, tmp_path / node / "admin.conf", server)
    yield rig, api


def test_the_static_pod_fails_over_between_two_containers(podman: Podman, cluster: tuple[Rig, EmulatorBackend],
                                                          tmp_path: Path, request: pytest.FixtureRequest) -> None:
    rig, api = cluster
    pods = {node: f"kube-vip-{rig.prefix}-{node}" for node in rig.node_names}

    def holders() -> list[str]:
        return [node for node in rig.node_names if VIP in rig.addresses(node)]

    def diagnostics() -> str:
        logs = [f"--- {pod}\n" + podman.run("logs", "--tail=30", f"{pod}-kube-vip", check=False).stderr
                for pod in pods.values()]
        return f"holders {holders()}, lease {api.lease_holder('kube-system', 'plndr-cp-lock')!r}\n" + "\n".join(logs)

    for node, pod in pods.items():
        request.addfinalizer(functools.partial(podman.run, "pod", "rm", "--force", "--time=2", pod, check=False))
        manifest = tmp_path / f"{node}.yaml"
        manifest.write_text(_static_pod(node, pod, tmp_path / node))
        podman.run("kube", "play", str(manifest), netns=rig.ns(node))

    def one_holder_with_the_lease() -> bool:
        found = holders()
        return len(found) == 1 and api.lease_holder("kube-system", "plndr-cp-lock") == found[0]

    took = _wait("one container takes the Lease and the VIP", one_holder_with_the_lease, 60, diagnostics)
    (leader,) = holders()
    (follower,) = [node for node in rig.node_names if node != leader]
    print(f"{leader} holds {VIP} {took:.1f} s after kube play")
    for pod in pods.values():  # exactly NET_ADMIN and NET_RAW, as UID 0, in the manager's process
        status = podman.run("exec", f"{pod}-kube-vip", "cat", "/proc/1/status").stdout
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        assert int(fields["CapEff"], 16) == CAP_NET_ADMIN_AND_NET_RAW == int(fields["CapBnd"], 16)
        assert fields["Uid"].split()[0] == "0"

    stopped = time.monotonic()
    podman.run("pod", "stop", "--time=10", pods[leader], timeout=30)  # SIGTERM, as the kubelet sends
    assert VIP not in rig.addresses(leader), "the VIP outlived its container's stop"
    state = _inspect(podman, "container", "inspect", f"{pods[leader]}-kube-vip")["State"]
    assert state["ExitCode"] == 0, diagnostics()
    _wait(f"{follower} takes the Lease and the VIP", lambda: holders() == [follower] and api.lease_holder(
        "kube-system", "plndr-cp-lock") == follower, 30, diagnostics)
    print(f"failover {leader} -> {follower}: {time.monotonic() - stopped:.1f} s from pod stop")
