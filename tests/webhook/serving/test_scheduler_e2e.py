"""End to end: the real `virtdev webhook` process over HTTPS, its node view on the API stand-in.

The same launcher review is sent throughout; what comes back — a patch with kvm, a warning, a
kvm-less patch or a denial — depends only on `--no-kvm-policy` and on what the stand-in says
the nodes advertise. Every wait polls the webhook's own answers or /metrics, bounded.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import ssl
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests import support
from tests.kube_standin import StandIn, node_object, write_kubeconfig
from tests.support import eventually
from tests.webhook.conftest import fixture_bytes

pytestmark = pytest.mark.slow

KVM, TUN = "devices.kubevirt.io/kvm", "devices.kubevirt.io/tun"
REVIEW = fixture_bytes("v1-launcher-2018-privileged.json")
T = TypeVar("T")


@dataclass
class Webhook:
    port: int
    metrics_port: int
    context: ssl.SSLContext
    log: Path

    def mutate(self) -> dict[str, Any]:
        request = urllib.request.Request(
            f"https://127.0.0.1:{self.port}/mutate",
            data=REVIEW,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, context=self.context, timeout=10) as reply:
            return json.loads(reply.read())["response"]  # type: ignore[no-any-return]

    def metric(self, name: str) -> float | None:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                text = reply.read().decode()
        except OSError:
            return None
        match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else None


@contextlib.contextmanager
def webhook(tmp_path: Path, kubeconfig: str, policy: str, *flags: str) -> Iterator[Webhook]:
    """The harness's `virtdev webhook` with a node view, once the view has synced."""
    with support.running_webhook(
        tmp_path / f"webhook-{policy}", "--kubeconfig", kubeconfig, "--no-kvm-policy", policy,
        *flags,
    ) as process:  # fmt: skip
        context = ssl.create_default_context(cafile=str(process.ca_cert))
        hook = Webhook(process.port, process.metrics_port, context, process.log)

        def synced() -> bool:
            assert process.process.poll() is None, process.log_tail()
            return hook.metric("virtdev_webhook_node_view_synced") == 1

        eventually(synced, "the webhook's node view to sync", timeout=60)
        yield hook


def devices_in(response: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    for op in json.loads(base64.b64decode(response.get("patch", "") or "W10=")):
        if op["path"].endswith("/resources/limits"):
            found |= set(op["value"])
        elif "/resources/limits/" in op["path"]:
            found.add(op["path"].rpartition("/")[2].replace("~1", "/"))
    return found


@pytest.fixture
def stand_in(stand_in: StandIn) -> StandIn:
    stand_in.put_object(node_object("kvm-1"))
    stand_in.put_object(node_object("plain-1", kvm=None))
    return stand_in


def drop_kvm(stand_in: StandIn) -> None:
    node = stand_in.get_object("v1", "nodes", "", "kvm-1")
    node["status"]["allocatable"][KVM] = "0"
    stand_in.replace_object(node)


def test_the_policy_decides_what_a_kvm_less_cluster_gets(stand_in: StandIn, tmp_path: Path) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", stand_in.url)
    hooks = [webhook(tmp_path, kubeconfig, policy) for policy in ("warn", "emulate", "deny")]
    with hooks[0] as warn, hooks[1] as emulate, hooks[2] as deny:
        # kvm-1 advertises kvm: every policy patches as usual, without a scheduling warning.
        for hook in (warn, emulate, deny):
            response = hook.mutate()
            assert response["allowed"] is True
            assert devices_in(response) == {KVM, TUN}
            assert not [w for w in response.get("warnings", ()) if "ruled out" in w]

        drop_kvm(stand_in)

        def ruled_out(hook: Webhook) -> dict[str, Any] | None:
            response = hook.mutate()
            text = " ".join(response.get("warnings", ())) + json.dumps(response.get("status"))
            return response if "1 kvm allocatable 0" in text else None

        warned = eventually(lambda: ruled_out(warn), "warn to warn", timeout=60)
        assert warned["allowed"] is True and devices_in(warned) == {KVM, TUN}
        assert any(w.startswith(f"no schedulable node has {KVM}") for w in warned["warnings"])

        emulated = eventually(lambda: ruled_out(emulate), "emulate to leave kvm out", timeout=60)
        assert emulated["allowed"] is True and devices_in(emulated) == {TUN}
        assert all(len(w) <= 120 for w in emulated["warnings"])

        denied = eventually(lambda: ruled_out(deny), "deny to deny", timeout=60)
        assert denied["allowed"] is False and "patch" not in denied
        assert denied["status"]["code"] == 403
        assert "2 nodes ruled out (1 kvm allocatable 0, 1 no kvm)" in denied["status"]["message"]
        assert deny.metric('virtdev_webhook_scheduling_decisions_total{outcome="denied"}')
        assert deny.metric("virtdev_webhook_nodes_known") == 2
        assert deny.metric("virtdev_webhook_feasible_nodes") == 0


def test_a_node_selector_keeps_the_view_to_the_nodes_that_may_run_vms(
    stand_in: StandIn, tmp_path: Path
) -> None:
    stand_in.put_object(node_object("kvm-2", labels={"virt": "yes"}))
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", stand_in.url)
    with webhook(tmp_path, kubeconfig, "deny", "--node-selector", "virt=yes") as hook:
        assert hook.metric("virtdev_webhook_nodes_known") == 1
        assert devices_in(hook.mutate()) == {KVM, TUN}
    nodes = [r for r in stand_in.requests if r.resource == "nodes" and r.method == "GET"]
    assert nodes and all("labelSelector=virt%3Dyes" in r.query for r in nodes)
