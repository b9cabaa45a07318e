"""The Equinix Metal API emulator, driven by the real `equinix` SDK (metalv1) over HTTP.

Each operation kube-vip-metal calls is exercised through the SDK's own method and parsed into its own models, so a
field the SDK cannot read fails here. The contract check is tested from both sides: a request that breaks the spec is
refused and recorded, and a response the emulator gets wrong (a field removed, a wrong type) is recorded too, which is
what makes `assert_no_violations()` at teardown mean something.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
import urllib3
from equinix.services import metalv1
from equinix.services.metalv1.exceptions import (  # only ApiException is re-exported by metalv1
    NotFoundException,
    ServiceException,
    UnauthorizedException,
    UnprocessableEntityException,
)

from kubevip_testbed.emulators.metalapi import (
    OPERATIONS,
    FaultError,
    MetalApiEmulator,
    MetalEmulatorThread,
    MetalFault,
    typical_bgp_neighbor,
)
from kubevip_testbed.emulators.metalapi_contract import SPEC_SHA256, load_contract
from kubevip_testbed.metal_account import EIP, EIP_TAGS, PROJECT, TOKEN
from tests.metal_support import MetalWorld


def devices_api(world: MetalWorld, **kwargs: Any) -> Any:
    return metalv1.DevicesApi(world.client(**kwargs))


def ips_api(world: MetalWorld, **kwargs: Any) -> Any:
    return metalv1.IPAddressesApi(world.client(**kwargs))


def raw(world: MetalWorld) -> requests.Session:
    return world.session()


def statuses(world: MetalWorld) -> list[int]:
    return [status for _, _, status, _ in world.emulator.requests()]


# --- the contract itself ----------------------------------------------------------------------------------------


def test_the_spec_is_the_sdks_parsed_once_per_process() -> None:
    first = load_contract()
    assert load_contract() is first
    assert first.sha256 == SPEC_SHA256
    assert first.load_seconds < 5, f"parsing the spec took {first.load_seconds:.2f} s"


def test_every_served_operation_has_that_operation_id_in_the_spec() -> None:
    contract = load_contract()
    for op in OPERATIONS:
        assert contract.operation_id(op.method, op.template) == op.operation_id


# --- operations, through the SDK ----------------------------------------------------------------------------------


def test_projects_are_found_by_name_and_id(metal: MetalWorld) -> None:
    projects = metalv1.ProjectsApi(metal.client())
    found = projects.find_projects(name=PROJECT)
    assert [p.id for p in found.projects] == [metal.project_id]
    assert (found.meta.total, found.meta.current_page, found.meta.next) == (1, 1, None)
    assert projects.find_projects(name="someone-else").projects == []
    project = projects.find_project_by_id(metal.project_id)
    assert project.name == PROJECT
    assert sorted(d.href for d in project.devices) == sorted(f"/metal/v1/devices/{i}"
                                                             for i in metal.device_ids.values())
    with pytest.raises(NotFoundException):
        projects.find_project_by_id(str(uuid.uuid4()))


def test_project_devices_filter_by_partial_hostname_and_follow_meta_next(metal: MetalWorld) -> None:
    n10 = metal.emulator.add_device(metal.project_id, "n10")
    devices = devices_api(metal)
    partial = devices.find_project_devices(metal.project_id, hostname="n1")
    assert sorted(d.hostname for d in partial.devices) == ["n1", "n10"]  # "partial hostname", as the spec says

    metal.emulator.reset_requests()
    every = devices.find_project_devices_all_pages(metal.project_id, per_page=1)
    assert [d.hostname for d in every.devices] == ["n1", "n2", "n3", "n10"]
    assert every.devices[-1].id == n10
    assert metal.emulator.request_counts() == {"findProjectDevices": 4}

    second = devices.find_project_devices(metal.project_id, page=2, per_page=3)
    assert [d.hostname for d in second.devices] == ["n10"]
    assert (second.meta.current_page, second.meta.last_page, second.meta.total, second.meta.next) == (2, 2, 4, None)
    assert "page=1" in second.meta.previous.href and "per_page=3" in second.meta.first.href


def test_a_device_shows_its_project_state_and_management_addresses(metal: MetalWorld) -> None:
    n1 = metal.device_ids["n1"]
    device = devices_api(metal).find_device_by_id(n1)
    assert (device.id, device.hostname, device.state) == (n1, "n1", "active")
    assert device.project.href == f"/metal/v1/projects/{metal.project_id}"
    addresses = metal.emulator.state.addresses_of(n1)
    assert sorted((a.address, a.public, a.management, a.cidr) for a in device.ip_addresses) == sorted(
        [(addresses["public_ipv4"], True, True, 31), (addresses["private_ipv4"], False, True, 31)])
    assert {a.assigned_to.href for a in device.ip_addresses} == {f"/metal/v1/devices/{n1}"}
    full = devices_api(metal).find_device_by_id(n1, include=["project"])
    assert full.project.name == PROJECT


def test_bgp_neighbours_are_what_was_set(metal: MetalWorld) -> None:
    n1, n2 = metal.device_ids["n1"], metal.device_ids["n2"]
    private = metal.emulator.state.addresses_of(n1)["private_ipv4"]
    metal.emulator.set_bgp_neighbors(n1, [typical_bgp_neighbor(private, md5_password="s3cret",
                                                                routes_in=["198.51.100.200/32"])])
    devices = devices_api(metal)
    (neighbour,) = devices.get_bgp_neighbor_data(n1).bgp_neighbors
    assert (neighbour.address_family, neighbour.customer_ip, neighbour.customer_as) == (4, private, 65000)
    assert (neighbour.peer_as, neighbour.peer_ips, neighbour.multihop) == (65530, ["169.254.255.1",
                                                                                   "169.254.255.2"], True)
    assert (neighbour.md5_enabled, neighbour.md5_password) == (True, "s3cret")
    assert neighbour.routes_in[0].route == "198.51.100.200/32"
    assert devices.get_bgp_neighbor_data(n2).bgp_neighbors == []


def test_an_eip_moves_between_devices(metal: MetalWorld) -> None:
    n1, n2 = metal.device_ids["n1"], metal.device_ids["n2"]
    devices, ips = devices_api(metal), ips_api(metal)

    first = devices.create_ip_assignment(n1, metalv1.IPAssignmentInput(address=EIP))
    assert (first.address, first.cidr, first.public, first.management) == (EIP, 32, True, False)
    assert first.assigned_to.href == f"/metal/v1/devices/{n1}"
    assert first.parent_block.href == f"/metal/v1/ips/{metal.reservation_id}"
    assert metal.emulator.assignments_of(EIP) == [n1]

    listed = ips.find_ip_reservations(metal.project_id, types=["public_ipv4"], include=["assignments"])
    reservations = [item.actual_instance for item in listed.ip_addresses]
    assert all(isinstance(r, metalv1.IPReservation) for r in reservations)
    eip = next(r for r in reservations if r.address == EIP)
    assert (eip.id, eip.cidr, eip.type, eip.tags) == (metal.reservation_id, 32, "public_ipv4", list(EIP_TAGS))
    # The patched spec (and so the SDK) types reservation assignments as Href: the model keeps only the href...
    assert [a.href for a in eip.assignments] == [f"/metal/v1/ips/{first.id}"]
    # ...while the wire, with include=assignments, carries the whole assignment and so the device.
    wire = raw(metal).get(f"{metal.api_url}/ips/{metal.reservation_id}", params={"include": "assignments"}).json()
    assert [a["assigned_to"]["href"] for a in wire["assignments"]] == [f"/metal/v1/devices/{n1}"]

    assignment = ips.find_ip_address_by_id(first.id).actual_instance
    assert isinstance(assignment, metalv1.IPAssignment)
    assert assignment.assigned_to.href == f"/metal/v1/devices/{n1}"
    reservation = ips.find_ip_address_by_id(metal.reservation_id).actual_instance
    assert isinstance(reservation, metalv1.IPReservation) and reservation.tags == list(EIP_TAGS)
    assert EIP in [a.address for a in devices.find_ip_assignments(n1).ip_addresses]

    with pytest.raises(UnprocessableEntityException) as held:  # still on n1: unassign first
        devices.create_ip_assignment(n2, metalv1.IPAssignmentInput(address=EIP))
    assert held.value.data.errors == [f"Address {EIP}/32 is already assigned to another device"]

    assert ips.delete_ip_address(first.id) is None
    assert metal.emulator.assignments_of(EIP) == []
    second = devices.create_ip_assignment(n2, metalv1.IPAssignmentInput(address=f"{EIP}/32"))
    assert metal.emulator.assignments_of(EIP) == [n2]
    assert EIP not in [a.address for a in devices.find_ip_assignments(n1).ip_addresses]
    with pytest.raises(NotFoundException):
        ips.find_ip_address_by_id(first.id)
    assert second.id != first.id


def test_assigning_again_to_the_same_device_is_422(metal: MetalWorld) -> None:
    n1 = metal.device_ids["n1"]
    devices = devices_api(metal)
    devices.create_ip_assignment(n1, metalv1.IPAssignmentInput(address=EIP))
    with pytest.raises(UnprocessableEntityException) as again:
        devices.create_ip_assignment(n1, metalv1.IPAssignmentInput(address=EIP))
    assert again.value.data.errors == [f"Address {EIP}/32 is already assigned to this device"]
    assert metal.emulator.assignments_of(EIP) == [n1]


def test_addresses_that_are_not_the_projects_eips_are_422(metal: MetalWorld) -> None:
    n1, n2 = metal.device_ids["n1"], metal.device_ids["n2"]
    devices = devices_api(metal)
    someone_elses_management = metal.emulator.state.addresses_of(n2)["public_ipv4"]
    for address in ("198.51.100.201", someone_elses_management, "not-an-address"):
        with pytest.raises(UnprocessableEntityException):
            devices.create_ip_assignment(n1, metalv1.IPAssignmentInput(address=address))
    other_project = metal.emulator.add_project("other")
    metal.emulator.add_reservation(other_project, "198.51.100.8/29")
    with pytest.raises(UnprocessableEntityException):
        devices.create_ip_assignment(n1, metalv1.IPAssignmentInput(address="198.51.100.9"))
    with pytest.raises(NotFoundException):
        devices.create_ip_assignment(str(uuid.uuid4()), metalv1.IPAssignmentInput(address=EIP))


def test_moves_made_by_hand_are_what_the_api_shows(metal: MetalWorld) -> None:
    n1, n3 = metal.device_ids["n1"], metal.device_ids["n3"]
    devices = devices_api(metal)
    metal.emulator.assign(EIP, n3)
    assert EIP in [a.address for a in devices.find_ip_assignments(n3).ip_addresses]
    metal.emulator.assign(EIP, n1, exclusive=False)  # the double assignment the CCM refuses to repair
    assert metal.emulator.assignments_of(EIP) == [n3, n1]
    assert metal.emulator.assign(EIP, n1) != ""  # exclusive: n3 loses it, n1 keeps its assignment
    assert metal.emulator.assignments_of(EIP) == [n1]
    assert metal.emulator.unassign_all(EIP) == 1
    reservation = ips_api(metal).find_ip_address_by_id(metal.reservation_id, include=["assignments"])
    assert reservation.actual_instance.assignments == []


def test_deleting_a_reservation_deletes_its_assignments(metal: MetalWorld) -> None:
    ips = ips_api(metal)
    metal.emulator.assign(EIP, metal.device_ids["n1"])
    assert ips.delete_ip_address(metal.reservation_id) is None
    assert metal.emulator.assignments_of(EIP) == []
    with pytest.raises(NotFoundException):
        ips.find_ip_address_by_id(metal.reservation_id)
    public = ips.find_ip_reservations(metal.project_id, types=["public_ipv4"]).ip_addresses
    assert [r.actual_instance.management for r in public] == [True, True, True]  # the devices' /31s remain


def test_a_wrong_or_missing_token_is_401(metal: MetalWorld) -> None:
    with pytest.raises(UnauthorizedException) as refused:
        metalv1.ProjectsApi(metal.client(token="not-the-token")).find_projects()
    assert refused.value.status == 401
    assert refused.value.data.error == "Invalid authentication token"
    anonymous = requests.get(f"{metal.api_url}/devices/{metal.device_ids['n1']}", timeout=5)
    assert (anonymous.status_code, anonymous.json()) == (401, {"error": "Invalid authentication token"})
    assert metal.emulator.violations == []  # refusing a caller is part of the contract


# --- the contract check, from both sides --------------------------------------------------------------------------


def test_requests_that_break_the_spec_are_refused_and_recorded(metal: MetalWorld) -> None:
    session, api, n1 = raw(metal), metal.api_url, metal.device_ids["n1"]
    missing = session.post(f"{api}/devices/{n1}/ips", json={}, timeout=5)
    assert missing.status_code == 422
    assert "'address' is a required property" in missing.json()["errors"][0]
    assert session.post(f"{api}/devices/{n1}/ips", json={"address": 5}, timeout=5).status_code == 422
    garbled = session.post(f"{api}/devices/{n1}/ips", data=b"{", headers={"Content-Type": "application/json"},
                           timeout=5)
    assert garbled.status_code == 400
    assert session.get(f"{api}/devices/not-a-uuid", timeout=5).status_code == 422
    assert session.get(f"{api}/projects/{metal.project_id}/devices?per_page=0", timeout=5).status_code == 422
    assert session.get(f"{api}/projects/{metal.project_id}/ips?types=bogus", timeout=5).status_code == 422
    assert session.get(f"{api}/no-such-thing", timeout=5).status_code == 404
    assert session.patch(f"{api}/projects", json={}, timeout=5).status_code == 405

    found = metal.emulator.take_violations()
    assert len(found) == 8, found
    assert "POST /metal/v1/devices/" in found[0] and "'address' is a required property" in found[0]
    assert "not a 'uuid'" in found[3]
    assert "per_page" in found[4] and "minimum" in found[4]
    assert metal.emulator.assignments_of(EIP) == []


def test_valid_calls_the_emulator_does_not_serve_are_501_and_recorded(metal: MetalWorld) -> None:
    session = raw(metal)
    update = session.put(f"{metal.api_url}/devices/{metal.device_ids['n1']}", json={"hostname": "x"}, timeout=5)
    assert update.status_code == 501
    with pytest.raises(ServiceException) as search:
        devices_api(metal).find_project_devices(metal.project_id, search="n1")
    assert search.value.status == 501
    found = metal.emulator.take_violations()
    assert len(found) == 2 and "PUT /metal/v1/devices/" in found[0] and "search" in found[1]


def test_a_response_that_breaks_the_spec_is_recorded(metal: MetalWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """What makes the emulator trustworthy: a wrong field in its own answers fails the test that saw it."""
    state = metal.emulator.state
    reservation_json, device_json = state.reservation_json, state.device_json

    def without_type(*args: Any, **kwargs: Any) -> dict[str, Any]:
        doc = reservation_json(*args, **kwargs)
        del doc["type"]  # required by IPReservation
        return doc

    def with_extra_field(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return {**reservation_json(*args, **kwargs), "vip": True}  # IPReservation forbids extra properties

    def hostname_as_number(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return {**device_json(*args, **kwargs), "hostname": 42}

    session = raw(metal)
    monkeypatch.setattr(state, "reservation_json", without_type)
    assert session.get(f"{metal.api_url}/ips/{metal.reservation_id}", timeout=5).status_code == 200
    with pytest.raises(ValueError):  # and the SDK cannot parse it either
        ips_api(metal).find_ip_address_by_id(metal.reservation_id)
    monkeypatch.setattr(state, "reservation_json", with_extra_field)
    session.get(f"{metal.api_url}/projects/{metal.project_id}/ips", timeout=5)
    monkeypatch.setattr(state, "device_json", hostname_as_number)
    session.get(f"{metal.api_url}/devices/{metal.device_ids['n1']}", timeout=5)

    found = metal.emulator.take_violations()
    assert len(found) == 4, found
    assert all("breaks the spec (an emulator bug)" in v for v in found)
    assert "'type' is a required property" in found[0]
    assert "IPReservation" in found[0]  # which oneOf branch failed, and why
    assert "Additional properties are not allowed ('vip' was unexpected)" in found[2]
    assert "/hostname: 42 is not of type 'string'" in found[3]
    with pytest.raises(AssertionError, match="contract violation"):
        metal.emulator.violations.append("x")
        metal.emulator.assert_no_violations()
    metal.emulator.take_violations()


# --- faults -----------------------------------------------------------------------------------------------------


def test_a_429_carries_retry_after_and_the_rate_limit_reset(metal: MetalWorld) -> None:
    projects = metalv1.ProjectsApi(metal.client())
    metal.emulator.set_fault(fail_next=1, fail_status=429, retry_after=2)
    with pytest.raises(metalv1.ApiException) as limited:
        projects.find_project_by_id(metal.project_id)
    assert limited.value.status == 429
    headers = limited.value.headers
    assert headers["Retry-After"] == "2"
    assert 0 < int(headers["X-RateLimit-Reset"]) - time.time() <= 3
    assert headers["X-RateLimit-Remaining"] == "0"
    assert projects.find_project_by_id(metal.project_id).id == metal.project_id
    assert statuses(metal) == [429, 200]


def test_5xx_faults(metal: MetalWorld) -> None:
    projects = metalv1.ProjectsApi(metal.client())
    metal.emulator.set_fault(fail_next=2, fail_status=503, retry_after=None)
    for _ in range(2):
        with pytest.raises(ServiceException) as unavailable:
            projects.find_projects()
        assert unavailable.value.status == 503 and "Retry-After" not in unavailable.value.headers
    metal.emulator.set_fault(fail_next=1, fail_status=500)
    with pytest.raises(ServiceException):
        projects.find_projects()
    assert statuses(metal) == [503, 503, 500]


def test_the_sdks_default_retries_absorb_a_429_on_get_but_not_on_post(metal: MetalWorld) -> None:
    """urllib3's default Retry(3) honours Retry-After on 429 for idempotent methods only."""
    patient = metal.client(retries=None)
    metal.emulator.set_fault(fail_next=1, fail_status=429, retry_after=0)
    assert metalv1.DevicesApi(patient).find_device_by_id(metal.device_ids["n1"]).hostname == "n1"
    assert statuses(metal) == [429, 200]
    metal.emulator.set_fault(fail_next=1, fail_status=429, retry_after=0)
    with pytest.raises(metalv1.ApiException) as limited:
        metalv1.DevicesApi(patient).create_ip_assignment(metal.device_ids["n1"],
                                                         metalv1.IPAssignmentInput(address=EIP))
    assert limited.value.status == 429
    assert metal.emulator.assignments_of(EIP) == []


def test_rate_429_fails_about_that_fraction_reproducibly(metal: MetalWorld) -> None:
    projects = metalv1.ProjectsApi(metal.client())

    def outcomes(n: int) -> list[bool]:
        failed = []
        for _ in range(n):
            try:
                projects.find_project_by_id(metal.project_id)
                failed.append(False)
            except metalv1.ApiException as exc:
                assert exc.status == 429
                failed.append(True)
        return failed

    metal.emulator.set_fault(rate_429=0.3)
    first = outcomes(200)
    assert 0.2 <= sum(first) / len(first) <= 0.4
    metal.emulator.set_fault(rate_429=0.3)  # setting a fault reseeds: the same sequence again
    assert outcomes(200) == first
    metal.emulator.clear_fault()
    assert not any(outcomes(20))


def test_reset_drops_the_connection_without_an_answer(metal: MetalWorld) -> None:
    devices = devices_api(metal)
    metal.emulator.set_fault(reset=True)
    with pytest.raises(urllib3.exceptions.ProtocolError):
        devices.find_device_by_id(metal.device_ids["n1"])
    assert devices.find_device_by_id(metal.device_ids["n1"]).hostname == "n1"
    assert statuses(metal) == [0, 200]


def test_down_refuses_every_request_until_cleared(metal: MetalWorld) -> None:
    """The API is down in the middle of an EIP move: the POST never lands, and it lands once the API is back."""
    n1 = metal.device_ids["n1"]
    metal.emulator.set_fault(down=True)
    with pytest.raises(urllib3.exceptions.ProtocolError):
        devices_api(metal).create_ip_assignment(n1, metalv1.IPAssignmentInput(address=EIP))
    with pytest.raises(urllib3.exceptions.MaxRetryError):  # the SDK's default retries give up too
        devices_api(metal, retries=None).find_device_by_id(n1)
    assert metal.emulator.assignments_of(EIP) == []
    assert statuses(metal) == [0, 0, 0, 0, 0]  # one POST, then a GET and its three retries
    metal.emulator.clear_fault()
    devices_api(metal).create_ip_assignment(n1, metalv1.IPAssignmentInput(address=EIP))
    assert metal.emulator.assignments_of(EIP) == [n1]


def test_latency_delays_every_request(metal: MetalWorld) -> None:
    metal.emulator.set_fault(latency=0.3)
    started = time.monotonic()
    metalv1.ProjectsApi(metal.client()).find_projects()
    assert time.monotonic() - started >= 0.3


def test_faults_and_inspection_over_http(metal: MetalWorld) -> None:
    control = f"{metal.urls[0]}/_emulator"
    set_fault = requests.post(f"{control}/faults", json={"fail_next": 1, "fail_status": 500}, timeout=5)
    assert set_fault.status_code == 200 and set_fault.json()["fail_next"] == 1
    with pytest.raises(ServiceException):
        metalv1.ProjectsApi(metal.client()).find_projects()
    assert requests.get(f"{control}/faults", timeout=5).json()["fail_next"] == 0
    bad_faults: list[Any] = [{"rate_429": 2}, {"fail_status": 404}, {"latency": "slow"}, {"explode": True}, []]
    for bad in bad_faults:
        assert requests.post(f"{control}/faults", json=bad, timeout=5).status_code == 400
    assert requests.post(f"{control}/faults", json={"down": True}, timeout=5).status_code == 200
    assert requests.delete(f"{control}/faults", timeout=5).json()["down"] is False

    metal.emulator.assign(EIP, metal.device_ids["n2"])
    state = requests.get(f"{control}/state", timeout=5).json()
    (eip,) = [r for r in state["projects"][0]["reservations"] if r["address"] == f"{EIP}/32"]
    assert eip["assigned_to"] == [metal.device_ids["n2"]]
    logged = requests.get(f"{control}/requests", timeout=5).json()
    assert logged["counts"] == {"findProjects": 1}
    assert requests.get(f"{control}/violations", timeout=5).json() == {"violations": []}


def test_impossible_faults_are_refused() -> None:
    for bad in ({"fail_status": 404}, {"rate_429": 1.5}, {"latency": -1.0}, {"fail_next": -1},
                {"retry_after": float("nan")}):
        with pytest.raises(FaultError):
            MetalFault(**bad)
    assert MetalFault(reset=True).fail_next == 1  # a reset drops at least one request


# --- running it -------------------------------------------------------------------------------------------------


def test_without_validation_the_emulator_still_serves_the_sdk() -> None:
    """The lab runs from the runtime install, which has no openapi-core."""
    emulator = MetalApiEmulator(TOKEN, validate=False)
    project = emulator.add_project("lab")
    n1 = emulator.add_device(project, "n1")
    emulator.add_reservation(project, EIP)
    with MetalEmulatorThread(emulator) as thread:
        cfg = metalv1.Configuration(host=thread.api_url)
        cfg.api_key["x_auth_token"], cfg.retries = TOKEN, False
        api_client = metalv1.ApiClient(cfg)
        devices = metalv1.DevicesApi(api_client)
        assert [d.hostname for d in devices.find_project_devices_all_pages(project, per_page=1).devices] == ["n1"]
        devices.create_ip_assignment(n1, metalv1.IPAssignmentInput(address=EIP))
        missing = requests.post(f"{thread.api_url}/devices/{n1}/ips", json={}, headers={"X-Auth-Token": TOKEN},
                                timeout=5)
        assert missing.status_code == 422
        api_client.rest_client.pool_manager.clear()
    assert emulator.assignments_of(EIP) == [n1]
    assert emulator.contract is None and len(emulator.take_violations()) == 1


def test_validation_can_be_required_or_best_effort(tmp_path: Path) -> None:
    missing = tmp_path / "no-spec.yaml"
    with pytest.raises(FileNotFoundError):
        MetalApiEmulator(TOKEN, spec_path=missing)
    assert MetalApiEmulator(TOKEN, spec_path=missing, validate=None).contract is None
    assert MetalApiEmulator(TOKEN, validate=None).contract is load_contract()


def test_ids_are_reproducible_from_the_seed() -> None:
    def ids(seed: int) -> list[str]:
        emulator = MetalApiEmulator(TOKEN, seed=seed)
        project = emulator.add_project("p")
        return [project, emulator.add_device(project, "n1"), emulator.add_reservation(project, EIP)]

    assert ids(7) == ids(7) != ids(8)


def test_main_serves_a_seed_file_until_sigterm(tmp_path: Path) -> None:
    seed_file = tmp_path / "state.json"
    seed_file.write_text(json.dumps({"projects": [{
        "name": "lab", "id": "3f1d8d5e-6a0b-4c55-9f43-0d6c3c1b2a10",
        "devices": [{"hostname": "n1"}, {"hostname": "n2"}],
        "reservations": [{"address": f"{EIP}/32", "tags": ["eip"], "assigned_to": "n2"}],
    }]}))
    env = {**os.environ, "METAL_AUTH_TOKEN": TOKEN}
    process = subprocess.Popen([sys.executable, "-m", "kubevip_testbed.emulators.metalapi", "--listen", "127.0.0.1:0",
                                "--seed-file", str(seed_file)], stderr=subprocess.PIPE, text=True, env=env)
    watchdog = threading.Timer(30, process.kill)  # a silent emulator must not hang the suite
    watchdog.start()
    try:
        assert process.stderr is not None
        url = ""
        for line in process.stderr:
            match = re.search(r"event=metal_api\.started urls=\S*?(http://127\.0\.0\.1:\d+)", line)
            if match:
                url = match.group(1)
                break
        assert url, "the emulator never said where it listens"
        cfg = metalv1.Configuration(host=f"{url}/metal/v1")
        cfg.api_key["x_auth_token"], cfg.retries = TOKEN, False
        ips = metalv1.IPAddressesApi(metalv1.ApiClient(cfg))
        listed = ips.find_ip_reservations("3f1d8d5e-6a0b-4c55-9f43-0d6c3c1b2a10", include=["assignments"])
        (eip,) = [r.actual_instance for r in listed.ip_addresses if r.actual_instance.tags == ["eip"]]
        assert eip.address == EIP and len(eip.assignments) == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait(5)
        if process.stderr is not None:
            process.stderr.close()
