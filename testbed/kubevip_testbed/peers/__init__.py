"""Real Go peers for tests and benchmarks: kube-apiserver (with etcd), a fault-injecting proxy in front of it, and
kube-vip. `tests/peers/build.sh` (in a checkout) builds the binaries from the Go module proxy into a cache outside
the clone; the modules here only run them."""
