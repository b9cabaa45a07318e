"""kube-vip's settings that kube-vip-metal does not have are recognised, refused or warned about by name, and a
kube-vip v0.8.10 Equinix Metal manifest moved over either starts or fails with one line saying what to change."""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from kubevip_metal.kubevip_compat import (
    BY_ENV,
    BY_FLAG,
    FOREIGN,
    MASK,
    Disposition,
    ForeignOption,
    scan_environment,
    scan_flags,
    shown_value,
    split_flags,
)
from kubevip_metal.options import OPTIONS
from tests.conftest import CLI, clean_env

NAMES_FILE = Path(__file__).parent / "data" / "kubevip_names.txt"
PREFIX = "kube-vip-metal: error: "


def _ours() -> set[str]:
    return {name for option in OPTIONS for name in (*option.flags, *option.env)}


def _kubevip_names() -> list[tuple[str, str, tuple[str, ...]]]:
    rows = []
    for line in NAMES_FILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            kind, name, *revisions = line.split()
            rows.append((kind, name, tuple(revisions)))
    return rows


# (a) the table ----------------------------------------------------------------------------------------------------

def test_no_foreign_name_is_one_of_ours_and_none_is_listed_twice() -> None:
    names = [name for option in FOREIGN for name in option.names]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    assert not set(names) & _ours()
    assert all(f.startswith("-") for o in FOREIGN for f in o.flags)
    assert not any(e.startswith("-") for o in FOREIGN for e in o.env)
    assert all(o.flags or o.env for o in FOREIGN)


def test_every_entry_has_a_one_line_reason_that_says_what_to_do() -> None:
    actions = ("remove it", "set it to false", "instead", "pass them")
    for option in FOREIGN:
        assert "\n" not in option.reason and option.reason.isprintable(), option.names
        assert any(action in option.reason for action in actions), option.names
        assert "" in option.off_values and all(v == v.lower() for v in option.off_values), option.names
        if option.disposition is Disposition.REFUSE:
            assert "kube-vip-metal" in option.reason, option.names
        if option.boolean and option.disposition is Disposition.REFUSE:
            assert "true" not in option.off_values, option.names


# (b) complete against kube-vip's own sources ----------------------------------------------------------------------

def test_names_file_covers_both_revisions() -> None:
    header = NAMES_FILE.read_text()
    assert "3272bc1f8b3a44fd92cc007cb691093cb3f63f6d" in header and "HEAD" in header
    rows = _kubevip_names()
    for revision in ("v0.8.10", "HEAD"):
        assert sum(revision in revs for _, _, revs in rows) > 140, revision
    assert {kind for kind, _, _ in rows} == {"env", "flag"}


def test_every_kubevip_name_is_ours_or_in_the_foreign_table() -> None:
    ours = _ours()
    missing = [f"{kind} {name}" for kind, name, _ in _kubevip_names()
               if name not in ours and name not in (BY_FLAG if kind == "flag" else BY_ENV)]
    assert not missing, f"kube-vip names neither in options.OPTIONS nor in kubevip_compat.FOREIGN: {missing}"


def test_the_foreign_table_invents_no_names() -> None:
    listed = {name for _, name, _ in _kubevip_names()}
    assert not {name for option in FOREIGN for name in option.names} - listed


# (c) findings -----------------------------------------------------------------------------------------------------

def _off_samples(option: ForeignOption) -> set[str]:
    return {variant for value in option.off_values for variant in (value, value.upper(), value.capitalize())}


def test_unset_and_off_values_give_no_finding() -> None:
    assert scan_environment({}) == [] and scan_flags({}) == []
    for option in FOREIGN:
        for value in _off_samples(option):
            assert scan_environment({name: value for name in option.env}) == [], (option.env, value)
            assert scan_flags({flag: value for flag in option.flags}) == [], (option.flags, value)


def test_routing_table_mode_is_refused_in_one_line_naming_the_variable() -> None:
    findings = scan_environment({"vip_routingtable": "true", "PATH": "/usr/bin", "address": "192.0.2.10"})
    assert len(findings) == 1
    finding = findings[0]
    assert (finding.source, finding.value, finding.disposition) == ("vip_routingtable", "true", Disposition.REFUSE)
    assert finding.message.startswith("vip_routingtable=true: kube-vip's routing-table mode is not available in "
                                      "kube-vip-metal; use --bgp")
    assert "\n" not in finding.message


def test_every_refused_boolean_is_refused_when_on() -> None:
    for option in FOREIGN:
        if not (option.boolean and option.disposition is Disposition.REFUSE):
            continue
        for value in ("true", "1", "True"):
            for finding in [*scan_environment({n: value for n in option.env}),
                            *scan_flags({f: value for f in option.flags})]:
                assert finding.disposition is Disposition.REFUSE
                assert finding.message.startswith(f"{finding.source}={value}: ")
            assert len(scan_environment({n: value for n in option.env})) == len(option.env)


def test_a_value_other_than_kubevips_default_is_reported() -> None:
    [finding] = scan_environment({"vip_routingtableid": "200"})
    assert finding.disposition is Disposition.WARN and finding.message.startswith("vip_routingtableid=200: only used")
    assert scan_environment({"vip_routingtableid": "198"}) == []
    [flag] = scan_flags({"--lbPort": "8443"})
    assert flag.source == "--lbPort" and flag.disposition is Disposition.WARN


def test_unused_kubevip_variables_give_a_warning() -> None:
    [finding] = scan_environment({"vip_singlenode": "true"})
    assert finding.disposition is Disposition.WARN
    assert finding.message == "vip_singlenode=true: parsed but never used by kube-vip itself; remove it"
    [skip_dad] = scan_environment({"vip_skipdad": "true"})
    assert skip_dad.disposition is Disposition.WARN and "NODAD" in skip_dad.message


def test_names_we_have_under_another_name_point_to_ours() -> None:
    [router] = scan_environment({"bgp_routerinterface": "bond0"})
    assert "--bgpRouterID / bgp_routerid" in router.message
    [debug] = scan_environment({"PACKNGO_DEBUG": "1"})
    assert "--log-level debug" in debug.message
    [detect] = scan_flags({"--autodetectcp": "true"})
    assert "--kubernetesAddr / kubernetes_addr" in detect.message


def test_secrets_and_controls_are_not_printed() -> None:
    [finding] = scan_environment({"zebra_url": "https://admin:hunter2@10.0.0.1:6443/zserv"})
    assert "hunter2" not in finding.message and f"admin:{MASK}@" in finding.message
    [token_user] = scan_flags({"--zebraUrl": "https://ghp_abc123@10.0.0.1/zserv"})
    assert "ghp_abc123" not in token_user.message
    assert shown_value("PACKET_AUTH_TOKEN", "abc") == MASK
    assert shown_value("bgp_peerpass", "abc") == MASK
    [multiline] = scan_environment({"svc_namespace": "a\nb\x1b[2J"})
    assert "\n" not in multiline.message and "\x1b" not in multiline.message and multiline.message.isprintable()
    assert len(shown_value("svc_namespace", "x" * 500)) <= 80


def test_findings_are_sorted_refusals_first_then_by_name() -> None:
    environ = {"vip_startleader": "true", "vip_wireguard": "true", "lb_port": "1", "lb_enable": "true",
               "vip_singlenode": "true", "cp_detect": "true"}
    findings = scan_environment(environ)
    assert [f.source for f in findings] == ["cp_detect", "lb_enable", "vip_wireguard",
                                            "lb_port", "vip_singlenode", "vip_startleader"]
    assert scan_environment(dict(reversed(list(environ.items())))) == findings


def test_both_spellings_of_a_variable_are_read() -> None:
    assert [f.source for f in scan_environment({"enableUPNP": "true", "enable_upnp": "1"})] == ["enableUPNP",
                                                                                               "enable_upnp"]
    assert [f.source for f in scan_environment({"INSTANCE_NAME": "a"})] == ["INSTANCE_NAME"]


def test_kubevips_generator_bug_writing_the_timeout_as_vip_loseleadership_is_refused() -> None:
    [finding] = scan_environment({"vip_loseleadership": "30"})
    assert finding.disposition is Disposition.REFUSE


def test_split_flags_reads_the_command_line_as_cobra_does() -> None:
    argv = ["manager", "--controlplane", "--table", "--tableID", "200", "--lbPort=1", "--arp=false",
            "--address", "192.0.2.10", "--wireguard=false", "--zebraUrl"]
    rest, found = split_flags(argv)
    assert rest == ["manager", "--controlplane", "--arp=false", "--address", "192.0.2.10", "--zebraUrl"]
    assert found == {"--table": "true", "--tableID": "200", "--lbPort": "1", "--wireguard": "false"}
    assert [f.source for f in scan_flags(found)] == ["--table", "--lbPort", "--tableID"]
    assert split_flags(["manager", "--", "--table"]) == (["manager", "--", "--table"], {})


# (d) a kube-vip v0.8.10 Equinix Metal manifest, moved over ------------------------------------------------------

# The container env of the static pod that kube-vip v0.8.10 (pkg/kubevip/config_generator.go, generatePodSpec) writes
# for the Elastic IP control plane of its Equinix Metal guide:
#   kube-vip manifest pod --interface bond0 --address 147.75.100.10 --controlplane --arp --leaderElection \
#       --metal --metalKey <token> --metalProjectID <uuid>
# in generator order. vip_nodename is a fieldRef to spec.nodeName: the value is what the kubelet puts there.
V0810_METAL_EIP_POD_ENV: dict[str, str] = {
    "vip_arp": "true",                # always written: strconv.FormatBool(EnableARP)
    "port": "6443",                   # always written
    "vip_nodename": "cp-1",           # always written (fieldRef spec.nodeName)
    "vip_interface": "bond0",         # --interface given
    "vip_cidr": "32",                 # `manifest pod` fills VIPCIDR from the address (GenerateCidrRange)
    "dns_mode": "first",              # the --dnsMode default, always non-empty
    "cp_enable": "true",              # --controlplane
    "cp_namespace": "kube-system",
    "vip_leaderelection": "true",     # --leaderElection: the election block with v0.8.10's 5/3/1 defaults
    "vip_leasename": "plndr-cp-lock",
    "vip_leaseduration": "5",
    "vip_renewdeadline": "3",
    "vip_retryperiod": "1",
    "vip_packet": "true",             # --metal: four variables, the project name empty
    "vip_packetproject": "",
    "vip_packetprojectid": "4f2d1c3e-5b6a-4c7d-8e9f-0a1b2c3d4e5f",
    "PACKET_AUTH_TOKEN": "kvm-test-token-not-real",
    "address": "147.75.100.10",       # --address given (else vip_address)
    "prometheus_server": ":2112",     # always written
}

# The same guide's BGP form: --interface lo --controlplane --services --bgp --metal (no --leaderElection; with
# --metal the generator leaves out the BGP identity block, which kube-vip then fetched from the Metal API).
V0810_METAL_BGP_POD_ENV: dict[str, str] = {
    "vip_arp": "false",
    "port": "6443",
    "vip_nodename": "cp-1",
    "vip_interface": "lo",
    "vip_cidr": "32",
    "dns_mode": "first",
    "cp_enable": "true",
    "cp_namespace": "kube-system",
    "svc_enable": "true",             # --services: svc_enable and svc_leasename
    "svc_leasename": "plndr-svcs-lock",
    "vip_packet": "true",
    "vip_packetproject": "",
    "vip_packetprojectid": "4f2d1c3e-5b6a-4c7d-8e9f-0a1b2c3d4e5f",
    "PACKET_AUTH_TOKEN": "kvm-test-token-not-real",
    "bgp_enable": "true",             # --bgp; bgp_routerid/bgp_as/bgp_peer* are not written when --metal is set
    "address": "147.75.100.10",
    "prometheus_server": ":2112",
}


def _hermetic(tmp_path: Path) -> dict[str, str]:
    """Not part of the manifest: where the pod's hostPath kubeconfig and the Internet would be. Names kube-vip
    v0.8.10 never wrote (or, for the kubeconfig, never wrote into a pod's env), so they change nothing the test
    compares, but a manager that starts neither takes a Lease on this host's cluster nor calls Equinix Metal."""
    return {"k8s_config_file": str(tmp_path / "admin.conf"),
            "k8s_bootstrap_config_file": str(tmp_path / "super-admin.conf"),
            "vip_packetapiurl": "http://127.0.0.1:9/metal/v1",
            "vip_packetmetadataurl": "http://127.0.0.1:9/metadata"}


@dataclass
class Outcome:
    started: bool
    returncode: int | None
    stderr: str

    @property
    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def _run_manager(env: dict[str, str], tmp_path: Path, settle: float = 4.0) -> Outcome:
    """`kube-vip-metal manager` with exactly `env` (plus `_hermetic`): started if still running after `settle` s."""
    environ = {k: v for k, v in clean_env().items() if k not in BY_ENV}
    environ.update(env)
    environ.update(_hermetic(tmp_path))
    process = subprocess.Popen([*CLI, "manager"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env=environ)
    deadline = time.monotonic() + settle
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    started = process.poll() is None
    if started:
        process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
    return Outcome(started, None if started else process.returncode, stderr)


def _named_source(line: str) -> str:
    """The flag or variable an error line names: `vip_arp "true": ...` or `vip_routingtable=true: ...`."""
    head = line.removeprefix(PREFIX)
    for stop in (" ", "=", ":"):
        head = head.split(stop, 1)[0]
    return head


def _follow_hint(line: str, env: dict[str, str]) -> dict[str, str] | None:
    """What the one line tells the operator to change in `env`, applied; None if it tells nothing actionable."""
    source = _named_source(line)
    if source not in env:
        return None
    changed = dict(env)
    if f"set {source}=false" in line or "set it to false" in line:
        changed[source] = "false"
    elif "remove it" in line or "not available yet" in line:
        del changed[source]
    else:
        return None
    return changed


def _assert_started_or_one_line(outcome: Outcome, env: dict[str, str]) -> None:
    if outcome.started:
        return
    assert outcome.returncode == 2, outcome.stderr
    assert len(outcome.lines) == 1, outcome.stderr
    line = outcome.lines[0]
    assert line.startswith(PREFIX), line
    assert "Traceback" not in outcome.stderr
    assert _named_source(line) in env, f"the line names nothing the manifest sets: {line}"
    assert _follow_hint(line, env) is not None, f"the line does not say what to change: {line}"
    assert env["PACKET_AUTH_TOKEN"] not in outcome.stderr


def test_v0810_manifests_use_no_name_kube_vip_metal_lacks() -> None:
    for env in (V0810_METAL_EIP_POD_ENV, V0810_METAL_BGP_POD_ENV):
        assert set(env) <= _ours()
        assert scan_environment(env) == []


def test_v0810_metal_eip_manifest_starts_or_says_what_to_change(tmp_path: Path) -> None:
    outcome = _run_manager(V0810_METAL_EIP_POD_ENV, tmp_path)
    _assert_started_or_one_line(outcome, V0810_METAL_EIP_POD_ENV)
    if not outcome.started and _named_source(outcome.lines[0]) == "vip_arp":
        # kubevip_metal/config.py `_mode`: ARP and the Metal API together.
        line = outcome.lines[0]
        assert line.startswith(f'{PREFIX}vip_arp "true": cannot be used with vip_packet: '), line
        assert "set vip_arp=false" in line and "Elastic IP mode" in line, line


def test_v0810_metal_eip_manifest_runs_as_the_elastic_ip_mode_after_its_hints(tmp_path: Path) -> None:
    env = dict(V0810_METAL_EIP_POD_ENV)
    hints: list[str] = []
    for _ in range(len(env)):
        outcome = _run_manager(env, tmp_path)
        if outcome.started:
            break
        _assert_started_or_one_line(outcome, env)
        hints.append(outcome.lines[0])
        changed = _follow_hint(outcome.lines[0], env)
        assert changed is not None
        env = changed
    assert outcome.started, hints
    assert {k: env[k] for k in ("cp_enable", "vip_packet", "address")} == {
        "cp_enable": "true", "vip_packet": "true", "address": "147.75.100.10"}, hints
    assert "mode=metal-eip" in outcome.stderr, outcome.stderr


def test_v0810_metal_bgp_manifest_starts_or_says_what_to_change(tmp_path: Path) -> None:
    _assert_started_or_one_line(_run_manager(V0810_METAL_BGP_POD_ENV, tmp_path), V0810_METAL_BGP_POD_ENV)


# The manager with the table wired in --------------------------------------------------------------------------
# NEEDS THE WIRING: the tests below pass only once kubevip_metal/cli.py calls split_flags / scan_flags /
# scan_environment (see the module docstring of kubevip_metal/kubevip_compat.py): the first refused finding is printed
# as `kube-vip-metal: error: <message>` with exit 2, warnings are logged (manager) or printed (manifest).

ARP_CP_ENV = {"cp_enable": "true", "vip_arp": "true", "address": "192.0.2.10"}


def test_wired_a_refused_variable_stops_the_manager_with_its_message(tmp_path: Path) -> None:
    env = {**ARP_CP_ENV, "vip_routingtable": "true", "vip_singlenode": "true"}
    outcome = _run_manager(env, tmp_path)
    [refused] = [f for f in scan_environment(env) if f.disposition is Disposition.REFUSE]
    assert not outcome.started and outcome.returncode == 2, outcome.stderr  # NEEDS THE WIRING
    assert outcome.lines == [PREFIX + refused.message]  # NEEDS THE WIRING


@pytest.mark.parametrize("flag", ["--table", "--table=true", "--enableLoadBalancer"])
def test_wired_a_refused_flag_stops_the_manager_with_its_message(flag: str, tmp_path: Path) -> None:
    result = subprocess.run([*CLI, "manager", "--controlplane", "--arp", "--address", "192.0.2.10", flag],
                            capture_output=True, text=True, env=clean_env(_hermetic(tmp_path)), timeout=20)
    [finding] = scan_flags(split_flags([flag])[1])
    assert result.returncode == 2  # today argparse already exits 2, with "unrecognized arguments"
    assert result.stderr.splitlines() == [PREFIX + finding.message]  # NEEDS THE WIRING


def test_wired_off_values_and_warnings_let_the_manager_start(tmp_path: Path) -> None:
    env = {**ARP_CP_ENV, "vip_routingtable": "false", "lb_enable": "false", "vip_singlenode": "true"}
    outcome = _run_manager(env, tmp_path)
    assert outcome.started, outcome.stderr
    [warning] = scan_environment(env)
    assert warning.message in outcome.stderr  # NEEDS THE WIRING (logged like config.warnings)


def test_wired_manifest_refuses_foreign_flags_and_prints_warnings() -> None:
    base = ["manifest", "pod", "--controlplane", "--arp", "--address", "192.0.2.10"]
    refused = subprocess.run([*CLI, *base, "--wireguard"], capture_output=True, text=True, env=clean_env(),
                             timeout=20)
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [PREFIX + scan_flags({"--wireguard": "true"})[0].message]  # NEEDS WIRING
    warned = subprocess.run([*CLI, *base, "--debounceTime", "1s"], capture_output=True, text=True, env=clean_env(),
                            timeout=20)
    assert warned.returncode == 0, warned.stderr  # NEEDS THE WIRING
    assert f"kube-vip-metal: warning: {scan_flags({'--debounceTime': '1s'})[0].message}" in warned.stderr.splitlines()
