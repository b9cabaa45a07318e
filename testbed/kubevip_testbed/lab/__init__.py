"""A whole cluster network on one machine: rig, API emulator, one real manager per node, a probing client."""
