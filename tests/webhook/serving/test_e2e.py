"""`virtdev webhook` as a real process, over real TLS, called with `curl --cacert`.

One process (module scope) answers most tests: it is started the way a developer starts it, on
free local ports with throwaway certificates in a temporary directory, and the tests wait for
its printed ready line. Every fixture review is POSTed to /mutate and /validate; each returned
patch is applied with `jsonpatch` and the patched pod checked against what the rules promise,
then sent again (no second patch) and validated (allowed). Bad requests get 400 or 413 and the
server keeps serving. The probe port answers /healthz, /readyz and /metrics, and the metrics count
exactly the requests sent. A second process is stopped with SIGTERM while a request is in flight.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import copy
import re
import shlex
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import jsonpatch
import orjson
import pytest
import yaml

from tests import support
from tests.support import refuses_connections
from tests.webhook.conftest import FIXTURE_NAMES, fixture_bytes, load_fixture

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
KVM, TUN = "devices.kubevirt.io/kvm", "devices.kubevirt.io/tun"
MAX_BODY_BYTES = 32 * 1024
STATUS_MARK = "\n@@status="

#: What /mutate does with each fixture: "patched", "untouched" (a render KubeVirt already runs
#: unprivileged), "no compute" (a launcher pod without its compute container: privileges removed,
#: no devices, a warning) or "skipped" (not a launcher CREATE).
MUTATE_OUTCOME = {
    "v1-ephemeral-debug-update.json": "skipped",
    "v1-launcher-2018-privileged.json": "patched",
    "v1-launcher-current-nonroot.json": "untouched",
    "v1-launcher-emulation.json": "untouched",
    "v1-launcher-host-network.json": "patched",
    "v1-launcher-netraw-sysnice.json": "patched",
    "v1-launcher-no-compute.json": "no compute",
    "v1-legacy-launcher-label-update.json": "skipped",
    "v1-non-launcher-pod.json": "skipped",
    "v1beta1-launcher-2018-privileged.json": "patched",
}

#: Every violation /validate must list for each fixture as sent, by field path, in order.
DENIALS: dict[str, list[str]] = {
    "v1-ephemeral-debug-update.json": ["spec.ephemeralContainers[0].securityContext.privileged"],
    "v1-launcher-2018-privileged.json": ["spec.containers[1].securityContext.privileged"],
    "v1-launcher-current-nonroot.json": [],
    "v1-launcher-emulation.json": [],
    "v1-launcher-host-network.json": [
        "spec.hostNetwork",
        "spec.initContainers[0].securityContext.privileged",
    ],
    # A hook sidecar adding SYS_ADMIN: v0.30 gives NET_RAW and SYS_NICE to compute only.
    "v1-launcher-netraw-sysnice.json": ["spec.containers[1].securityContext.capabilities.add[0]"],
    "v1-launcher-no-compute.json": ["spec.containers[0].securityContext.privileged"],
    "v1-legacy-launcher-label-update.json": [],
    "v1-non-launcher-pod.json": [],
    "v1beta1-launcher-2018-privileged.json": ["spec.containers[1].securityContext.privileged"],
}

#: What /validate still refuses once the pod is patched: a host namespace is not mutated away.
DENIALS_AFTER_MUTATION = {"v1-launcher-host-network.json": ["spec.hostNetwork"]}

#: JSON Pointers (RFC 6901) a patch may change; everything else in the pod must stay as it was.
MANAGED = re.compile(
    r"^/spec/(containers|initContainers|ephemeralContainers)/\d+/"
    r"(resources(/(limits|requests)(/devices\.kubevirt\.io~1(kvm|tun))?)?"
    r"|securityContext(/privileged|/capabilities(/add(/\d+)?)?)?)$"
    r"|^/spec/securityContext/seLinuxOptions(/type)?$"
)


def test_fixture_tables_cover_every_fixture() -> None:
    assert set(MUTATE_OUTCOME) == set(FIXTURE_NAMES)
    assert set(DENIALS) == set(FIXTURE_NAMES)


# --- the process --------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Webhook(support.WebhookProcess):
    """The process, and the client the tests call it with."""

    #: Requests that reached /mutate or /validate (got an HTTP status), by endpoint.
    sent: collections.Counter[str] = field(default_factory=collections.Counter)

    def curl(self, path: str, body: bytes, *extra: str, scheme: str = "https") -> Reply | None:
        """POST with curl; None when no HTTP answer came back at all."""
        result = subprocess.run(
            [
                "curl",
                "--silent",
                "--cacert",
                str(self.ca_cert),
                "--max-time",
                "30",
                "-H",
                "Content-Type: application/json",
                *extra,
                "--data-binary",
                "@-",
                "--write-out",
                STATUS_MARK + "%{http_code}",
                f"{scheme}://127.0.0.1:{self.port}{path}",
            ],
            input=body,
            capture_output=True,
            timeout=60,
            check=False,
        )
        text, _, status = result.stdout.decode().rpartition(STATUS_MARK)
        if result.returncode != 0 or status in ("", "000"):
            return None
        if path in ("/mutate", "/validate"):
            self.sent[path.strip("/")] += 1
        return Reply(int(status), text.encode())

    def post(self, path: str, body: bytes, *extra: str) -> Reply:
        reply = self.curl(path, body, *extra)
        assert reply is not None, f"no HTTP answer from {path}; server log:\n{self.log_tail()}"
        return reply

    def review(self, path: str, review: dict[str, Any]) -> dict[str, Any]:
        """POST a review, expect 200 and a well-formed reply that echoes the request."""
        reply = self.post(path, orjson.dumps(review))
        assert reply.status == 200, reply.body
        answer: dict[str, Any] = reply.json()
        assert answer["apiVersion"] == review["apiVersion"]
        assert answer["kind"] == "AdmissionReview"
        assert answer["response"]["uid"] == review["request"]["uid"]
        assert isinstance(answer["response"]["allowed"], bool)
        for warning in answer["response"].get("warnings", []):
            assert 0 < len(warning) <= 120 and not warning.startswith("Warning:")
        return answer["response"]  # type: ignore[no-any-return]

    def probe(self, path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.metrics_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as error:
            with error:
                return int(error.code), error.read().decode()

    def assert_still_serving(self) -> None:
        response = self.review("/mutate", load_fixture("v1-launcher-2018-privileged.json"))
        assert response["patchType"] == "JSONPatch"


def start_webhook(directory: Path, *flags: str, prefix: Sequence[str] = ()) -> Webhook:
    """`virtdev webhook` with throwaway certificates (tests/support.py), ready to be called."""
    started = support.start_webhook(directory, *flags, prefix=prefix)
    return Webhook(**{f.name: getattr(started, f.name) for f in fields(support.WebhookProcess)})


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    server = start_webhook(
        tmp_path_factory.mktemp("webhook"), "--max-body-bytes", str(MAX_BODY_BYTES)
    )
    try:
        yield server
    finally:
        server.stop()


# --- the pods, before and after -----------------------------------------------------------


def leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(JSON Pointer, value) of every scalar, empty object and empty list in a document."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from leaves(item, f"{path}/{str(key).replace('~', '~0').replace('/', '~1')}")
    elif isinstance(value, list) and value:
        for index, item in enumerate(value):
            yield from leaves(item, f"{path}/{index}")
    else:
        yield path, value


def changed_pointers(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    old, new = dict(leaves(before)), dict(leaves(after))
    missing = object()
    return {p for p in old.keys() | new.keys() if old.get(p, missing) != new.get(p, missing)}


def apply(response: dict[str, Any], pod: dict[str, Any]) -> dict[str, Any]:
    assert response["patchType"] == "JSONPatch"
    patch = orjson.loads(base64.b64decode(response["patch"], validate=True))
    assert isinstance(patch, list) and patch
    patched: dict[str, Any] = jsonpatch.apply_patch(pod, patch)
    return patched


def all_containers(pod: dict[str, Any]) -> Iterator[tuple[str, int, dict[str, Any]]]:
    for list_field in ("containers", "initContainers", "ephemeralContainers"):
        for index, container in enumerate(pod["spec"].get(list_field) or []):
            yield list_field, index, container


def assert_promised(name: str, before: dict[str, Any], after: dict[str, Any]) -> None:
    """What the rules promise of a patched launcher pod, with the default policy: no container
    privileged, a privileged compute replaced by devices and NET_ADMIN, every capability kept
    that baseline or the release allows, `drop` kept, nothing else touched."""
    compute = next(c for c in after["spec"]["containers"] if c["name"] == "compute")
    old_compute = next(c for c in before["spec"]["containers"] if c["name"] == "compute")
    if (old_compute.get("securityContext") or {}).get("privileged"):
        for section in ("limits", "requests"):
            devices = {k: v for k, v in compute["resources"][section].items() if k in (KVM, TUN)}
            assert devices == {KVM: "1", TUN: "1"}, section
        assert compute["securityContext"]["capabilities"]["add"] == ["NET_ADMIN"]
    for list_field, index, container in all_containers(after):
        security = container.get("securityContext") or {}
        assert security.get("privileged") is not True, (list_field, index)
        old = before["spec"][list_field][index].get("securityContext") or {}
        old_drop = (old.get("capabilities") or {}).get("drop")
        assert (security.get("capabilities") or {}).get("drop") == old_drop, "drop is kept"
        added = set((security.get("capabilities") or {}).get("add") or [])
        assert added <= set((old.get("capabilities") or {}).get("add") or []) | {"NET_ADMIN"}
    stray = sorted(p for p in changed_pointers(before, after) if not MANAGED.match(p))
    assert stray == [], "the patch touched fields it does not own"


# --- every fixture through /mutate and /validate --------------------------------------------


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_mutate_answers_each_fixture_as_the_rules_promise(webhook: Webhook, name: str) -> None:
    review = load_fixture(name)
    response = webhook.review("/mutate", review)
    assert response["allowed"] is True
    outcome = MUTATE_OUTCOME[name]
    if outcome in ("skipped", "untouched"):
        assert "patch" not in response and "patchType" not in response
        assert "warnings" not in response
        return
    before = review["request"]["object"]
    after = apply(response, copy.deepcopy(before))
    if outcome == "no compute":
        # No devices to request, said; privileges go all the same.
        assert any("no 'compute' container" in w for w in response["warnings"])
        assert after["spec"]["containers"][0]["securityContext"] == {"privileged": False}
        assert changed_pointers(before, after) == {"/spec/containers/0/securityContext/privileged"}
        return
    assert_promised(name, before, after)
    assert "mutation" in response["auditAnnotations"]


PATCHED = [name for name, outcome in MUTATE_OUTCOME.items() if outcome in ("patched", "no compute")]


@pytest.mark.parametrize("name", PATCHED)
def test_mutating_the_patched_pod_again_yields_no_patch(webhook: Webhook, name: str) -> None:
    review = load_fixture(name)
    first = webhook.review("/mutate", review)
    review["request"]["object"] = apply(first, review["request"]["object"])
    second = webhook.review("/mutate", review)
    assert second["allowed"] is True
    assert "patch" not in second and "patchType" not in second
    assert set(second["auditAnnotations"]) == {"profile"}, "nothing changed: only the profile"


RENDERS = sorted((REPO / "tests" / "fixtures" / "kubevirt").glob("v*.yaml"))


@pytest.mark.parametrize("render", RENDERS, ids=lambda path: path.name)
def test_every_kubevirt_render_runs_through_the_real_server(webhook: Webhook, render: Path) -> None:
    """The launchers KubeVirt renders (see test_kubevirt_renders.py), over HTTPS: allowed as
    they are, or (v0.6's privileged one) patched into a pod that is allowed."""
    pod = yaml.safe_load(render.read_text(encoding="utf-8"))
    review = load_fixture("v1-launcher-2018-privileged.json")
    review["request"]["object"] = pod
    verdict = webhook.review("/validate", review)
    assert verdict["auditAnnotations"]["profile"].startswith("KubeVirt ")
    response = webhook.review("/mutate", review)
    if "patch" in response:
        review["request"]["object"] = apply(response, pod)
    else:
        assert verdict["allowed"] is True, verdict.get("status")
    after = webhook.review("/validate", review)
    assert after["allowed"] is True, after.get("status")
    assert "patch" not in webhook.review("/mutate", review)


@pytest.mark.parametrize("name", PATCHED)
def test_validate_allows_the_patched_pod(webhook: Webhook, name: str) -> None:
    review = load_fixture(name)
    review["request"]["object"] = apply(
        webhook.review("/mutate", review), review["request"]["object"]
    )
    response = webhook.review("/validate", review)
    assert "patch" not in response and "patchType" not in response
    still_denied = DENIALS_AFTER_MUTATION.get(name)
    if still_denied is None:
        assert response["allowed"] is True, response.get("status")
        assert "status" not in response
    else:
        assert response["allowed"] is False
        assert response["auditAnnotations"]["violations"] == "; ".join(still_denied)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_validate_lists_every_violation_with_its_field_path(webhook: Webhook, name: str) -> None:
    review = load_fixture(name)
    response = webhook.review("/validate", review)
    assert "patch" not in response and "patchType" not in response, "validators never patch"
    expected = DENIALS[name]
    if not expected:
        assert response["allowed"] is True
        assert "status" not in response
        return
    assert response["allowed"] is False
    status = response["status"]
    assert status["code"] == 403
    assert status["reason"] == "Forbidden"
    assert status["message"].startswith("launcher pod ")
    assert re.match(
        r"launcher pod \S+ refused by virtdev \(KubeVirt \S+ profile on Pod Security baseline "
        r"latest \(v1\.\d+\), ",
        status["message"],
    )
    listed = status["message"].split("): ", 1)[1].split("; ")
    assert [item.partition(": ")[0] for item in listed] == expected
    assert all(item.partition(": ")[2] for item in listed), "each violation says why"
    assert response["auditAnnotations"]["violations"] == "; ".join(expected)


# --- /guard: Pod Security baseline for every pod of a guarded namespace ------------------------


def plain_pod(**container: Any) -> dict[str, Any]:
    """A pod of a namespace's own workloads (not a launcher), as a Deployment would make it."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "web-7d9f-", "namespace": "vms", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.27", **container}]},
    }


def guard_review(pod: dict[str, Any], *, old: dict[str, Any] | None = None) -> dict[str, Any]:
    review = load_fixture("v1-non-launcher-pod.json")
    review["request"].update(object=pod, namespace="vms", name="")
    if old is not None:
        review["request"]["operation"] = "UPDATE"
        review["request"]["oldObject"] = old
    return review


@pytest.mark.parametrize(
    ("escalation", "path"),
    [
        (
            lambda p: p["spec"]["containers"][0].update(securityContext={"privileged": True}),
            "spec.containers[0].securityContext.privileged: true",
        ),
        (
            lambda p: p["spec"].update(volumes=[{"name": "root", "hostPath": {"path": "/"}}]),
            "spec.volumes[0].hostPath.path: /",
        ),
        (
            lambda p: p["spec"]["containers"][0].update(
                securityContext={"capabilities": {"add": ["SYS_ADMIN"]}}
            ),
            "spec.containers[0].securityContext.capabilities.add[0]: SYS_ADMIN",
        ),
        # A container named like KubeVirt's compute gets none of a launcher's exceptions.
        (
            lambda p: p["spec"]["containers"][0].update(
                name="compute", securityContext={"capabilities": {"add": ["NET_ADMIN"]}}
            ),
            "spec.containers[0].securityContext.capabilities.add[0]: NET_ADMIN",
        ),
    ],
    ids=["privileged", "hostPath /", "SYS_ADMIN", "compute NET_ADMIN"],
)
def test_guard_denies_a_pod_beyond_baseline_naming_the_field(
    webhook: Webhook, escalation: Any, path: str
) -> None:
    pod = plain_pod()
    escalation(pod)
    response = webhook.review("/guard", guard_review(pod))
    assert response["allowed"] is False
    message = response["status"]["message"]
    assert message.startswith(
        "pod vms/web-7d9f- refused by virtdev (Pod Security baseline latest (v1.37), "
    )
    assert f"): {path} (" in message


def test_guard_denies_kubectl_debug_with_a_privileged_ephemeral_container(webhook: Webhook) -> None:
    old = plain_pod()
    old["metadata"]["name"] = "web-7d9f-x2"
    new = copy.deepcopy(old)
    new["spec"]["ephemeralContainers"] = [
        {"name": "debugger-x", "image": "busybox", "securityContext": {"privileged": True}}
    ]
    review = guard_review(new, old=old)
    review["request"]["subResource"] = "ephemeralcontainers"
    response = webhook.review("/guard", review)
    assert response["allowed"] is False
    assert (
        "spec.ephemeralContainers[0].securityContext.privileged: true"
        in (response["status"]["message"])
    )


def test_guard_allows_a_plain_pod_and_kubevirts_own_launchers(webhook: Webhook) -> None:
    restricted = plain_pod(
        securityContext={"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    )
    assert webhook.review("/guard", guard_review(restricted))["allowed"] is True
    hotplug = REPO / "tests" / "fixtures" / "kubevirt" / "hotplug-v1.9.0.yaml"
    for render in [*RENDERS, hotplug]:
        if "privileged" in render.name:  # /validate refuses those by design
            continue
        pod = yaml.safe_load(render.read_text(encoding="utf-8"))
        response = webhook.review("/guard", guard_review(pod))
        assert response["allowed"] is True, (render.name, response.get("status"))
        assert response["auditAnnotations"]["profile"].startswith("KubeVirt ")


def test_guard_keeps_a_pod_that_violated_before_updatable(webhook: Webhook) -> None:
    old = plain_pod(securityContext={"privileged": True})
    relabelled = copy.deepcopy(old)
    relabelled["metadata"]["labels"]["tier"] = "frontend"
    assert webhook.review("/guard", guard_review(relabelled, old=old))["allowed"] is True
    worse = copy.deepcopy(old)
    worse["spec"]["hostPID"] = True
    response = webhook.review("/guard", guard_review(worse, old=old))
    assert response["allowed"] is False
    assert response["auditAnnotations"]["violations"] == "spec.hostPID"


def test_v1beta1_reviews_are_answered_in_v1beta1(webhook: Webhook) -> None:
    review = load_fixture("v1beta1-launcher-2018-privileged.json")
    assert review["apiVersion"] == "admission.k8s.io/v1beta1"
    reply = webhook.post("/mutate", orjson.dumps(review))
    assert reply.json()["apiVersion"] == "admission.k8s.io/v1beta1"


def test_the_printed_curl_command_works(webhook: Webhook) -> None:
    command = webhook.ready_line.splitlines()[1].strip()
    assert command.startswith(f"curl --cacert {webhook.ca_cert} ")
    assert command.endswith(f"https://127.0.0.1:{webhook.port}/mutate")
    result = subprocess.run(
        [*shlex.split(command), "--silent", "--fail"],
        cwd=REPO,
        capture_output=True,
        timeout=60,
        check=True,
    )
    webhook.sent["mutate"] += 1
    answer = orjson.loads(result.stdout)
    assert answer["response"]["uid"] == "3a5c0e2a-7d8e-4b8f-9f3e-0c1d2e3f4a01"
    assert answer["response"]["patchType"] == "JSONPatch"


def admission_lines(log: Path, uid: str) -> list[dict[str, Any]]:
    entries = (orjson.loads(line) for line in log.read_bytes().splitlines() if line[:1] == b"{")
    return [entry for entry in entries if entry.get("uid") == uid]


def test_each_admission_is_logged_with_uid_pod_verdict_and_duration(webhook: Webhook) -> None:
    """The line is buffered (virtdev.logs.hot): it must still reach stderr while the server runs."""
    review = load_fixture("v1-launcher-2018-privileged.json")
    uid = f"log-{time.monotonic_ns()}"
    review["request"]["uid"] = uid
    assert webhook.post("/mutate", orjson.dumps(review)).status == 200
    deadline = time.monotonic() + 10  # the buffer is written out every 0.5 s
    while not (lines := admission_lines(webhook.log, uid)):
        assert time.monotonic() < deadline, f"no admission line for {uid}:\n{webhook.log_tail()}"
        time.sleep(0.05)  # polling interval of the condition above
    (entry,) = lines
    assert entry["level"] == "info" and entry["logger"] == "virtdev.webhook"
    assert entry["endpoint"] == "mutate" and entry["operation"] == "CREATE"
    assert entry["verdict"] == "patched"
    assert entry["pod"].startswith(review["request"]["namespace"] + "/")
    assert isinstance(entry["duration_ms"], float)
    assert "containers" not in orjson.dumps(entry).decode()  # never the pod body at info


# --- bad requests: 400 with a JSON path, 413, no plain HTTP; the server keeps serving -------


def assert_bad_request(reply: Reply, field_path: str, problem: str) -> None:
    assert reply.status == 400, reply.body
    body = reply.json()
    assert body["kind"] == "Status"
    assert body["code"] == 400
    assert body["reason"] == "BadRequest"
    cause = body["details"]["causes"][0]
    assert cause["field"] == field_path
    assert problem in cause["message"]
    assert body["message"].startswith(f"{field_path}: ")


@pytest.mark.parametrize("endpoint", ["/mutate", "/validate"])
def test_malformed_json_is_400_naming_the_root(webhook: Webhook, endpoint: str) -> None:
    reply = webhook.post(endpoint, b'{"apiVersion": "admission.k8s.io/v1", "kind": ')
    assert_bad_request(reply, "$", "malformed JSON")
    webhook.assert_still_serving()


@pytest.mark.parametrize(
    ("body", "field_path", "problem"),
    [
        (b"", "$", "empty body"),
        (b"[1, 2]", "$", "expected an AdmissionReview object, got a list"),
        (b'{"kind": "AdmissionReview"}', "$.apiVersion", "required field is missing"),
    ],
)
def test_a_body_that_is_not_a_review_is_400(
    webhook: Webhook, body: bytes, field_path: str, problem: str
) -> None:
    assert_bad_request(webhook.post("/mutate", body), field_path, problem)
    webhook.assert_still_serving()


@pytest.mark.parametrize("endpoint", ["/mutate", "/validate"])
def test_a_wrong_type_deep_in_the_pod_is_400_naming_its_path(
    webhook: Webhook, endpoint: str
) -> None:
    review = load_fixture("v1-launcher-current-nonroot.json")
    review["request"]["object"]["spec"]["containers"][0]["resources"]["limits"][KVM] = None
    reply = webhook.post(endpoint, orjson.dumps(review))
    path = f"$.request.object.spec.containers[0].resources.limits['{KVM}']"
    assert_bad_request(reply, path, "expected a string or a number, got null")
    webhook.assert_still_serving()


@pytest.mark.parametrize("endpoint", ["/mutate", "/validate"])
def test_a_body_over_the_limit_is_413(webhook: Webhook, endpoint: str) -> None:
    review = load_fixture("v1-launcher-2018-privileged.json")
    review["request"]["object"]["metadata"]["annotations"] = {"padding": "x" * MAX_BODY_BYTES}
    reply = webhook.post(endpoint, orjson.dumps(review))
    assert reply.status == 413
    body = reply.json()
    assert body["code"] == 413 and body["reason"] == "RequestEntityTooLarge"
    assert str(MAX_BODY_BYTES) in body["message"]
    webhook.assert_still_serving()


def test_a_chunked_body_over_the_limit_is_413(webhook: Webhook) -> None:
    """Without Content-Length the limit is enforced while the body streams in."""
    review = load_fixture("v1-launcher-2018-privileged.json")
    review["request"]["object"]["metadata"]["annotations"] = {"padding": "x" * MAX_BODY_BYTES}
    reply = webhook.post("/mutate", orjson.dumps(review), "-H", "Transfer-Encoding: chunked")
    assert reply.status == 413
    webhook.assert_still_serving()


def test_a_body_just_under_the_limit_is_answered(webhook: Webhook) -> None:
    review = load_fixture("v1-launcher-2018-privileged.json")
    review["request"]["object"]["metadata"]["annotations"] = {"padding": ""}
    size = len(orjson.dumps(review))
    review["request"]["object"]["metadata"]["annotations"]["padding"] = "x" * (
        MAX_BODY_BYTES - size
    )
    body = orjson.dumps(review)
    assert len(body) == MAX_BODY_BYTES
    reply = webhook.post("/mutate", body)
    assert reply.status == 200
    assert reply.json()["response"]["patchType"] == "JSONPatch"


def test_plain_http_on_the_https_port_is_refused(webhook: Webhook) -> None:
    body = fixture_bytes("v1-launcher-2018-privileged.json")
    assert webhook.curl("/mutate", body, scheme="http") is None
    with socket.create_connection(("127.0.0.1", webhook.port), timeout=30) as sock:
        sock.sendall(
            b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        received = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
    assert not received.startswith(b"HTTP/"), received[:80]
    webhook.assert_still_serving()


# --- the probe port ---------------------------------------------------------------------------


def test_healthz_and_readyz_answer_on_the_metrics_port(webhook: Webhook) -> None:
    assert webhook.probe("/healthz") == (200, "ok\n")
    assert webhook.probe("/livez") == (200, "ok\n")
    assert webhook.probe("/readyz") == (200, "ready\n")
    assert webhook.probe("/nope")[0] == 404


def test_process_metrics_and_build_info_are_served(webhook: Webhook) -> None:
    import virtdev

    text = webhook.probe("/metrics")[1]
    resident = re.search(r"^process_resident_memory_bytes (\S+)$", text, re.M)
    assert resident is not None and float(resident[1]) > 10 * 2**20
    started = re.search(r"^process_start_time_seconds (\S+)$", text, re.M)
    assert started is not None and 0 < time.time() - float(started[1]) < 3600
    info = re.search(
        r'^virtdev_build_info\{python_version="[\d.]+",version="(.+)"\} 1\.0$', text, re.M
    )
    assert info is not None and info[1] == virtdev.__version__


def request_counts(text: str) -> dict[tuple[str, str], float]:
    pattern = re.compile(
        r'^virtdev_webhook_requests_total\{endpoint="(\w+)",verdict="(\w+)"\} (\S+)$', re.M
    )
    return {(m[1], m[2]): float(m[3]) for m in pattern.finditer(text)}


def test_metrics_count_the_requests_sent_by_endpoint_and_verdict(webhook: Webhook) -> None:
    status, text = webhook.probe("/metrics")
    assert status == 200
    before = request_counts(text)
    oversized = load_fixture("v1-launcher-2018-privileged.json")
    oversized["request"]["object"]["metadata"]["annotations"] = {"x": "x" * MAX_BODY_BYTES}
    sent = [
        ("mutate", "v1-launcher-2018-privileged.json", "patched"),
        ("mutate", "v1-launcher-2018-privileged.json", "patched"),
        ("mutate", "v1-non-launcher-pod.json", "skipped"),
        ("mutate", "v1-legacy-launcher-label-update.json", "skipped"),
        ("validate", "v1-launcher-2018-privileged.json", "denied"),
        ("validate", "v1-launcher-emulation.json", "allowed"),
        ("validate", "v1-legacy-launcher-label-update.json", "allowed"),
    ]
    for endpoint, name, _ in sent:
        webhook.post(f"/{endpoint}", fixture_bytes(name))
    webhook.post("/validate", b"{")
    webhook.post("/mutate", orjson.dumps(oversized))
    expected = collections.Counter((endpoint, verdict) for endpoint, _, verdict in sent)
    expected[("validate", "bad_request")] += 1
    expected[("mutate", "too_large")] += 1

    after = request_counts(webhook.probe("/metrics")[1])
    delta = {key: after[key] - before.get(key, 0.0) for key in after}
    assert {key: value for key, value in delta.items() if value} == dict(expected)
    # And over the whole run: every request any test sent is counted once, by endpoint.
    for endpoint in ("mutate", "validate"):
        total = sum(v for (e, _), v in after.items() if e == endpoint)
        assert total == webhook.sent[endpoint], endpoint
    assert "virtdev_webhook_request_duration_seconds_bucket" in webhook.probe("/metrics")[1]


# --- SIGTERM with a request in flight ---------------------------------------------------------


def read_response(sock: ssl.SSLSocket) -> tuple[bytes, bytes]:
    """Read one HTTP/1.1 response with Content-Length: (head, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?im)^content-length: *(\d+)", head)[1])  # type: ignore[index]
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    return head, body


def test_sigterm_lets_the_request_in_flight_finish_and_exits_0(tmp_path: Path) -> None:
    server = start_webhook(tmp_path)
    try:
        body = fixture_bytes("v1-launcher-2018-privileged.json")
        context = ssl.create_default_context(cafile=str(server.ca_cert))
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            sock.sendall(
                b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body)
            )
            # uvicorn says "100 Continue" when the app starts reading the body: in flight now.
            interim = b""
            while b"\r\n\r\n" not in interim:
                byte = sock.recv(1)
                assert byte, f"connection closed after {interim!r}"
                interim += byte
            assert interim.startswith(b"HTTP/1.1 100 Continue"), interim
            sock.sendall(body[: len(body) // 2])

            server.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 30
            while not refuses_connections(server.port):  # the server is shutting down
                assert time.monotonic() < deadline, "the listener never closed after SIGTERM"
                time.sleep(0.02)  # polling interval of the condition above
            assert server.process.poll() is None, "exited with a request in flight"

            sock.sendall(body[len(body) // 2 :])
            head, answer = read_response(sock)
        assert head.startswith(b"HTTP/1.1 200 "), head
        response = orjson.loads(answer)["response"]
        assert response["uid"] == "3a5c0e2a-7d8e-4b8f-9f3e-0c1d2e3f4a01"
        assert response["patchType"] == "JSONPatch"

        returncode = server.process.wait(timeout=30)
        assert returncode == 0, f"exit status {returncode}; log:\n{server.log_tail()}"
        # Buffered admission lines are written out on the way out, not lost with the process.
        assert [e["verdict"] for e in admission_lines(server.log, response["uid"])] == ["patched"]
    finally:
        server.stop()
