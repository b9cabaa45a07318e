"""--enableNodeLabeling with --services: the serving Node's service-provided.kube-vip.io/<name>.<namespace> labels,
against the API emulator (which validates label keys and values as the real API server does): set and removed with
serving, a key too long skipped with one line while the others go on, 1,000 Services in one patch, a crash's
leftovers removed at the first write, every label removed at exit, and the Services controller's decisions
reaching it."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterator

import pytest
from kubernetes import client

from kubevip_metal.daemon.vips import VipController
from kubevip_metal.services.controller import ServicesController
from kubevip_metal.services.labels import PREFIX, ServiceLabels, service_label_key
from kubevip_testbed.waiting import wait_for
from tests.fakes import FakeAddresses, RecordingAnnouncer
from tests.kubeapi_support import EmulatedApi
from tests.test_services_controller import RULES, TIMERS, Cluster

V4, V6 = ipaddress.ip_address("192.0.2.50"), ipaddress.ip_address("2001:db8::50")


def test_the_key_is_name_dot_namespace_and_too_long_is_none() -> None:
    assert service_label_key("default", "web") == "service-provided.kube-vip.io/web.default"
    assert service_label_key("n" * 31, "s" * 31) == PREFIX + "s" * 31 + "." + "n" * 31  # 63: fits
    assert service_label_key("n" * 32, "s" * 31) is None


@pytest.fixture
def api() -> Iterator[EmulatedApi]:
    with EmulatedApi(["n1", "admin"]) as emulated:
        client.CoreV1Api(emulated.client("admin")).create_node(client.V1Node(metadata=client.V1ObjectMeta(
            name="n1", labels={"kubernetes.io/hostname": "n1"})))
        yield emulated


def _ours(api: EmulatedApi) -> dict[str, str]:
    stored = api.kube.get_object("v1/nodes", None, "n1")
    assert stored is not None
    return {k: v for k, v in (stored["metadata"].get("labels") or {}).items() if k.startswith(PREFIX)}


@pytest.fixture
def labels(api: EmulatedApi) -> Iterator[ServiceLabels]:
    made = ServiceLabels(functools.partial(api.client, "n1"), "n1", interval=0.2, backoff=0.01)
    made.start()
    yield made
    made.close(timeout=0)


def test_served_services_are_labelled_and_unlabelled(api: EmulatedApi, labels: ServiceLabels) -> None:
    labels.served({("default", "web"): [V4], ("shop", "db"): [V4, V6]})
    wait_for(lambda: _ours(api) == {PREFIX + "web.default": "192.0.2.50",
                                    PREFIX + "db.shop": "192.0.2.50_20010db8000000000000000000000050"})
    labels.served({("default", "web"): None})
    wait_for(lambda: _ours(api) == {PREFIX + "db.shop": "192.0.2.50_20010db8000000000000000000000050"})
    stored = api.kube.get_object("v1/nodes", None, "n1")
    assert stored is not None and stored["metadata"]["labels"]["kubernetes.io/hostname"] == "n1"


def test_a_key_too_long_is_skipped_with_one_line_and_the_others_go_on(
        api: EmulatedApi, labels: ServiceLabels, caplog: pytest.LogCaptureFixture) -> None:
    long_one = ("a-namespace-with-a-long-name", "a-service-with-a-name-that-is-long-too-x")
    labels.served({long_one: [V4], ("default", "web"): [V4]})
    labels.served({long_one: [V6]})  # changed again: no second line
    wait_for(lambda: _ours(api) == {PREFIX + "web.default": "192.0.2.50"})
    skipped = [r for r in caplog.records if r.getMessage() == "nodelabel.service_skipped"]
    assert len(skipped) == 1
    assert "a-namespace-with-a-long-name/a-service-with-a-name-that-is-long-too-x" in str(skipped[0].__dict__)


def test_a_thousand_services_cost_one_patch_not_a_thousand(api: EmulatedApi, labels: ServiceLabels) -> None:
    api.kube.reset_request_counts()
    for i in range(1000):  # the Services worker's passes, one per Service, as fast as they come
        labels.served({("default", f"svc-{i}"): [ipaddress.ip_address(f"10.{i // 250}.{i % 250}.1")]})
    wait_for(lambda: len(_ours(api)) == 1000, timeout=30)
    wait_for(labels.idle)
    patches = api.kube.request_counts_by_verb().get("n1", {}).get("patch", 0)
    assert 1 <= patches <= 3, patches  # the first change may go alone, the rest wait out the interval together
    assert labels.patches == patches


def test_a_crashs_leftovers_are_removed_at_the_first_write(api: EmulatedApi) -> None:
    client.CoreV1Api(api.client("admin")).patch_node("n1", {"metadata": {"labels": {
        PREFIX + "old.default": "192.0.2.9", PREFIX + "web.default": "192.0.2.1"}}})
    made = ServiceLabels(functools.partial(api.client, "n1"), "n1", interval=0.2, backoff=0.01)
    made.start()
    try:
        made.served({("default", "web"): [V4]})
        wait_for(lambda: _ours(api) == {PREFIX + "web.default": "192.0.2.50"})
    finally:
        made.close(timeout=0)


def test_close_removes_every_label_set_here(api: EmulatedApi, labels: ServiceLabels) -> None:
    labels.served({("default", "web"): [V4], ("default", "api"): [V6]})
    wait_for(lambda: len(_ours(api)) == 2)
    labels.close(timeout=5)
    assert _ours(api) == {}


def test_after_the_shutdown_began_nothing_is_labelled_again(api: EmulatedApi, labels: ServiceLabels) -> None:
    labels.served({("default", "web"): [V4]})
    wait_for(lambda: len(_ours(api)) == 1)
    labels.begin_close()
    labels.served({("default", "api"): [V4]})  # the Services worker's last pass, before it stops
    labels.close(timeout=5)
    assert _ours(api) == {}


def test_failures_are_retried_and_a_refusal_never_raised(api: EmulatedApi, labels: ServiceLabels,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    api.kube.set_fault("n1", fail_next=2, fail_status=503)
    labels.served({("default", "web"): [V4]})
    wait_for(lambda: _ours(api) == {PREFIX + "web.default": "192.0.2.50"}, timeout=10)
    api.kube.forbid("n1")
    labels.served({("default", "api"): [V4]})
    wait_for(lambda: any(r.getMessage() == "nodelabel.refused" for r in caplog.records), timeout=10)
    api.kube.allow("n1")
    labels.served({("default", "db"): [V4]})  # the next change writes what the refused one could not
    wait_for(lambda: set(_ours(api)) == {PREFIX + "web.default", PREFIX + "api.default", PREFIX + "db.default"})


def test_the_services_controller_tells_who_is_served_here() -> None:
    cluster = Cluster()
    client.CoreV1Api(cluster.admin).create_node(client.V1Node(metadata=client.V1ObjectMeta(name="n1")))
    labels = ServiceLabels(lambda: cluster.api("n1"), "n1", interval=0.2, backoff=0.01)
    labels.start()
    addresses = FakeAddresses(("eth0", "lo"))
    vips = VipController(addresses, [RecordingAnnouncer()])
    controller = ServicesController(vips, cluster.api("n1"), "n1", RULES, interface_for=lambda _a: "eth0", lock=None,
                                    timers=TIMERS, write_vip_host=False, prefix=lambda a: 32 if a.version == 4 else 128,
                                    on_served=labels.served)
    controller.start()
    try:
        def ours() -> dict[str, str]:
            stored = cluster.kube.get_object("v1/nodes", None, "n1")
            assert stored is not None
            return dict(stored["metadata"].get("labels") or {})

        cluster.service("web", "192.0.2.50")
        cluster.endpoints("web", ["n2"])
        wait_for(lambda: ours() == {PREFIX + "web.default": "192.0.2.50"}, timeout=10)
        cluster.core.delete_namespaced_service("web", "default")
        wait_for(lambda: ours() == {}, timeout=10)
    finally:
        controller.stop()
        vips.stop()
        labels.close(timeout=0)
        cluster.stop()
