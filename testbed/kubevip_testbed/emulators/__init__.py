"""Local stand-ins for the services kube-vip-metal talks to, on real sockets: tests, the lab, benchmarks."""
