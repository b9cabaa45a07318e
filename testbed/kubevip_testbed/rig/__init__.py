"""A test rig of real network namespaces: nodes, a client and a router on one bridged LAN.

    with Rig() as rig:                       # n1 n2 n3, client, router; prefix kvm<pid>x<hex>
        rig.run("client", ["ping", "-c1", rig.ipv4("n1")])
        rig.link_down("n2")                  # pull n2's cable
        rig.block("n1", rig.ipv4("router"), 6443)
        rig.add_routed_host("far")           # a namespace behind the router (192.0.2.2), two hops from the nodes

Needs root with CAP_NET_ADMIN and CAP_SYS_ADMIN, iproute2 and nftables (`prerequisites_missing()` says
what is absent). Everything stays inside the rig's own namespaces, on documentation address ranges.
"""

from kubevip_testbed.rig.cleanup import cleanup_stale
from kubevip_testbed.rig.netns import CommandError, RigError
from kubevip_testbed.rig.prereq import prerequisites_missing
from kubevip_testbed.rig.rig import Rig
from kubevip_testbed.rig.topology import LAN4, LAN6, Host, RoutedHost

__all__ = ["LAN4", "LAN6", "CommandError", "Host", "Rig", "RigError", "RoutedHost", "cleanup_stale",
           "prerequisites_missing"]
