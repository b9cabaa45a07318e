"""A real kube-apiserver for tests and benchmarks: etcd on loopback and kube-apiserver, both built by `build.sh` from
the Go module proxy, generated certificates, a token file with an admin and one identity per node.

No controller-manager or scheduler runs: what the daemon needs from Kubernetes is the API server itself (Leases,
Services and their status, Nodes, watches, RBAC, admission), and everything else would only slow the tests down.
Both processes run in their own session and are stopped by PID (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from kubevip_testbed.emulators.kubeapi import write_kubeconfig
from kubevip_testbed.peers.pki import Pki, make_pki

PEERS_DIR = Path(os.environ.get("KVM_PEERS_DIR", "/var/cache/kube-vip-metal/peers"))
K8S_VERSION = os.environ.get("K8S_VERSION", "v1.35.4")
ETCD_VERSION = os.environ.get("ETCD_VERSION", "v3.6.16")
ADMIN_TOKEN = "admin-token-for-tests-only"
# kubeadm >= 1.29's admin.conf identity: group kubeadm:cluster-admins, which kubeadm binds to cluster-admin only at
# the end of `kubeadm init` (until then only super-admin.conf, in system:masters, works)
KUBEADM_ADMIN_TOKEN = "kubeadm-admin-token-for-tests-only"
RIG_ROUTER = ("198.51.100.1", "2001:db8:100::1")  # the rig's router, where the fault proxy listens for the nodes


def apiserver_binary() -> Path:
    return PEERS_DIR / "bin" / f"kube-apiserver-{K8S_VERSION}"


def etcd_binary() -> Path:
    return PEERS_DIR / "bin" / f"etcd-{ETCD_VERSION}"


def missing() -> list[str]:
    """What this machine lacks to run a real API server (empty when it can)."""
    reasons = []
    for binary in (etcd_binary(), apiserver_binary()):
        if not os.access(binary, os.X_OK):
            reasons.append(f"{binary} not built (run tests/peers/build.sh apiserver)")
    if shutil.which("openssl") is None:
        reasons.append("openssl not installed (Debian package openssl)")
    return reasons


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def node_token(node: str) -> str:
    return f"node-token-{node}-for-tests-only"


class RealApiServer:
    """etcd + kube-apiserver on 127.0.0.1; `start()` returns once /readyz answers ok. A context manager."""

    def __init__(self, workdir: Path, nodes: Iterable[str] = (), *,
                 addresses: Sequence[str] = ("127.0.0.1", "10.96.0.1", *RIG_ROUTER)) -> None:
        self.workdir = workdir
        self.nodes = list(nodes)
        self.addresses = list(addresses)
        self.port = 0
        self.etcd_url = ""  # etcd's client URL (its JSON gateway too), once started
        self.pki: Pki | None = None
        self.timings: dict[str, float] = {}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    # -- lifecycle

    def __enter__(self) -> RealApiServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self, timeout: float = 90.0) -> RealApiServer:
        began = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pki = make_pki(self.workdir / "pki", self.addresses)
        tokens = self.workdir / "tokens.csv"
        lines = [f'{ADMIN_TOKEN},admin,admin,"system:masters"',
                 f'{KUBEADM_ADMIN_TOKEN},kubernetes-admin,kubernetes-admin,"kubeadm:cluster-admins"']
        lines += [f'{node_token(n)},system:node:{n},node-{n},"system:nodes"' for n in self.nodes]
        tokens.write_text("\n".join(lines) + "\n")
        tokens.chmod(0o600)
        try:
            etcd_url = self._start_etcd()
            self._start_apiserver(etcd_url, tokens)
            self._wait_ready(began + timeout)
        except BaseException:
            self.stop()
            raise
        self.timings["start"] = time.monotonic() - began
        return self

    def _spawn(self, name: str, argv: Sequence[str]) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        try:
            self._procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                 start_new_session=True)
        finally:
            log.close()

    def _start_etcd(self) -> str:
        shm = Path("/dev/shm")
        data = Path(tempfile.mkdtemp(prefix="kvm-etcd-", dir=shm if shm.is_dir() else self.workdir))
        self._etcd_data = data
        client, peer = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
        self._spawn("etcd", [str(etcd_binary()), "--name", "test", "--data-dir", str(data),
                             "--listen-client-urls", client, "--advertise-client-urls", client,
                             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                             "--initial-cluster", f"test={peer}", "--log-level", "warn", "--unsafe-no-fsync"])
        self.etcd_url = client
        return client

    def _start_apiserver(self, etcd_url: str, tokens: Path) -> None:
        assert self.pki is not None
        self.port = free_port()
        certs = self.workdir / "certs"
        self._spawn("kube-apiserver", [
            str(apiserver_binary()), f"--etcd-servers={etcd_url}", "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1", f"--secure-port={self.port}",
            f"--tls-cert-file={self.pki.serving_cert}", f"--tls-private-key-file={self.pki.serving_key}",
            f"--client-ca-file={self.pki.ca_cert}", "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={self.pki.sa_public}",
            f"--service-account-signing-key-file={self.pki.sa_private}", f"--token-auth-file={tokens}",
            "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
            "--service-cluster-ip-range=10.96.0.0/24", f"--cert-dir={certs}", "--profiling=false",
            "--v=1"])

    def _wait_ready(self, deadline: float) -> None:
        assert self.pki is not None
        last = ""
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}: {self.log_tail(name)}")
            try:
                answer = requests.get(f"{self.url}/readyz", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                                      verify=str(self.pki.ca_cert), timeout=2)
                if answer.status_code == 200:
                    return
                last = f"{answer.status_code} {answer.text[-300:]}"
            except requests.RequestException as exc:
                last = str(exc)
            time.sleep(0.2)
        raise TimeoutError(f"kube-apiserver not ready: {last}; log: {self.log_tail('kube-apiserver')}")

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.workdir / f"{name}.log"
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the API server, then etcd; SIGKILL what is still alive after `grace`."""
        for name in ("kube-apiserver", "etcd"):
            proc = self._procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        data = getattr(self, "_etcd_data", None)
        if data is not None:
            shutil.rmtree(data, ignore_errors=True)

    # -- clients

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_cert(self) -> Path:
        assert self.pki is not None
        return self.pki.ca_cert

    def client(self, token: str = ADMIN_TOKEN, server: str | None = None) -> Any:
        """An official `kubernetes.client.ApiClient` (admin by default), retries off as in the daemon."""
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = server or self.url
        configuration.ssl_ca_cert = str(self.ca_cert)
        configuration.api_key = {"authorization": f"Bearer {token}"}
        configuration.retries = False
        return client.ApiClient(configuration)

    def write_kubeconfig(self, path: Path, token: str, server: str | None = None) -> Path:
        """A kubeconfig for `token` with the CA inlined (usable from any namespace)."""
        return write_kubeconfig(path, server or self.url, token, ca_cert=self.ca_cert)

    def service_account_token(self, namespace: str, name: str, seconds: int = 3600) -> str:
        """A bound token of ServiceAccount `namespace/name` (TokenRequest), as the kubelet gives a pod."""
        from kubernetes import client

        with self.client() as api:
            request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
                audiences=["https://kubernetes.default.svc"], expiration_seconds=seconds))
            answer = client.CoreV1Api(api).create_namespaced_service_account_token(name, namespace, request)
        assert answer.status is not None
        return str(answer.status.token)
