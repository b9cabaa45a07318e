"""BGP mechanics that do not depend on where the settings come from: the peer model (and kube-vip's peer syntax,
`peers`), the speaker interface (`speaker`) and its ExaBGP 5 implementation (`exabgp`, with `exabgp_relay`, the
API process ExaBGP runs)."""
