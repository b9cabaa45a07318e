"""Throw-away certificates and keys for a test kube-apiserver, made with the openssl command line tool.

One CA signs the serving certificate (valid for loopback, the rig's router and the in-cluster names), and a
separate RSA key pair signs ServiceAccount tokens. Everything lives in one directory that dies with the test run.
"""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DNS_NAMES = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc")
DAYS = "2"


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    sa_private: Path
    sa_public: Path


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if result.returncode:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def make_pki(directory: Path, addresses: Sequence[str]) -> Pki:
    """A CA, a serving certificate for `addresses` (IPs) plus DNS_NAMES, and a ServiceAccount key pair."""
    directory.mkdir(parents=True, exist_ok=True)
    sans = [f"IP:{ipaddress.ip_address(a)}" for a in dict.fromkeys(addresses)] + [f"DNS:{n}" for n in DNS_NAMES]
    (directory / "serving.cnf").write_text(f"subjectAltName={','.join(sans)}\nextendedKeyUsage=serverAuth\n")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", DAYS,
             "-subj", "/CN=kube-vip-metal-test-ca", cwd=directory)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "serving.key", "-out", "serving.csr",
             "-subj", "/CN=kube-apiserver", cwd=directory)
    _openssl("x509", "-req", "-in", "serving.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "serving.crt", "-days", DAYS, "-extfile", "serving.cnf", cwd=directory)
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=directory)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=directory)
    for key in ("ca.key", "serving.key", "sa.key"):
        (directory / key).chmod(0o600)
    return Pki(directory / "ca.crt", directory / "ca.key", directory / "serving.crt", directory / "serving.key",
               directory / "sa.key", directory / "sa.pub")
