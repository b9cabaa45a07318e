"""Secrets (Metal API key, BGP passwords) never reach a log line, an error, a repr, --help or a Pod spec."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from generic.secret import Secret
from kubevip_metal.cli import parse_command_line
from kubevip_metal.config import build_config, describe
from tests.conftest import CLI, clean_env, run_cli

TOKEN = "tok3n-0123456789"
PASSWORDS = ["s3cr3t-a", "s3cr3t:b,c", "s3cr3t-d", "s3cr3t-file"]
SECRETS = [TOKEN, *PASSWORDS, "ccm-k3y"]


def _assert_clean(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text
    for fragment in ("s3cr3t", "tok3n", "k3y"):
        assert fragment not in text


def test_manager_run_with_every_secret_prints_none(tmp_path: Path) -> None:
    pass_file = tmp_path / "peerpass"
    pass_file.write_text(PASSWORDS[3])
    provider = tmp_path / "cloud-sa.json"
    provider.write_text('{"apiKey": "ccm-k3y", "projectID": "7c1b2f3a-0000-4000-8000-000000000001"}')
    # every secret at once, with an option this version refuses (etcd election): the refusal shows none of them (and the
    # Metal API URL is a dead loopback port, so nothing could leave the machine even if it ran)
    args = ["manager", "--controlplane", "--services", "--bgp", "--metal", "--provider-config", str(provider),
            "--address", "cp.example.com", "--etcdEndpoints", "127.0.0.1:2379", "--metalAPIURL", "http://127.0.0.1:9/metal/v1",
            "--metalMetadataURL", "http://127.0.0.1:9/metadata",
            "--bgppeers", '198.51.100.1:65001:s3cr3t-a:true,[2001:db8::1]:65002:"s3cr3t:b,c":false',
            "--peerAddress", "198.51.100.3", "--peerPassFile", str(pass_file), "--log-level", "debug"]
    refused = run_cli(args, {"PACKET_AUTH_TOKEN": TOKEN, "bgp_peerpass": ""})
    assert refused.returncode == 2 and "not available yet" in refused.stderr, refused.stderr
    _assert_clean(refused.stdout + refused.stderr)
    # the Metal token through a real run that retries (no Metal API, no kubeconfig) and logs everything at debug;
    # SIGTERM ends it at once even while the Metal API is being retried
    args = ["manager", "--controlplane", "--metal", "--address", "192.0.2.10", "--provider-config", str(provider),
            "--metalAPIURL", "http://127.0.0.1:9/metal/v1", "--metalMetadataURL", "http://127.0.0.1:9/metadata",
            "--k8sConfigPath", str(tmp_path / "none.conf"),
            "--log-level", "debug"]
    for log_format in ("text", "json"):
        process = subprocess.Popen([*CLI, *args, "--log-format", log_format], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, env=clean_env({"PACKET_AUTH_TOKEN": TOKEN}))
        assert process.stderr is not None
        seen = [process.stderr.readline() for _ in range(3)]
        while "metal.retry" not in seen[-1] and seen[-1]:  # the Metal API is being retried: stop it there
            seen.append(process.stderr.readline())
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)
        err = "".join(seen) + err
        assert process.returncode == 0, err
        assert time.monotonic() - sent < 2.0
        assert "config.effective" in err and "***" in err and "metal.retry" in err, err
        _assert_clean(out + err)


def test_errors_with_secrets_do_not_show_them() -> None:
    cases = [
        ["manager", "--services", "--bgp", "--bgppeers", "198.51.100.1:65001:s3cr3t-a:notbool"],
        ["manager", "--services", "--bgp", "--bgppeers", "198.51.100.1:s3cr3t-a"],
        ["manager", "--services", "--bgp", "--peerPass", "s3cr3t-a"],
        ["manifest", "pod", "--services", "--bgp", "--peerAddress", "198.51.100.1", "--peerPass", "s3cr3t-a"],
        ["manifest", "pod", "--controlplane", "--metal", "--address", "192.0.2.10", "--metalKey", TOKEN,
         "--metalProject", "p"],
    ]
    for args in cases:
        result = run_cli(args)
        assert result.returncode == 2
        _assert_clean(result.stdout + result.stderr)


def test_help_shows_no_secret_even_from_the_environment() -> None:
    for command in (["manager"], ["manifest", "pod"], ["manifest", "daemonset"]):
        result = run_cli([*command, "--help"], {"PACKET_AUTH_TOKEN": TOKEN, "bgp_peerpass": PASSWORDS[0]})
        assert result.returncode == 0
        assert "Equinix Metal" in result.stdout and "BGP config" in result.stdout
        _assert_clean(result.stdout + result.stderr)


def test_repr_and_describe_mask_secrets() -> None:
    command, given = parse_command_line(["manager", "--services", "--bgp", "--metal", "--metalProject", "p",
                                         "--metalKey", TOKEN, "--bgppeers", "198.51.100.1:65001:s3cr3t-a"])
    assert command is not None
    config = build_config(given, command, hostname=lambda: "n1", refuse_unavailable=False)
    _assert_clean(repr(config) + str(config) + f"{config}" + repr(dict(describe(config))))
    assert repr(Secret("x")) == "Secret('***')" and str(Secret("x")) == "***"


def test_daemonset_keeps_secrets_in_a_secret_object() -> None:
    result = run_cli(["manifest", "daemonset", "--services", "--bgp", "--bgppeers",
                      "198.51.100.1:65001:s3cr3t:true,[2001:db8::1]:65002::false", "--metal", "--metalKey", TOKEN,
                      "--metalProject", "p"])
    assert result.returncode == 0, result.stderr
    docs = list(yaml.safe_load_all(result.stdout))
    kinds = [doc["kind"] for doc in docs]
    assert kinds == ["Secret", "DaemonSet"]
    secret, daemonset = docs
    assert "s3cr3t" in secret["stringData"]["bgp_peers"] and secret["stringData"]["PACKET_AUTH_TOKEN"] == TOKEN
    spec_text = yaml.safe_dump(daemonset)
    assert "s3cr3t" not in spec_text and TOKEN not in spec_text
    env = {e["name"]: e for e in daemonset["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["bgp_peers"]["valueFrom"]["secretKeyRef"] == {"name": "kube-vip-secrets", "key": "bgp_peers"}


def test_secret_cannot_be_pickled() -> None:
    import pickle

    try:
        pickle.dumps(Secret("x"))
    except TypeError:
        return
    raise AssertionError("a Secret was pickled")


def test_python_m_entry_point() -> None:
    result = subprocess.run([sys.executable, "-m", "kubevip_metal", "version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("kube-vip-metal ")
