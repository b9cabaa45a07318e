"""Every rejected input: exit status 2, exactly one line on stderr naming the flag or variable and the value."""

from __future__ import annotations

import pytest

from tests.conftest import run_cli

ARP_CP = ["--controlplane", "--arp", "--address", "192.0.2.10"]
BGP_SVC = ["--services", "--bgp", "--bgppeers", "198.51.100.1:65001"]

# (argv after the command, environment, text that must appear in the one line)
BAD_INPUTS: list[tuple[list[str], dict[str, str], str]] = [
    ([*ARP_CP, "--localAS", "abc"], {}, '--localAS "abc": not an AS number (1-4294967295)'),
    ([*ARP_CP, "--localAS", "0"], {}, '--localAS "0": not an AS number'),
    ([*ARP_CP, "--localAS", "4294967296"], {}, '--localAS "4294967296": not an AS number'),
    ([*ARP_CP, "--peerAS", "-1"], {}, '--peerAS "-1": not an AS number'),
    (ARP_CP, {"bgp_as": "65000x"}, 'bgp_as "65000x": not an AS number'),
    (["--controlplane", "--arp", "--address", "300.1.1.1"], {}, '--address "300.1.1.1": not an IP address or a DNS'),
    (["--controlplane", "--arp", "--address", "not a name"], {}, '--address "not a name"'),
    (["--controlplane", "--arp", "--address", "10.0.0"], {}, '--address "10.0.0"'),
    (["--controlplane", "--arp", "--address", "192.0.2.1,192.0.2.2"], {}, "at most one IPv4 and one IPv6"),
    (["--controlplane", "--arp", "--address", "127.0.0.1"], {}, "a VIP must be a unicast address"),
    (["--controlplane", "--arp"], {}, "--address: the control plane needs a VIP"),
    ([*ARP_CP, "--cidr", "33"], {}, '--cidr "33": not an IPv4 prefix length (1-32)'),
    (["--controlplane", "--arp", "--address", "2001:db8::10", "--cidr", "129"], {},
     '--cidr "129": not an IPv6 prefix length (1-128)'),
    ([*ARP_CP, "--vipSubnet", "24,200"], {}, '--vipSubnet "24,200": not an IPv6 prefix length'),
    (ARP_CP, {"vip_cidr": "x"}, 'vip_cidr "x"'),
    ([*ARP_CP, "--leaseDuration", "3", "--leaseRenewDuration", "3"], {},
     '--leaseRenewDuration "3": must be less than --leaseDuration (3 s)'),
    ([*ARP_CP, "--leaseRetry", "2.6"], {}, '--leaseRetry "2.6": must be less than --leaseRenewDuration / 1.2'),
    ([*ARP_CP, "--leaseDuration", "-5"], {}, '--leaseDuration "-5": must be a positive number of seconds'),
    ([*ARP_CP, "--leaseDuration", "five"], {}, '--leaseDuration "five": not a number of seconds'),
    (ARP_CP, {"vip_leaseduration": "2"}, '--leaseRenewDuration "3": must be less than vip_leaseduration (2 s)'),
    (ARP_CP, {"vip_retryperiod": "nan"}, 'vip_retryperiod "nan"'),
    (["--controlplane", "--address", "192.0.2.10"], {}, "manager: needs an announcement mode: --arp or --bgp"),
    ([*ARP_CP, "--bgp", "--peerAddress", "198.51.100.1"], {}, '--bgp "true": choose one announcement mode'),
    ([*ARP_CP, "--metal", "--metalKey", "k", "--metalProject", "p"], {},
     '--arp "true": cannot be used with --metal: ARP does not work on Equinix Metal'),
    (["--arp", "--address", "192.0.2.10"], {}, "manager: needs --controlplane or --services"),
    ([*ARP_CP], {"vip_arp": "yes"}, 'vip_arp "yes": not a boolean'),
    ([*ARP_CP, "--arp=maybe"], {}, '--arp "maybe": not a boolean'),
    ([*ARP_CP, "--port", "70000"], {}, '--port "70000": not a TCP port (1-65535)'),
    ([*ARP_CP, "--interface", "this-name-is-too-long"], {}, '--interface "this-name-is-too-long": not a Linux'),
    ([*ARP_CP, "--namespace", "Kube_System"], {}, '--namespace "Kube_System": not a valid name'),
    ([*ARP_CP], {"cp_namespace": "-bad"}, 'cp_namespace "-bad"'),
    ([*ARP_CP, "--leaseName", "UPPER"], {}, '--leaseName "UPPER"'),
    ([*ARP_CP, "--leaderElectionType", "zookeeper"], {}, '--leaderElectionType "zookeeper": must be one of'),
    ([*ARP_CP, "--leaderElectionType", "etcd"], {}, "etcd election needs --etcdEndpoints"),
    ([*ARP_CP, "--leaderElectionType", "etcd", "--etcdEndpoints", "127.0.0.1:2379", "--etcdCert", "/c.pem"], {},
     "--etcdKey: give both --etcdCert and --etcdKey"),
    ([*ARP_CP, "--leaderElectionType", "etcd", "--etcdEndpoints", "127.0.0.1:notaport"], {},
     '--etcdEndpoints "127.0.0.1:notaport"'),
    ([*BGP_SVC[:2], "--bgppeers", "198.51.100.1:notanas:s3cr3t"], {}, '--bgppeers "198.51.100.1:***:***"'),
    ([*BGP_SVC[:2], "--bgppeers", "2001:db8::1:65000"], {}, "write IPv6 peers as [2001:db8::1]"),
    ([*BGP_SVC[:2], "--bgppeers", "198.51.100.1:65001::maybe"], {}, '--bgppeers "198.51.100.1:65001::***": not a bool'),
    ([*BGP_SVC[:2], "--bgppeers", "198.51.100.1:65001,198.51.100.1:65002"], {}, "the same peer address appears twice"),
    ([*BGP_SVC[:2], "--bgppeers", '198.51.100.1:65001:"open'], {}, "unterminated quoted field"),
    ([*BGP_SVC[:2], "--bgppeers", "198.51.100.1:65001::true:0"], {}, "not a TCP port"),
    ([*BGP_SVC[:2]], {}, '--bgp "true": no BGP peer'),
    ([*BGP_SVC[:2], "--peerAddress", "198.51.100.1", "--peerPass", "x" * 81], {}, "longer than 80 bytes"),
    ([*BGP_SVC, "--bgpRouterID", "2001:db8::1"], {}, '--bgpRouterID "2001:db8::1": not an IPv4 address'),
    ([*BGP_SVC, "--sourceIP", "198.51.100.11", "--sourceIF", "eth0"], {}, "give --sourceIP or --sourceIF"),
    ([*BGP_SVC, "--bgpHoldTimer", "2"], {}, '--bgpHoldTimer "2": must be 0 or at least 3'),
    ([*BGP_SVC, "--bgpKeepAliveInterval", "30"], {}, '--bgpKeepAliveInterval "30": must be between 1'),
    (BGP_SVC, {"bgp_peers": "198.51.100.1:65001:pw:true:99999"}, 'bgp_peers "198.51.100.1:65001:***:true:99999"'),
    ([*BGP_SVC[:2], "--peerPass", "pw"], {}, "--peerPass: a password needs --peerAddress"),
    (["--controlplane", "--metal", "--address", "192.0.2.10"], {}, '--metal "true": no API token'),
    (["--controlplane", "--metal", "--address", "192.0.2.10"], {"PACKET_AUTH_TOKEN": "t"},
     '--metal "true": no project'),
    (["--controlplane", "--metal", "--address", "192.0.2.10", "--metalProjectID", "nope"], {"METAL_AUTH_TOKEN": "t"},
     '--metalProjectID "nope": not a UUID'),
    (["--services", "--metal", "--metalKey", "k", "--metalProject", "p"], {}, "Service VIPs need --bgp"),
    (["--controlplane", "--metal", "--address", "192.0.2.10", "--metalKeyFile", "/nonexistent/key"], {},
     '--metalKeyFile "/nonexistent/key": cannot read'),
    (["--controlplane", "--metal", "--address", "192.0.2.10", "--provider-config", "relative.json"], {},
     '--provider-config "relative.json": must be an absolute path'),
    ([*ARP_CP, "--ddns"], {}, "--ddns needs --address to be a DNS name"),
    (["--services", "--arp", "--ddns", "--address", "cp.example.com"], {}, "dynamic DNS is for the control-plane"),
    ([*ARP_CP, "--dnsMode", "ipv5"], {}, '--dnsMode "ipv5": must be one of first, ipv4, ipv6, dual'),
    ([*ARP_CP, "--arpRate", "100"], {}, '--arpRate "100": not milliseconds (500-60000)'),
    (ARP_CP, {"vip_arpRate": "fast"}, 'vip_arpRate "fast"'),
    ([*ARP_CP, "--healthCheckPort", "80"], {}, '--healthCheckPort "80": must be 0 (off) or above 1024'),
    ([*ARP_CP, "--prometheusHTTPServer", "2112"], {}, '--prometheusHTTPServer "2112": not a listen address'),
    ([*ARP_CP, "--log-level", "chatty"], {}, '--log-level "chatty": not a log level'),
    (ARP_CP, {"vip_loglevel": "99"}, 'vip_loglevel "99": not a log level'),
    ([*ARP_CP, "--log-format", "xml"], {}, '--log-format "xml": must be one of text, json'),
    ([*ARP_CP, "--kubernetesAddr", "kubernetes:6443"], {}, '--kubernetesAddr "kubernetes:6443": not an http(s) URL'),
    ([*ARP_CP, "--k8sConfigPath", "admin.conf"], {}, '--k8sConfigPath "admin.conf": must be an absolute path'),
    ([*ARP_CP, "--nodeName", "bad_name"], {}, '--nodeName "bad_name"'),
    ([*ARP_CP, "--lbClassName", "a b/c"], {}, '--lbClassName "a b/c"'),
    ([*ARP_CP, "--bogus"], {}, "unrecognized arguments: --bogus"),
    ([*ARP_CP, "--localAS"], {}, "--localAS: expected one argument"),
    ([*ARP_CP, "--addr", "192.0.2.1"], {}, "unrecognized arguments: --addr"),
]


@pytest.mark.parametrize(("args", "env", "expected"), BAD_INPUTS, ids=[" ".join(a[-2:]) + str(sorted(e))
                                                                      for a, e, _ in BAD_INPUTS])
def test_bad_input_exits_2_with_one_line(args: list[str], env: dict[str, str], expected: str) -> None:
    result = run_cli(["manager", *args], env)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kube-vip-metal: error: ")
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


def test_table_is_large_enough() -> None:
    assert len(BAD_INPUTS) >= 25


@pytest.mark.parametrize("args", [
    ["manifest", "pod", *BGP_SVC[:2], "--peerAddress", "198.51.100.1", "--peerPass", "s3cr3t"],
    ["manifest", "pod", *ARP_CP, "--inCluster"],
    ["manifest"],
    [],
    ["manifest", "pod", "--arp", "--address", "192.0.2.10"],
])
def test_manifest_refusals_are_one_line(args: list[str]) -> None:
    result = run_cli(args)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert "s3cr3t" not in result.stderr
