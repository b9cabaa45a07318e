"""kube-vip-metal: a highly available VIP for Kubernetes, Equinix Metal first, generic ARP/NDP and BGP everywhere."""

__version__ = "0.1.0"
