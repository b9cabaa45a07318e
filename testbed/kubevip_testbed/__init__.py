"""kube-vip-metal's test bed: everything that runs the daemon against something real on one machine, and nothing
the daemon needs on a cluster node.

- `emulators`: the Kubernetes and Equinix Metal API emulators (aiohttp; the Metal one checks every exchange
  against the OpenAPI spec when openapi-core is installed);
- `rig`: network namespaces (nodes, a client, a router on one bridge) with fault levers;
- `lab`: a three-node cluster of real managers on the rig (`kube-vip-metal lab`), its prober and a keepalived
  driver;
- `peers`: the real kube-apiserver, etcd, kube-vip and the fault proxy in front of the API server;
- `election`, `metal_account`, `waiting`: helpers the tests and the benchmarks share.

It is a distribution of its own (`kube-vip-metal-testbed`, `pip install ./testbed` from a checkout) so that
`pip install .` puts only the daemon and its dependencies on a node: no aiohttp, no openapi-core, no emulators.
Nothing in `kubevip_metal` imports it, except `kube-vip-metal lab`, which says what to install when it is absent.
"""
