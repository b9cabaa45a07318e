"""The standard Equinix Metal account, seeded into a fresh Metal API emulator, for tests and benchmarks.

It is what a three-node control plane on Metal looks like to kube-vip-metal: one project, devices n1, n2, n3 (each
with its management addresses) and one unassigned Elastic IP, 198.51.100.200/32, tagged as the CCM and CAPP tag
control-plane EIPs. One definition, so the Metal tests and `benchmarks/metal.py` measure the same world.
"""

from __future__ import annotations

from kubevip_testbed.emulators.metalapi import MetalApiEmulator

TOKEN = "metal-test-token"
PROJECT = "kube-vip-metal"
HOSTNAMES = ("n1", "n2", "n3")
EIP = "198.51.100.200"
EIP_CIDR = f"{EIP}/32"
EIP_TAGS = ("cluster-api-provider-packet:cluster-id:lab", "kube-vip-metal")


def seeded_emulator(seed: int = 0) -> tuple[MetalApiEmulator, str, dict[str, str], str]:
    """A fresh emulator holding the standard account: (emulator, project id, device ids by hostname, EIP id)."""
    emulator = MetalApiEmulator(TOKEN, seed=seed)
    project_id = emulator.add_project(PROJECT)
    device_ids = {hostname: emulator.add_device(project_id, hostname) for hostname in HOSTNAMES}
    reservation_id = emulator.add_reservation(project_id, EIP_CIDR, EIP_TAGS)
    return emulator, project_id, device_ids, reservation_id
