"""The endpoints through FastAPI's TestClient: protocol, error codes and metrics.

The real-process, real-TLS path is covered by test_e2e.py; here the app runs in-process so
that faults can be injected (a bug must surface as a 500, never as a 400).
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
from fastapi.testclient import TestClient

import webhook.serving.app
from webhook.admission import Request
from webhook.rules.answer import Answer
from webhook.serving.app import WebhookSettings, create_app
from webhook.serving.endpoint import logged_violations
from webhook.serving.metrics import WebhookMetrics

FIXTURES = Path(__file__).parents[2] / "fixtures"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())  # type: ignore[no-any-return]


@pytest.fixture
def metrics() -> WebhookMetrics:
    return WebhookMetrics.create()


@pytest.fixture
def client(metrics: WebhookMetrics) -> Iterator[TestClient]:
    app = create_app(WebhookSettings(max_body_bytes=64 * 1024), metrics=metrics)
    with TestClient(app) as test_client:
        yield test_client


def post(client: TestClient, path: str, body: Any) -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(path, content=content, headers={"Content-Type": "application/json"})


def decoded_patch(response: dict[str, Any]) -> list[dict[str, Any]]:
    return json.loads(base64.b64decode(response["patch"]))  # type: ignore[no-any-return]


# name -> (mutate verdict: patched?, validate allowed?)
EXPECTED = {
    "v1-launcher-2018-privileged.json": (True, False),
    "v1beta1-launcher-2018-privileged.json": (True, False),
    "v1-launcher-netraw-sysnice.json": (True, False),
    "v1-launcher-current-nonroot.json": (False, True),
    "v1-launcher-emulation.json": (False, True),
    "v1-launcher-host-network.json": (True, False),
    "v1-launcher-no-compute.json": (True, False),
    "v1-non-launcher-pod.json": (False, True),
    "v1-ephemeral-debug-update.json": (False, False),
    "v1-legacy-launcher-label-update.json": (False, True),
}


def test_every_fixture_has_an_expectation() -> None:
    assert sorted(EXPECTED) == sorted(p.name for p in FIXTURES.glob("*.json"))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_answers(client: TestClient, name: str) -> None:
    review = fixture(name)
    expect_patch, expect_allowed = EXPECTED[name]
    for path in ("/mutate", "/validate"):
        reply = post(client, path, review)
        assert reply.status_code == 200
        body = reply.json()
        assert body["apiVersion"] == review["apiVersion"]
        assert body["kind"] == "AdmissionReview"
        assert body["response"]["uid"] == review["request"]["uid"]
    mutated = post(client, "/mutate", review).json()["response"]
    assert mutated["allowed"] is True
    assert ("patch" in mutated) is expect_patch
    assert ("patchType" in mutated) is expect_patch
    validated = post(client, "/validate", review).json()["response"]
    assert validated["allowed"] is expect_allowed
    assert "patch" not in validated and "patchType" not in validated
    if not expect_allowed:
        assert validated["status"]["code"] == 403
        assert "spec." in validated["status"]["message"]


@pytest.mark.parametrize("name", [n for n, (patches, _) in EXPECTED.items() if patches])
def test_patched_launcher_passes_validation_and_is_not_patched_again(
    client: TestClient, name: str
) -> None:
    review = fixture(name)
    response = post(client, "/mutate", review).json()["response"]
    pod = jsonpatch.apply_patch(copy.deepcopy(review["request"]["object"]), decoded_patch(response))
    again = copy.deepcopy(review)
    again["request"]["object"] = pod
    assert "patch" not in post(client, "/mutate", again).json()["response"]
    verdict = post(client, "/validate", again).json()["response"]
    uses_host_namespaces = any(pod["spec"].get(k) for k in ("hostPID", "hostIPC", "hostNetwork"))
    assert verdict["allowed"] is not uses_host_namespaces


def test_warnings_are_short_and_audit_annotations_summarise(client: TestClient) -> None:
    response = post(client, "/mutate", fixture("v1-launcher-netraw-sysnice.json")).json()[
        "response"
    ]
    assert response["warnings"]
    assert all(len(w) <= 120 and not w.startswith("Warning:") for w in response["warnings"])
    assert "SYS_ADMIN" in " ".join(response["warnings"])
    assert "hook-sidecar-0" in response["auditAnnotations"]["mutation"]
    assert (
        response["auditAnnotations"]["profile"] == "KubeVirt v0.30-v0.32 profile, image tag v0.30"
    )


def test_non_create_and_non_pod_requests_are_allowed_untouched(client: TestClient) -> None:
    review = fixture("v1-launcher-2018-privileged.json")
    for operation in ("UPDATE", "DELETE", "CONNECT"):
        other = copy.deepcopy(review)
        other["request"]["operation"] = operation
        assert post(client, "/mutate", other).json()["response"] == {
            "uid": review["request"]["uid"],
            "allowed": True,
        }
    other = copy.deepcopy(review)
    other["request"]["kind"]["kind"] = "Deployment"
    assert "patch" not in post(client, "/mutate", other).json()["response"]
    deleted = copy.deepcopy(review)
    deleted["request"].update(
        operation="DELETE", object=None, oldObject=review["request"]["object"]
    )
    assert post(client, "/validate", deleted).json()["response"]["allowed"] is True


def test_removing_the_launcher_label_does_not_escape_validation(client: TestClient) -> None:
    review = fixture("v1-ephemeral-debug-update.json")
    review["request"]["object"]["metadata"]["labels"] = {}
    assert post(client, "/validate", review).json()["response"]["allowed"] is False


def test_old_style_ephemeral_containers_object_is_checked(client: TestClient) -> None:
    review = fixture("v1-ephemeral-debug-update.json")
    for key in ("object", "oldObject"):
        pod = review["request"][key]
        review["request"][key] = {
            "kind": "EphemeralContainers",
            "metadata": pod["metadata"],
            "ephemeralContainers": pod["spec"].get("ephemeralContainers") or [],
        }
    review["request"]["kind"]["kind"] = "EphemeralContainers"
    response = post(client, "/validate", review).json()["response"]
    assert response["allowed"] is False
    assert "spec.ephemeralContainers[0].securityContext.privileged" in response["status"]["message"]


def _launcher_review(**object_changes: Any) -> dict[str, Any]:
    review = fixture("v1-launcher-2018-privileged.json")
    review["request"]["object"].update(object_changes)
    return review


BAD_INPUTS: list[tuple[str, bytes | Any, str]] = [
    ("empty body", b"", "$"),
    ("malformed JSON", b'{"apiVersion": ', "$"),
    ("not an object", b"[1, 2]", "$"),
    ("no apiVersion", {"kind": "AdmissionReview", "request": {}}, "$.apiVersion"),
    ("wrong apiVersion", {"apiVersion": "v1", "kind": "AdmissionReview"}, "$.apiVersion"),
    ("wrong kind", {"apiVersion": "admission.k8s.io/v1", "kind": "Pod"}, "$.kind"),
    ("no request", {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}, "$.request"),
    (
        "null request",
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": None},
        "$.request",
    ),
]


@pytest.mark.parametrize(("label", "body", "path"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_a_400_naming_the_json_path(
    client: TestClient, label: str, body: Any, path: str
) -> None:
    for endpoint in ("/mutate", "/validate"):
        reply = post(client, endpoint, body)
        assert reply.status_code == 400, label
        status = reply.json()
        assert status["kind"] == "Status" and status["code"] == 400
        assert status["details"]["causes"][0]["field"] == path
        assert status["message"].startswith(path)


@pytest.mark.parametrize(
    ("mangle", "path"),
    [
        (lambda r: r["request"].pop("uid"), "$.request.uid"),
        (lambda r: r["request"].update(uid=7), "$.request.uid"),
        (lambda r: r["request"].update(operation="PATCH"), "$.request.operation"),
        (lambda r: r["request"].update(object=[]), "$.request.object"),
        (
            lambda r: r["request"]["object"]["metadata"].update(labels=["x"]),
            "$.request.object.metadata.labels",
        ),
        (
            lambda r: r["request"]["object"]["spec"].update(containers={}),
            "$.request.object.spec.containers",
        ),
        (
            lambda r: r["request"]["object"]["spec"]["containers"][1]["securityContext"].update(
                privileged="yes"
            ),
            "$.request.object.spec.containers[1].securityContext.privileged",
        ),
        (
            lambda r: r["request"]["object"]["spec"]["containers"][1]["resources"].update(
                limits={"cpu": True}
            ),
            "$.request.object.spec.containers[1].resources.limits['cpu']",
        ),
        (
            lambda r: r["request"]["object"]["spec"].update(hostPID="true"),
            "$.request.object.spec.hostPID",
        ),
    ],
)
def test_wrong_types_at_depth_name_their_path(client: TestClient, mangle: Any, path: str) -> None:
    review = fixture("v1-launcher-2018-privileged.json")
    mangle(review)
    reply = post(client, "/mutate", review)
    assert reply.status_code == 400
    assert reply.json()["details"]["causes"][0]["field"] == path


def test_null_means_absent(client: TestClient) -> None:
    review = fixture("v1-launcher-2018-privileged.json")
    compute = review["request"]["object"]["spec"]["containers"][1]
    compute.update(
        resources=None, command=None, securityContext={"privileged": True, "capabilities": None}
    )
    review["request"]["object"]["spec"]["initContainers"] = None
    review["request"]["object"]["spec"]["securityContext"] = None
    response = post(client, "/mutate", review).json()["response"]
    pod = jsonpatch.apply_patch(review["request"]["object"], decoded_patch(response))
    assert pod["spec"]["containers"][1]["resources"]["limits"]["devices.kubevirt.io/kvm"] == "1"
    assert pod["spec"]["containers"][1]["securityContext"]["capabilities"] == {"add": ["NET_ADMIN"]}
    assert pod["spec"]["securityContext"] == {"seLinuxOptions": {"type": "spc_t"}}


def test_body_over_the_limit_is_a_413_and_the_server_keeps_serving(
    client: TestClient, metrics: WebhookMetrics
) -> None:
    huge = b'{"apiVersion": "' + b"x" * (64 * 1024) + b'"}'
    assert post(client, "/mutate", huge).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while reading
        for _ in range(100):
            yield b" " * 1024

    reply = client.post("/validate", content=chunks())
    assert reply.status_code == 413
    assert "exceeds 65536 bytes" in reply.json()["message"]
    assert post(client, "/mutate", fixture("v1-non-launcher-pod.json")).status_code == 200
    too_large = metrics.registry.get_sample_value(
        "virtdev_webhook_requests_total", {"endpoint": "validate", "verdict": "too_large"}
    )
    assert too_large == 1


def test_a_bug_is_a_500_not_a_400(
    client: TestClient, metrics: WebhookMetrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(request: Request, policy: Any) -> Answer:
        raise KeyError("a bug")

    monkeypatch.setattr(webhook.serving.app, "validate_review", broken)
    reply = post(client, "/validate", fixture("v1-launcher-2018-privileged.json"))
    assert reply.status_code == 500
    assert reply.json()["reason"] == "InternalError"
    assert "a bug" not in reply.text, "internals stay in the logs"
    # The same bad input that is a 400 elsewhere is still a 400: the two are told apart.
    assert post(client, "/validate", b"{").status_code == 400
    assert post(client, "/mutate", fixture("v1-launcher-2018-privileged.json")).status_code == 200
    assert (
        metrics.registry.get_sample_value(
            "virtdev_webhook_requests_total", {"endpoint": "validate", "verdict": "error"}
        )
        == 1
    )


def test_metrics_count_verdicts_and_patch_operations(
    client: TestClient, metrics: WebhookMetrics
) -> None:
    post(client, "/mutate", fixture("v1-launcher-2018-privileged.json"))
    post(client, "/validate", fixture("v1-launcher-2018-privileged.json"))
    post(client, "/mutate", fixture("v1-non-launcher-pod.json"))
    sample = metrics.registry.get_sample_value
    assert (
        sample("virtdev_webhook_requests_total", {"endpoint": "mutate", "verdict": "patched"}) == 1
    )
    assert (
        sample("virtdev_webhook_requests_total", {"endpoint": "mutate", "verdict": "skipped"}) == 1
    )
    assert (
        sample("virtdev_webhook_requests_total", {"endpoint": "validate", "verdict": "denied"}) == 1
    )
    assert sample("virtdev_webhook_patch_operations_total", {}) == 6
    assert sample("virtdev_webhook_request_duration_seconds_count", {"endpoint": "mutate"}) == 2


def test_info_logs_carry_uid_and_verdict_but_never_the_pod(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="virtdev.webhook")
    review = fixture("v1-launcher-2018-privileged.json")
    post(client, "/mutate", review)
    records = [r for r in caplog.records if r.name == "virtdev.webhook"]
    assert len(records) == 1
    record = records[0].__dict__
    assert record["uid"] == review["request"]["uid"]
    assert record["verdict"] == "patched"
    assert record["pod"] == "vms/virt-launcher-testvmi-"
    assert "kubevirt/virt-launcher:v0.6.0" not in caplog.text


def test_only_the_two_endpoints_exist_on_the_admission_port(client: TestClient) -> None:
    assert client.get("/mutate").status_code == 405
    assert client.post("/other", content=b"{}").status_code == 404
    assert client.get("/docs").status_code == 404


def test_an_unsynced_node_view_is_logged_once_per_spell_and_counted_per_pod(
    metrics: WebhookMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    from webhook.nodes.feasibility import NodeSnapshot

    view = {"snapshot": NodeSnapshot(synced=False)}
    app = create_app(WebhookSettings(), metrics=metrics, nodes=lambda: view["snapshot"])
    caplog.set_level("WARNING", logger="virtdev.webhook")
    review = fixture("v1-launcher-2018-privileged.json")
    with TestClient(app) as client:
        for _ in range(3):
            assert "patch" in post(client, "/mutate", review).json()["response"]
        view["snapshot"] = NodeSnapshot(synced=True)  # synced, no nodes: a different outcome
        post(client, "/mutate", review)
        view["snapshot"] = NodeSnapshot(synced=False)
        post(client, "/mutate", review)
    unsynced = [r for r in caplog.records if "not synced" in r.getMessage()]
    assert len(unsynced) == 2
    counted = metrics.registry.get_sample_value(
        "virtdev_webhook_scheduling_decisions_total", {"outcome": "unsynced"}
    )
    assert counted == 4


# --- why a launcher was denied, and --enforcement warn ---------------------------------------


def test_the_log_line_of_a_denial_names_the_violations_and_the_user(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="virtdev.webhook")
    review = fixture("v1-launcher-2018-privileged.json")
    review["request"]["object"]["spec"]["hostPID"] = True
    post(client, "/validate", review)
    (record,) = [r.__dict__ for r in caplog.records if r.name == "virtdev.webhook"]
    assert record["verdict"] == "denied"
    assert record["user"] == review["request"]["userInfo"]["username"]
    assert any(v.startswith("spec.hostPID: ") for v in record["violations"])
    assert any("securityContext.privileged" in v for v in record["violations"])


def test_the_violations_logged_are_capped() -> None:
    many = [f"spec.containers[{i}].securityContext.privileged: {'x' * 300}" for i in range(31)]
    logged = logged_violations(many)
    assert len(logged) == 11 and logged[-1] == "and 21 more"
    assert all(len(line) <= 201 for line in logged)
    assert logged_violations(["spec.hostPID: true"]) == ["spec.hostPID: true"]


def test_a_hostile_review_makes_a_bounded_log_line(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="virtdev.webhook")
    review = fixture("v1-launcher-2018-privileged.json")
    sidecar = {"name": "s", "image": "busybox", "securityContext": {"privileged": True}}
    review["request"]["object"]["spec"]["containers"] += [
        {**sidecar, "name": f"sidecar-{'x' * 300}-{i}"} for i in range(30)
    ]
    post(client, "/validate", review)
    (record,) = [r.__dict__ for r in caplog.records if r.name == "virtdev.webhook"]
    assert 1 < len(record["violations"]) <= 11
    assert all(len(line) <= 201 for line in record["violations"])


def test_a_mutation_logs_no_violations(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="virtdev.webhook")
    post(client, "/mutate", fixture("v1-launcher-2018-privileged.json"))
    (record,) = [r.__dict__ for r in caplog.records if r.name == "virtdev.webhook"]
    assert "violations" not in record and "user" not in record


@pytest.fixture
def warn_client(metrics: WebhookMetrics) -> Iterator[TestClient]:
    app = create_app(WebhookSettings(enforcement="warn"), metrics=metrics)
    with TestClient(app) as test_client:
        yield test_client


def test_warn_enforcement_admits_with_warnings_and_an_audit_annotation(
    warn_client: TestClient, metrics: WebhookMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="virtdev.webhook")
    reply = post(warn_client, "/validate", fixture("v1-launcher-2018-privileged.json"))
    response = reply.json()["response"]
    assert response["allowed"] is True and "status" not in response
    warnings = response["warnings"]
    assert warnings and all(w.startswith("virtdev would deny: spec.") for w in warnings)
    assert all(len(w) <= 120 for w in warnings)
    assert any("securityContext.privileged" in w for w in warnings)
    annotations = response["auditAnnotations"]
    assert annotations["enforcement"] == "warn"
    assert "securityContext.privileged" in annotations["would-deny"]
    sample = metrics.registry.get_sample_value
    labels = {"endpoint": "validate", "verdict": "warned"}
    assert sample("virtdev_webhook_requests_total", labels) == 1
    (record,) = [r.__dict__ for r in caplog.records if r.name == "virtdev.webhook"]
    assert record["verdict"] == "warned" and record["user"] and record["violations"]


def test_warn_enforcement_changes_nothing_else(warn_client: TestClient) -> None:
    mutate = post(warn_client, "/mutate", fixture("v1-launcher-2018-privileged.json")).json()
    assert mutate["response"]["allowed"] is True and mutate["response"]["patch"]
    allowed = post(warn_client, "/validate", fixture("v1-launcher-emulation.json")).json()
    assert "warnings" not in allowed["response"] or all(
        not w.startswith("virtdev would deny") for w in allowed["response"]["warnings"]
    )


def test_an_unknown_enforcement_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="enforcement 'audit'"):
        WebhookSettings(enforcement="audit")  # type: ignore[arg-type]  # what a caller may pass


@pytest.mark.parametrize(
    ("user_info", "field"),
    [("alice", "$.request.userInfo"), ({"username": 7}, "$.request.userInfo.username")],
)
def test_a_malformed_user_info_is_a_400_naming_it(
    client: TestClient, user_info: Any, field: str
) -> None:
    review = fixture("v1-launcher-2018-privileged.json")
    review["request"]["userInfo"] = user_info
    reply = post(client, "/validate", review)
    assert reply.status_code == 400
    assert reply.json()["details"]["causes"][0]["field"] == field


def test_guard_answers_in_the_same_shape_and_honours_warn(
    client: TestClient, warn_client: TestClient, metrics: WebhookMetrics
) -> None:
    review = fixture("v1-non-launcher-pod.json")  # a privileged node debugger with hostPID
    denied = post(client, "/guard", review).json()["response"]
    assert denied["allowed"] is False and denied["status"]["code"] == 403
    assert denied["auditAnnotations"]["violations"].startswith("spec.hostPID")
    warned = post(warn_client, "/guard", review).json()["response"]
    assert warned["allowed"] is True
    assert any(w.startswith("virtdev would deny: spec.hostPID") for w in warned["warnings"])
    sample = metrics.registry.get_sample_value
    assert sample("virtdev_webhook_requests_total", {"endpoint": "guard", "verdict": "warned"}) == 1
