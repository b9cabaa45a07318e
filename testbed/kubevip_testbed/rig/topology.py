"""The rig's LAN: who sits on it, with which addresses, and the iproute2 commands that build it.

Nodes n1..nN, a client and a router each own a namespace with one `eth0`; the veth's other end is a port of
bridge `br0` in namespace `sw`, so pulling a node's cable is taking one bridge port down. Addresses come from
documentation ranges only, and a host's number is the last part of its IPv4 and IPv6 address and of its MAC,
so a capture or a neighbour table reads at a glance: n1 = .11 = 2001:db8:100::11 = 02:00:00:00:00:0b.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

LAN4 = "198.51.100.0/24"
LAN6 = "2001:db8:100::/64"
ROUTER, CLIENT, SWITCH = "router", "client", "sw"
IFNAME = "eth0"
BRIDGE = "br0"
ROUTER_NUMBER, CLIENT_NUMBER, FIRST_NODE_NUMBER = 1, 100, 11
MAX_NODES = CLIENT_NUMBER - FIRST_NODE_NUMBER  # node numbers stay below the client's
NFT_ROUTER_TABLE = "kvm_router"


@dataclass(frozen=True)
class Host:
    """One namespace with an address on the LAN."""

    role: str
    number: int

    @property
    def ipv4(self) -> str:
        return f"198.51.100.{self.number}"

    @property
    def ipv6(self) -> str:
        return f"2001:db8:100::{self.number}"  # same digits as IPv4, on purpose

    @property
    def mac(self) -> str:
        return f"02:00:00:00:00:{self.number:02x}"

    @property
    def port(self) -> str:
        """This host's port on the bridge, in the `sw` namespace."""
        return f"p-{self.role}"


def plan(nodes: int) -> dict[str, Host]:
    """Every host of a rig with `nodes` nodes, by role, nodes first."""
    if not 1 <= nodes <= MAX_NODES:
        raise ValueError(f"a rig has 1-{MAX_NODES} nodes, not {nodes}")
    hosts = {f"n{i}": Host(f"n{i}", FIRST_NODE_NUMBER - 1 + i) for i in range(1, nodes + 1)}
    hosts[CLIENT] = Host(CLIENT, CLIENT_NUMBER)
    hosts[ROUTER] = Host(ROUTER, ROUTER_NUMBER)
    return hosts


def create_lines(ns: Callable[[str], str], hosts: dict[str, Host]) -> list[str]:
    """Run in the root namespace: the namespaces, the bridge and every veth pair, created directly in their
    target namespaces (never in the root namespace, which has an `eth0` of its own)."""
    lines = [f"netns add {ns(SWITCH)}", *(f"netns add {ns(role)}" for role in hosts)]
    # No multicast snooping: a dumb switch floods NDP and VRRP multicast as a test LAN should.
    lines.append(f"link add {BRIDGE} netns {ns(SWITCH)} type bridge mcast_snooping 0")
    lines += [f"link add {IFNAME} netns {ns(h.role)} address {h.mac} type veth peer name {h.port} netns {ns(SWITCH)}"
              for h in hosts.values()]
    return lines


def sysctls(host: Host) -> dict[str, str]:
    """Set before `eth0` comes up: no DAD (addresses usable at once); the router forwards, sends no
    redirects (a redirected client would bypass the router and miss BGP failovers)."""
    values = {f"net/ipv6/conf/{dev}/accept_dad": "0" for dev in ("all", "default", IFNAME)}
    if host.role == ROUTER:
        values["net/ipv4/ip_forward"] = "1"
        values["net/ipv6/conf/all/forwarding"] = "1"
        values.update({f"net/ipv4/conf/{dev}/send_redirects": "0" for dev in ("all", "default", IFNAME)})
    return values


SWITCH_SYSCTLS = {"net/ipv6/conf/all/disable_ipv6": "1", "net/ipv6/conf/default/disable_ipv6": "1"}
"""The switch is pure layer 2: no link-local addresses, router solicitations or MLD from it on the LAN."""

# IPv6 has no send_redirects switch; dropping the router's own redirects gives the same behaviour as IPv4.
ROUTER_NFT = f"""table inet {NFT_ROUTER_TABLE} {{
  chain output {{
    type filter hook output priority 0; policy accept;
    icmpv6 type nd-redirect drop
  }}
}}
"""


def switch_lines(hosts: dict[str, Host]) -> list[str]:
    """Run in `sw`: bridge up, every port enslaved and up (no STP, so ports forward at once)."""
    return [f"link set {BRIDGE} up", *(f"link set {h.port} master {BRIDGE} up" for h in hosts.values())]


def host_lines(host: Host) -> list[str]:
    """Run in the host's namespace: loopback, eth0, addresses, default routes via the router."""
    lines = [
        "link set lo up",
        f"link set {IFNAME} up",
        f"addr add {host.ipv4}/24 dev {IFNAME}",
        f"addr add {host.ipv6}/64 dev {IFNAME} nodad",
    ]
    if host.role != ROUTER:
        router = Host(ROUTER, ROUTER_NUMBER)
        lines += [f"route add default via {router.ipv4}", f"route add ::/0 via {router.ipv6}"]
    return lines


# -- hosts added to a running rig (Rig.add_lan_host, Rig.add_routed_host)

ROUTED4 = "192.0.2.0/24"  # TEST-NET-1: the links behind the router, a /30 each
ROUTED6 = "2001:db8:200::/48"
MAX_ROUTED = 64  # /30 links in ROUTED4
_ADDED_ROLE_MAX = 13  # the router's end of a routed host's link is `r-<role>`, and interface names have 15


def check_added_role(role: str, taken: Collection[str]) -> str:
    """A role for a host added to a running rig: lowercase letters and digits, starting with a letter (the
    namespace name must keep the rig's `<prefix>-<role>` shape, so stale-namespace clean-up still knows it)."""
    if not (role.isascii() and role.isalnum() and role.islower() and role[:1].isalpha()
            and len(role) <= _ADDED_ROLE_MAX):
        raise ValueError(f"role {role!r}: use 1-{_ADDED_ROLE_MAX} lowercase letters or digits, starting with a letter")
    if role in taken or role == SWITCH:
        raise ValueError(f"role {role!r} exists already in this rig")
    return role


def lan_host_lines(ns: Callable[[str], str], host: Host) -> list[str]:
    """Run in the root namespace: one more host's namespace and its veth pair, its other end in `sw`."""
    return [f"netns add {ns(host.role)}",
            f"link add {IFNAME} netns {ns(host.role)} address {host.mac} type veth peer name {host.port} "
            f"netns {ns(SWITCH)}"]


@dataclass(frozen=True)
class RoutedHost:
    """A namespace behind the router, on a point-to-point veth link of its own: `eth0` here, `r-<role>` in the
    router. Link k is 192.0.2.4k/30 (the router .4k+1, this host .4k+2) and 2001:db8:200:k::/64 (::1, ::2),
    so the nodes reach it only through the router's forwarding (two hops: a TTL of 1 expires at the router)."""

    role: str
    link: int

    @property
    def ipv4(self) -> str:
        return f"192.0.2.{4 * self.link + 2}"

    @property
    def ipv6(self) -> str:
        return f"2001:db8:200:{self.link:x}::2"

    @property
    def router_ipv4(self) -> str:
        return f"192.0.2.{4 * self.link + 1}"

    @property
    def router_ipv6(self) -> str:
        return f"2001:db8:200:{self.link:x}::1"

    @property
    def router_ifname(self) -> str:
        return f"r-{self.role}"


def routed_create_lines(ns: Callable[[str], str], host: RoutedHost) -> list[str]:
    """Run in the root namespace: the routed host's namespace and its link to the router."""
    return [f"netns add {ns(host.role)}",
            f"link add {IFNAME} netns {ns(host.role)} type veth peer name {host.router_ifname} netns {ns(ROUTER)}"]


def routed_router_lines(host: RoutedHost) -> list[str]:
    """Run in the router: its end of the link, up and addressed (the router forwards already)."""
    return [f"link set {host.router_ifname} up",
            f"addr add {host.router_ipv4}/30 dev {host.router_ifname}",
            f"addr add {host.router_ipv6}/64 dev {host.router_ifname} nodad"]


def routed_host_lines(host: RoutedHost) -> list[str]:
    """Run in the routed host: loopback, eth0, its addresses, default routes via the router's end of the link."""
    return ["link set lo up",
            f"link set {IFNAME} up",
            f"addr add {host.ipv4}/30 dev {IFNAME}",
            f"addr add {host.ipv6}/64 dev {IFNAME} nodad",
            f"route add default via {host.router_ipv4}",
            f"route add ::/0 via {host.router_ipv6}"]


def routed_sysctls() -> dict[str, str]:
    """No DAD on the routed host (addresses usable at once)."""
    return {f"net/ipv6/conf/{dev}/accept_dad": "0" for dev in ("all", "default", IFNAME)}
