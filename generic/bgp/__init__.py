"""BGP mechanics that do not depend on where the settings come from: the peer model (and kube-vip's peer syntax);
the speaker lands here next."""
