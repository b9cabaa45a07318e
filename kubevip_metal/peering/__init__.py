"""BGP settings from where they live: the flags, the Equinix Metal API and the node annotations, combined into
one peer list that follows its sources live."""
