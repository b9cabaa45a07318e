"""Real Go peers for tests and benchmarks: kube-apiserver (with Debian's etcd), a fault-injecting proxy in front of
it, and kube-vip. `build.sh` builds the binaries from the Go module proxy into a cache outside the clone."""
