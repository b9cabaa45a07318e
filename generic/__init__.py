"""Provider-neutral mechanics: secrets, structured logs, and (as they land) VIPs, ARP/NDP, BGP and election.

Nothing in this package knows about Equinix Metal or about the command line; the controller in
`kubevip_metal` composes these parts.
"""
