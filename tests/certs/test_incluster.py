"""`virtdev certs ensure` with the real kubernetes client against the API stand-in."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from certs import incluster, pki
from certs.store import service_dns_names
from tests.certs.conftest import VIRTDEV, run
from tests.kube_standin import StandIn

NS, SERVICE, SECRET, CONFIG = "virtdev", "virtdev-webhook", "virtdev-webhook-tls", "virtdev"
ADMISSION = "admissionregistration.k8s.io/v1"
KINDS = {
    "mutatingwebhookconfigurations": "MutatingWebhookConfiguration",
    "validatingwebhookconfigurations": "ValidatingWebhookConfiguration",
}
ALLOWED = {
    ("GET", "secrets", NS, SECRET),
    ("PUT", "secrets", NS, SECRET),
    *((verb, resource, "", CONFIG) for verb in ("GET", "PATCH") for resource in KINDS),
}
TARGET = incluster.Target(
    namespace=NS,
    service=SERVICE,
    secret=SECRET,
    mutating_configuration=CONFIG,
    validating_configuration=CONFIG,
    dns_names=tuple(service_dns_names(SERVICE, NS)),
)


def webhook_entry(name: str, service: str = SERVICE) -> dict[str, Any]:
    return {
        "name": name,
        "clientConfig": {"service": {"name": service, "namespace": NS, "path": "/mutate"}},
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "aFieldFromANewerKubernetes": {"kept": True},
    }


@pytest.fixture
def cluster() -> Iterator[StandIn]:
    """What the manifests leave: an empty TLS Secret and two configurations without caBundle."""
    with StandIn().running() as stand_in:
        stand_in.put_object(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": SECRET, "namespace": NS},
                "type": "kubernetes.io/tls",
                "data": {"tls.crt": "", "tls.key": ""},
            }
        )
        for kind in KINDS.values():
            stand_in.put_object(
                {
                    "apiVersion": ADMISSION,
                    "kind": kind,
                    "metadata": {"name": CONFIG},
                    "webhooks": [
                        webhook_entry("pods.virtdev.kubevirt.io"),
                        webhook_entry("someone-else.example", service="other"),
                        webhook_entry("ephemeral.virtdev.kubevirt.io"),
                    ],
                }
            )
        yield stand_in


@pytest.fixture
def api(cluster: StandIn) -> client.ApiClient:
    configuration = client.Configuration()
    configuration.host = cluster.url
    return client.ApiClient(configuration)


def secret_data(cluster: StandIn) -> dict[str, bytes]:
    data = cluster.get_object("v1", "secrets", NS, SECRET)["data"]
    return {key: base64.b64decode(value) for key, value in data.items()}


def ca_bundles(cluster: StandIn) -> list[str | None]:
    bundles = []
    for resource in KINDS:
        for webhook in cluster.get_object(ADMISSION, resource, "", CONFIG)["webhooks"]:
            if webhook["clientConfig"]["service"]["name"] == SERVICE:
                bundles.append(webhook["clientConfig"].get("caBundle"))
    return bundles


def calls(cluster: StandIn) -> list[tuple[str, str, str, str]]:
    return [(r.method, r.resource, r.namespace, r.name) for r in cluster.requests]


def test_bootstrap_fills_the_secret_and_both_ca_bundles(
    cluster: StandIn, api: client.ApiClient
) -> None:
    outcome = incluster.ensure(api, TARGET)
    assert outcome.changed and outcome.attempts == 1
    data = secret_data(cluster)
    assert set(data) == {"tls.crt", "tls.key", "ca.crt", "ca.key"}
    (ca,) = pki.load_certs(data["ca.crt"])
    leaf = pki.load_certs(data["tls.crt"])[0]
    assert pki.signed_by(leaf, ca)
    assert pki.same_public_key(leaf, pki.load_key(data["tls.key"]))
    assert pki.subject_alt_names(leaf)[0] == frozenset(TARGET.dns_names)
    assert ca_bundles(cluster) == [base64.b64encode(data["ca.crt"]).decode()] * 4


def test_webhooks_of_other_services_and_unknown_fields_are_left_alone(
    cluster: StandIn, api: client.ApiClient
) -> None:
    incluster.ensure(api, TARGET)
    for resource in KINDS:
        webhooks = cluster.get_object(ADMISSION, resource, "", CONFIG)["webhooks"]
        assert "caBundle" not in webhooks[1]["clientConfig"]
        assert all(w["aFieldFromANewerKubernetes"] == {"kept": True} for w in webhooks)


def test_a_second_run_writes_nothing(cluster: StandIn, api: client.ApiClient) -> None:
    incluster.ensure(api, TARGET)
    before = cluster.store.resource_version
    cluster.requests.clear()
    assert not incluster.ensure(api, TARGET).changed
    assert cluster.store.resource_version == before
    assert {method for method, *_ in calls(cluster)} == {"GET"}


def test_only_the_calls_the_least_rbac_allows_are_made(
    cluster: StandIn, api: client.ApiClient
) -> None:
    incluster.ensure(api, TARGET)
    incluster.ensure(api, TARGET, now=datetime.now(UTC) + timedelta(days=300))
    made = set(calls(cluster))
    assert made <= ALLOWED, made - ALLOWED
    assert ("PUT", "secrets", NS, SECRET) in made


def test_a_conflict_on_the_secret_is_retried_from_fresh_reads(
    cluster: StandIn, api: client.ApiClient
) -> None:
    def someone_else_labels_it(method: str, key: tuple[str, str, str, str]) -> None:
        if method == "PUT":
            cluster.before = None
            current = cluster.store.get(key)
            current["metadata"]["labels"] = {"touched": "yes"}
            cluster.store.update(key, current)

    cluster.before = someone_else_labels_it
    outcome = incluster.ensure(api, TARGET)
    assert outcome.attempts == 2
    assert [r.status for r in cluster.requests if r.method == "PUT"] == [409, 200]
    stored = cluster.get_object("v1", "secrets", NS, SECRET)
    assert stored["metadata"]["labels"] == {"touched": "yes"}, "the other writer's change kept"
    ca = base64.b64decode(stored["data"]["ca.crt"])
    assert ca_bundles(cluster) == [base64.b64encode(ca).decode()] * 4


def test_a_conflict_on_a_configuration_is_retried(cluster: StandIn, api: client.ApiClient) -> None:
    def someone_else_edits(method: str, key: tuple[str, str, str, str]) -> None:
        if method == "PATCH":
            cluster.before = None
            current = cluster.store.get(key)
            current["webhooks"].insert(0, webhook_entry("inserted.example", service="other"))
            cluster.store.update(key, current)

    cluster.before = someone_else_edits
    outcome = incluster.ensure(api, TARGET)
    assert outcome.attempts == 2
    assert [r.status for r in cluster.requests if r.method == "PATCH"][:1] == [409]
    ours = ca_bundles(cluster)
    assert len(ours) == 4 and None not in ours and len(set(ours)) == 1
    mutating = cluster.get_object(ADMISSION, "mutatingwebhookconfigurations", "", CONFIG)
    assert "caBundle" not in mutating["webhooks"][0]["clientConfig"], "index moved: no mix-up"


def test_a_wiped_ca_bundle_is_restored_without_touching_the_secret(
    cluster: StandIn, api: client.ApiClient
) -> None:
    incluster.ensure(api, TARGET)
    key = (ADMISSION, "validatingwebhookconfigurations", "", CONFIG)
    wiped = cluster.store.get(key)
    del wiped["webhooks"][0]["clientConfig"]["caBundle"]
    cluster.store.update(key, wiped)
    cluster.requests.clear()
    outcome = incluster.ensure(api, TARGET)
    assert outcome.changes == (f"set caBundle of validating webhook configuration {CONFIG}",)
    assert ("PUT", "secrets", NS, SECRET) not in calls(cluster)
    assert None not in ca_bundles(cluster)


def test_ca_rotation_keeps_old_and_new_ca_in_ca_bundle_until_the_old_leaf_is_gone(
    cluster: StandIn, api: client.ApiClient, tmp_path: Path
) -> None:
    start = datetime.now(UTC)
    incluster.ensure(api, TARGET, now=start)
    old_ca = pki.load_certs(secret_data(cluster)["ca.crt"])[0]
    renewal = pki.renewal_time(old_ca) + timedelta(hours=1)
    incluster.ensure(api, TARGET, now=renewal - timedelta(days=1))  # a current leaf, old CA
    old_leaf = pki.load_certs(secret_data(cluster)["tls.crt"])[0]

    def bundle_serials() -> list[int]:
        (bundle,) = set(ca_bundles(cluster))
        assert bundle is not None
        return [ca.serial_number for ca in pki.load_certs(base64.b64decode(bundle))]

    incluster.ensure(api, TARGET, now=renewal)
    new_ca = pki.load_certs(secret_data(cluster)["ca.crt"])[-1]
    assert bundle_serials() == [old_ca.serial_number, new_ca.serial_number]
    assert pki.load_certs(secret_data(cluster)["tls.crt"])[0] == old_leaf

    incluster.ensure(api, TARGET, now=renewal + timedelta(minutes=11))
    leaf = pki.load_certs(secret_data(cluster)["tls.crt"])[0]
    assert pki.signed_by(leaf, new_ca)
    assert bundle_serials() == [old_ca.serial_number, new_ca.serial_number]
    if shutil.which("openssl"):  # an independent check: both leaves against the one bundle
        (bundle,) = set(ca_bundles(cluster))
        assert bundle is not None
        (tmp_path / "bundle.crt").write_bytes(base64.b64decode(bundle))
        for name, cert in (("old.crt", old_leaf), ("new.crt", leaf)):
            (tmp_path / name).write_bytes(pki.cert_pem(cert))
            # -attime: the instant of this step, years ahead of the real clock
            at = str(int((renewal + timedelta(minutes=11)).timestamp()))
            checked = run("openssl", "verify", "-attime", at, "-purpose", "sslserver",
                          "-CAfile", tmp_path / "bundle.crt", tmp_path / name)  # fmt: skip
            assert checked.stdout.strip().endswith(": OK")

    incluster.ensure(api, TARGET, now=renewal + timedelta(minutes=22))
    assert bundle_serials() == [new_ca.serial_number]


def test_a_missing_secret_or_configuration_is_a_clear_error(
    cluster: StandIn, api: client.ApiClient
) -> None:
    with pytest.raises(incluster.ClusterError, match="Secret virtdev/absent not found"):
        incluster.ensure(api, incluster.Target(**{**TARGET.__dict__, "secret": "absent"}))
    missing_config = incluster.Target(**{**TARGET.__dict__, "mutating_configuration": "absent"})
    with pytest.raises(incluster.ClusterError, match="configuration absent not found"):
        incluster.ensure(api, missing_config)
    wrong_service = incluster.Target(**{**TARGET.__dict__, "service": "nobody"})
    with pytest.raises(incluster.ClusterError, match="no webhook that calls Service"):
        incluster.ensure(api, wrong_service)


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "standin", "cluster": {"server": server}}],
                "users": [{"name": "job", "user": {"token": "not-checked"}}],
                "contexts": [{"name": "c", "context": {"cluster": "standin", "user": "job"}}],
                "current-context": "c",
            }
        )
    )
    return path


def test_the_cli_bootstraps_then_has_nothing_to_do(cluster: StandIn, tmp_path: Path) -> None:
    config = kubeconfig(tmp_path / "kubeconfig", cluster.url)
    argv = [*VIRTDEV, "certs", "ensure", "--kubeconfig", config, "--log-format", "json"]
    first = run(*argv)
    assert "updated Secret virtdev/virtdev-webhook-tls" in first.stderr
    second = run(*argv)
    assert "nothing to do" in second.stderr
    assert "PRIVATE KEY" not in first.stderr + second.stderr
    assert None not in ca_bundles(cluster)


def test_the_cli_reports_a_missing_secret_and_exits_non_zero(
    cluster: StandIn, tmp_path: Path
) -> None:
    config = kubeconfig(tmp_path / "kubeconfig", cluster.url)
    result = run(*VIRTDEV, "certs", "ensure", "--kubeconfig", config, "--secret", "x", check=False)
    assert result.returncode == 1
    assert "Secret virtdev/x not found: apply the manifests first" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_cli_reports_an_unreachable_api_server_and_exits_non_zero(tmp_path: Path) -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    config = kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{port}")
    result = run(*VIRTDEV, "certs", "ensure", "--kubeconfig", config, check=False)
    assert result.returncode == 1
    assert "cannot reach the API server" in result.stderr
    assert "Traceback" not in result.stderr
