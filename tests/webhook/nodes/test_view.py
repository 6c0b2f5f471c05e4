"""The node view against the API stand-in, judged by what /mutate answers.

The app runs in-process (TestClient, so its lifespan runs the view's watch) and the view uses
the real `kubernetes` client through a kubeconfig, as `--kubeconfig` does. Every step waits for
the answer to change, bounded, instead of sleeping.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from fastapi.testclient import TestClient

from tests.kube_standin import StandIn, node_object, write_kubeconfig
from tests.support import eventually, free_port
from tests.webhook.conftest import load_fixture
from webhook.nodes.view import NodeView, cluster_source, core_api
from webhook.options import NoKvmPolicy
from webhook.serving.app import WebhookSettings, create_app
from webhook.serving.metrics import WebhookMetrics

KVM = "devices.kubevirt.io/kvm"
LAUNCHER = "v1-launcher-2018-privileged.json"
T = TypeVar("T")


@pytest.fixture
def stand_in(stand_in: StandIn) -> StandIn:
    stand_in.bookmark_seconds = 0.2
    stand_in.put_object(node_object("kvm-1"))
    stand_in.put_object(node_object("plain-1", kvm=None))
    return stand_in


@contextmanager
def webhook(kubeconfig: str, policy: NoKvmPolicy, metrics: WebhookMetrics) -> Iterator[TestClient]:
    view = NodeView(
        lambda: core_api(kubeconfig), metrics=metrics, watch_seconds=5, backoff=(0.05, 0.2)
    )
    settings = WebhookSettings(no_kvm_policy=policy)
    app = create_app(settings, metrics=metrics, background=[view.run], nodes=view.current)
    with TestClient(app) as client:
        yield client


@pytest.fixture
def metrics() -> WebhookMetrics:
    return WebhookMetrics.create()


@pytest.fixture
def deny(stand_in: StandIn, tmp_path: Path, metrics: WebhookMetrics) -> Iterator[TestClient]:
    with webhook(write_kubeconfig(tmp_path / "kubeconfig", stand_in.url), "deny", metrics) as c:
        yield c


def mutate(client: TestClient) -> dict[str, Any]:
    reply = client.post("/mutate", content=json.dumps(load_fixture(LAUNCHER)).encode())
    assert reply.status_code == 200
    return reply.json()["response"]  # type: ignore[no-any-return]


def patched_resources(response: dict[str, Any]) -> set[str]:
    if "patch" not in response:
        return set()
    resources: set[str] = set()
    for op in json.loads(base64.b64decode(response["patch"])):
        path = op["path"]
        if path.endswith("/resources"):
            resources |= set(op["value"]["limits"])
        elif path.endswith("/resources/limits"):
            resources |= set(op["value"])
        elif "/resources/limits/" in path:
            resources.add(path.rpartition("/")[2].replace("~1", "/").replace("~0", "~"))
    return resources


def allowed_with_kvm(client: TestClient) -> dict[str, Any] | None:
    response = mutate(client)
    if response["allowed"] and KVM in patched_resources(response):
        scheduling = [w for w in response.get("warnings", ()) if "node" in w]
        return None if scheduling else response
    return None


def denied(client: TestClient, because: str) -> dict[str, Any] | None:
    response = mutate(client)
    if not response["allowed"] and because in response["status"]["message"]:
        return response
    return None


def set_node(stand_in: StandIn, name: str, change: Callable[[dict[str, Any]], None]) -> None:
    node = stand_in.get_object("v1", "nodes", "", name)
    change(node)
    stand_in.replace_object(node)


def ready(status: str) -> Callable[[dict[str, Any]], None]:
    def change(node: dict[str, Any]) -> None:
        for condition in node["status"]["conditions"]:
            if condition["type"] == "Ready":
                condition["status"] = status

    return change


def kvm_allocatable(amount: str) -> Callable[[dict[str, Any]], None]:
    def change(node: dict[str, Any]) -> None:
        node["status"]["allocatable"][KVM] = amount

    return change


def test_a_node_going_not_ready_turns_injection_into_a_denial_and_back(
    stand_in: StandIn, deny: TestClient, metrics: WebhookMetrics
) -> None:
    eventually(lambda: allowed_with_kvm(deny), "the launcher to be patched with kvm")
    set_node(stand_in, "kvm-1", ready("False"))
    response = eventually(lambda: denied(deny, "1 NotReady"), "a denial naming the NotReady node")
    assert response["status"]["code"] == 403
    assert "2 nodes ruled out (1 NotReady, 1 no kvm)" in response["status"]["message"]
    assert "patch" not in response
    set_node(stand_in, "kvm-1", ready("True"))
    eventually(lambda: allowed_with_kvm(deny), "the launcher to be patched again")
    sample = metrics.registry.get_sample_value
    assert sample("virtdev_webhook_node_view_synced") == 1
    assert sample("virtdev_webhook_nodes_known") == 2
    assert sample("virtdev_webhook_feasible_nodes") == 1
    assert (sample("virtdev_webhook_scheduling_decisions_total", {"outcome": "denied"}) or 0) >= 1


def test_kvm_allocatable_dropping_to_zero_is_seen(stand_in: StandIn, deny: TestClient) -> None:
    eventually(lambda: allowed_with_kvm(deny), "the launcher to be patched with kvm")
    set_node(stand_in, "kvm-1", kvm_allocatable("0"))
    eventually(lambda: denied(deny, "1 kvm allocatable 0"), "a denial naming kvm allocatable 0")


def test_a_410_gone_forces_a_relist_that_sees_what_the_watch_missed(
    stand_in: StandIn, deny: TestClient
) -> None:
    eventually(lambda: allowed_with_kvm(deny), "the launcher to be patched with kvm")
    eventually(lambda: stand_in.open_watches == 1, "the view's watch")
    # Hold the view's next call to the API server until history has moved on and been compacted.
    arrived, release = threading.Event(), threading.Event()

    def hold(method: str, key: tuple[str, str, str, str]) -> None:
        if key[1] == "nodes" and not release.is_set():
            arrived.set()
            release.wait(timeout=20)

    stand_in.before = hold
    stand_in.drop_watches()
    assert arrived.wait(timeout=20), "the view did not come back after its watch was cut"
    set_node(stand_in, "kvm-1", kvm_allocatable("0"))
    stand_in.compact()
    release.set()
    eventually(lambda: denied(deny, "kvm allocatable 0"), "the relisted view to deny")
    watches = [r for r in stand_in.requests if r.resource == "nodes" and "watch=" in r.query]
    lists = [r for r in stand_in.requests if r.resource == "nodes" and "watch=" not in r.query]
    assert len(lists) >= 2, "a 410 must make the view list again"
    assert watches


def test_a_dropped_connection_resumes_the_watch_without_losing_changes(
    stand_in: StandIn, deny: TestClient
) -> None:
    eventually(lambda: allowed_with_kvm(deny), "the launcher to be patched with kvm")
    eventually(lambda: stand_in.open_watches == 1, "the view's watch")
    stand_in.drop_watches()
    set_node(stand_in, "kvm-1", ready("False"))
    eventually(lambda: denied(deny, "NotReady"), "the resumed watch to bring the change")
    lists = [r for r in stand_in.requests if r.resource == "nodes" and "watch=" not in r.query]
    assert len(lists) == 1, "a dropped connection resumes from the last resourceVersion"


def test_an_unreachable_api_server_never_blocks_admission(
    tmp_path: Path, metrics: WebhookMetrics
) -> None:
    nowhere = write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{free_port()}")
    with webhook(nowhere, "deny", metrics) as client:
        response = mutate(client)
        assert response["allowed"] is True
        assert KVM in patched_resources(response)
        sample = metrics.registry.get_sample_value
        assert sample("virtdev_webhook_scheduling_decisions_total", {"outcome": "unsynced"}) == 1
        assert sample("virtdev_webhook_node_view_synced") == 0


@pytest.mark.parametrize(
    ("policy", "expect"),
    [("warn", {KVM, "devices.kubevirt.io/tun"}), ("emulate", {"devices.kubevirt.io/tun"})],
)
def test_warn_and_emulate_patch_with_a_warning(
    stand_in: StandIn,
    tmp_path: Path,
    metrics: WebhookMetrics,
    policy: NoKvmPolicy,
    expect: set[str],
) -> None:
    stand_in.delete_object(node_object("kvm-1"))
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", stand_in.url)

    def warned(client: TestClient) -> dict[str, Any] | None:
        response = mutate(client)
        warnings = [w for w in response.get("warnings", ()) if "1 no kvm" in w]
        return response if warnings else None

    with webhook(kubeconfig, policy, metrics) as client:
        response = eventually(lambda: warned(client), f"a {policy} warning")
        assert response["allowed"] is True
        assert patched_resources(response) == expect
        assert all(len(w) <= 120 for w in response["warnings"])


def test_without_a_cluster_the_view_is_off_and_says_so_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, metrics: WebhookMetrics
) -> None:
    from webhook.serving.server import node_view

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with caplog.at_level("INFO", logger="virtdev.webhook"):
        assert node_view(None, metrics) is None
    assert [r.message for r in caplog.records if "no cluster configured" in r.message]
    assert len(caplog.records) == 1


@pytest.mark.parametrize(
    ("kubeconfig", "environ", "source"),
    [
        (None, {}, None),
        (None, {"HOME": "/root", "KUBECONFIG": "/etc/kubeconfig"}, None),
        (None, {"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, "in-cluster service account"),
        ("/etc/kc", {"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, "kubeconfig /etc/kc"),
    ],
)
def test_the_cluster_comes_from_the_flag_or_the_pod_never_from_the_shell(
    kubeconfig: str | None, environ: dict[str, str], source: str | None
) -> None:
    assert cluster_source(kubeconfig, environ) == source


def test_the_policy_and_kubeconfig_are_config_file_keys(tmp_path: Path) -> None:
    from virtdev.cli import parse

    config = tmp_path / "virtdev.yaml"
    config.write_text("no-kvm-policy: deny\nkubeconfig: /etc/virtdev/kubeconfig\n")
    args = parse(["webhook", "--config", str(config)])
    assert (args.no_kvm_policy, args.kubeconfig) == ("deny", "/etc/virtdev/kubeconfig")
    assert (
        parse(["webhook", "--config", str(config), "--no-kvm-policy", "emulate"]).no_kvm_policy
        == "emulate"
    )
    config.write_text("no-kvm-policy: sometimes\n")
    with pytest.raises(SystemExit):
        parse(["webhook", "--config", str(config)])


def test_shutting_the_app_down_closes_the_watch_promptly(
    stand_in: StandIn, tmp_path: Path, metrics: WebhookMetrics
) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", stand_in.url)
    view = NodeView(lambda: core_api(kubeconfig), metrics=metrics, watch_seconds=300)
    app = create_app(WebhookSettings(), metrics=metrics, background=[view.run], nodes=view.current)
    with TestClient(app):
        eventually(lambda: stand_in.open_watches == 1, "the view's watch")
        started = time.monotonic()
    assert time.monotonic() - started < 5
    eventually(lambda: stand_in.open_watches == 0, "the watch connection to close", timeout=5)
    assert view.snapshot.synced is False


def test_an_unknown_policy_fails_at_start() -> None:
    with pytest.raises(ValueError, match="no-kvm policy"):
        WebhookSettings(no_kvm_policy="sometimes")  # type: ignore[arg-type]  # on purpose


def test_the_list_is_read_in_pages_and_the_view_counts_every_node(
    stand_in: StandIn, tmp_path: Path, metrics: WebhookMetrics
) -> None:
    for index in range(5):
        stand_in.put_object(node_object(f"more-{index}"))
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", stand_in.url)
    view = NodeView(lambda: core_api(kubeconfig), metrics=metrics, watch_seconds=5, page_size=2)
    app = create_app(WebhookSettings(), metrics=metrics, background=[view.run], nodes=view.current)
    with TestClient(app):
        eventually(lambda: view.snapshot.synced or None, "the view to sync")
    nodes = [r.query for r in stand_in.requests if r.resource == "nodes"]
    lists = [query for query in nodes if "watch=" not in query]
    assert len(lists) == 4 and all("limit=2" in query for query in lists)
    assert ["continue=" in query for query in lists] == [False, True, True, True]
    assert metrics.registry.get_sample_value("virtdev_webhook_nodes_known") == 7


def test_with_a_node_selector_only_matching_nodes_count_and_one_leaving_is_forgotten(
    stand_in: StandIn, tmp_path: Path, metrics: WebhookMetrics
) -> None:
    set_node(stand_in, "kvm-1", lambda n: n["metadata"]["labels"].update({"virt": "yes"}))
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", stand_in.url)
    view = NodeView(
        lambda: core_api(kubeconfig), metrics=metrics, watch_seconds=5, label_selector="virt=yes"
    )
    settings = WebhookSettings(no_kvm_policy="deny")
    app = create_app(settings, metrics=metrics, background=[view.run], nodes=view.current)
    sample = metrics.registry.get_sample_value
    with TestClient(app) as client:
        eventually(lambda: view.snapshot.synced or None, "the view to sync")
        assert allowed_with_kvm(client) is not None
        assert sample("virtdev_webhook_nodes_known") == 1  # plain-1 is not selected
        set_node(stand_in, "kvm-1", lambda n: n["metadata"]["labels"].pop("virt"))
        eventually(lambda: sample("virtdev_webhook_nodes_known") == 0 or None, "kvm-1 to leave")
        response = mutate(client)
        assert response["allowed"] is True  # no node at all: warned, never denied
        assert any("no nodes known" in w for w in response["warnings"])
    watches = [r.query for r in stand_in.requests if r.resource == "nodes" and "watch=" in r.query]
    assert watches and all("labelSelector=virt%3Dyes" in query for query in watches)
