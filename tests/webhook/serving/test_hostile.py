"""Hostile and malformed reviews through the HTTP app: never a 5xx, always a named answer.

The webhook is an HTTP server any pod in the cluster may reach, so it has to survive what no
API server would send. Every 5xx here is a bug. `test_properties` generates launcher pods of
every shape and puts one wrong type or null at one place; this module goes further:

- well-typed launcher pods at their oddest (unicode names, labels, annotations, capabilities
  such as `net_admın`; unknown fields with any JSON value in every object), through HTTP: the
  patch applies to the object as sent, a second pass patches nothing, /validate allows the
  patched pod unless it uses a host namespace, and a denial names its `spec.` fields;
- reviews broken one to three times (any JSON value at any place, unknown fields, removed
  fields and list items, values wrapped in lists), any JSON or bytes as a body: a 400 whose
  `details.causes[0].field` is a `$` path, or a sound answer;
- nesting 1000 to 100,000 levels deep at every kind of place (orjson's limit is 1024): a 400;
- huge pods built deterministically from generated ones (privileged sidecars by the thousand,
  or one big annotation) to exactly the body limit and one byte over: patched, and 413 — with
  a small limit in-process and at the 6 MiB default in the real process over HTTPS;
- with a synced node view, scheduling fields (nodeSelector, tolerations, affinity, nodeName)
  well-typed at their oddest or any JSON value: a 400 naming a `$` path, or a patch that
  applies and is idempotent;
- regressions found this way: a skipped object's odd metadata, malformed scheduling fields;
- a hostile network: the node view's watch cut again and again resumes after the first
  backoff step when it had been healthy for a while.
"""

from __future__ import annotations

import base64
import copy
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonpatch
import orjson
import pytest
from fastapi.testclient import TestClient
from hypothesis import event, given, settings
from hypothesis import strategies as st

from tests.kube_standin import StandIn, node_object, write_kubeconfig
from tests.webhook.conftest import load_fixture
from tests.webhook.rules.test_properties import (
    CONTAINER_LISTS,
    ENDPOINT,
    HOST_NAMESPACES,
    admission_review,
    launcher_pods,
    locations,
    replaced,
    value_at,
)
from tests.webhook.serving.test_e2e import start_webhook
from webhook.admission import mutate_review, validate_review
from webhook.nodes.capacity import trim
from webhook.nodes.feasibility import NodeSnapshot
from webhook.nodes.view import NodeView, core_api
from webhook.options import DEFAULT_MAX_BODY_BYTES
from webhook.rules import shapes
from webhook.rules.policy import LauncherPolicy
from webhook.serving import review
from webhook.serving.app import WebhookSettings, create_app
from webhook.serving.review import API_VERSIONS

UID = "f00dfeed-0000-4000-8000-00000000dead"
#: The in-process app's body limit: room for 100,000-level nesting, far from the 6 MiB default.
LIMIT = 1024 * 1024
#: CI is a loaded 2-core machine; each example is an HTTP round trip through TestClient.
HOSTILE = settings(max_examples=150, deadline=None)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(WebhookSettings(max_body_bytes=LIMIT))) as test_client:
        yield test_client


def post(client: TestClient, endpoint: str, body: bytes) -> Any:
    return client.post(endpoint, content=body, headers={"Content-Type": "application/json"})


def skipped_review(metadata: bytes, *, kind: str = "ConfigMap", operation: str = "CREATE") -> bytes:
    """A review the rules skip (not a launcher pod CREATE), its object's metadata as raw JSON."""
    return (
        b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"%s",'
        b'"kind":{"group":"","version":"v1","kind":"%s"},"operation":"%s",'
        b'"object":{"metadata":%s}}}' % (UID.encode(), kind.encode(), operation.encode(), metadata)
    )


@pytest.mark.parametrize("endpoint", ["/mutate", "/validate"])
@pytest.mark.parametrize(
    "metadata",
    [
        b'"a string"',
        b"[1, 2]",
        b"7",
        b"true",
        b'{"name": ' + b"[" * 1000 + b"]" * 1000 + b"}",
        b'{"generateName": ' + b'{"a":' * 1000 + b"1" + b"}" * 1000 + b"}",
    ],
    ids=["string", "list", "number", "boolean", "deep-name", "deep-generate-name"],
)
@pytest.mark.parametrize(
    ("kind", "operation"), [("ConfigMap", "CREATE"), ("Pod", "DELETE"), ("Pod", "CONNECT")]
)
def test_metadata_of_a_skipped_object_is_never_read_into_a_500(
    client: TestClient, endpoint: str, metadata: bytes, kind: str, operation: str
) -> None:
    """Skipped objects are not schema-checked, yet the log line names them: it must not crash.

    Was a 500: `review.Request.display_name` called `.get` on whatever `metadata` was, and
    `str()` of a 1000-deep name raised RecursionError.
    """
    response = post(client, endpoint, skipped_review(metadata, kind=kind, operation=operation))
    assert response.status_code == 200, response.text
    answer = response.json()["response"]
    assert answer == {"uid": UID, "allowed": True}


# --- with the node view on, the scheduling fields are read too -------------------------------

REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"


def node_affinity(required: Any) -> dict[str, Any]:
    return {"nodeAffinity": {REQUIRED: required}}


def terms(*items: Any) -> dict[str, Any]:
    return node_affinity({"nodeSelectorTerms": list(items)})


#: (spec field, malformed value, the JSON path the 400 must name under `$.request.object.spec`)
MALFORMED_SCHEDULING = [
    ("nodeSelector", "zone-a", ".nodeSelector"),
    ("nodeSelector", ["zone-a"], ".nodeSelector"),
    ("nodeSelector", {"zone": 1}, ".nodeSelector['zone']"),
    ("nodeName", ["node-a"], ".nodeName"),
    ("tolerations", "all", ".tolerations"),
    ("tolerations", ["all"], ".tolerations[0]"),
    ("tolerations", [{"key": ["k"], "operator": "Equal"}], ".tolerations[0].key"),
    ("tolerations", [{"key": "k", "value": {"v": 1}}], ".tolerations[0].value"),
    ("affinity", "anywhere", ".affinity"),
    ("affinity", {"nodeAffinity": "anywhere"}, ".affinity.nodeAffinity"),
    ("affinity", node_affinity("anywhere"), f".affinity.nodeAffinity.{REQUIRED}"),
    (
        "affinity",
        node_affinity({"nodeSelectorTerms": "anywhere"}),
        f".affinity.nodeAffinity.{REQUIRED}.nodeSelectorTerms",
    ),
    ("affinity", terms("anywhere"), f".affinity.nodeAffinity.{REQUIRED}.nodeSelectorTerms[0]"),
    (
        "affinity",
        terms({"matchExpressions": "zone in (a)"}),
        f".affinity.nodeAffinity.{REQUIRED}.nodeSelectorTerms[0].matchExpressions",
    ),
    (
        "affinity",
        terms({"matchExpressions": [{"key": ["zone"], "operator": "Exists"}]}),
        f".affinity.nodeAffinity.{REQUIRED}.nodeSelectorTerms[0].matchExpressions[0].key",
    ),
    (
        "affinity",
        terms({"matchFields": [{"key": "metadata.name", "operator": "In", "values": "node-a"}]}),
        f".affinity.nodeAffinity.{REQUIRED}.nodeSelectorTerms[0].matchFields[0].values",
    ),
]


@pytest.fixture(scope="module")
def client_with_nodes() -> Iterator[TestClient]:
    """The app with a synced node view in which every filter reads the pod: a cordoned node, a
    tainted one, one without kvm and a plain one."""
    nodes = (
        node_object("cordoned", unschedulable=True),
        node_object("tainted", taints=[{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]),
        node_object("no-kvm", kvm=None),
        node_object("plain", labels={"zone": "a"}),
    )
    snapshot = NodeSnapshot(nodes=tuple(trim(node) for node in nodes), synced=True)
    with TestClient(create_app(WebhookSettings(), nodes=lambda: snapshot)) as test_client:
        yield test_client


@pytest.mark.parametrize(("field", "value", "path"), MALFORMED_SCHEDULING)
def test_malformed_scheduling_fields_are_a_400_naming_their_path_when_nodes_are_watched(
    client_with_nodes: TestClient, field: str, value: Any, path: str
) -> None:
    """Was a 500: `feasibility` read nodeSelector, affinity and tolerations unchecked."""
    document = load_fixture("v1-launcher-2018-privileged.json")
    document["request"]["object"]["spec"][field] = value
    response = post(client_with_nodes, "/mutate", orjson.dumps(document))
    assert response.status_code == 400, response.text
    cause = response.json()["details"]["causes"][0]
    assert cause["field"] == "$.request.object.spec" + path


def test_well_formed_scheduling_fields_are_judged_not_refused(
    client_with_nodes: TestClient,
) -> None:
    document = load_fixture("v1-launcher-2018-privileged.json")
    document["request"]["object"]["spec"].update(
        nodeSelector={"zone": "a"},
        tolerations=[{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        affinity=terms(
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}
        ),
        nodeName=None,
    )
    response = post(client_with_nodes, "/mutate", orjson.dumps(document))
    assert response.status_code == 200, response.text
    assert response.json()["response"]["allowed"] is True


# --- generators ------------------------------------------------------------------------------

#: Any JSON value: unicode text (astral planes, controls, RTL), 64-bit integers, finite floats.
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=16,
)
#: Unknown keys, and known names at places where they mean nothing (or something else).
KEYS = st.text(max_size=12) | st.sampled_from(
    ["spec", "metadata", "containers", "privileged", "capabilities", "add", "limits", "uid", ""]
)
UNICODE = st.text(min_size=1, max_size=24)
#: Capabilities that upper-case into a permitted name in Python (dotless ı → I) or do not.
ODD_CAPABILITY = UNICODE | st.sampled_from(
    ["net_admın", "NET_ADMİN", "ｎｅｔ＿ａｄｍｉｎ", "SYS_ADMIN"]
)


#: Objects whose every value is read (MapOf in `schema`): unknown keys there must stay strings.
STRING_MAPS = ("labels", "annotations", "limits", "requests", "nodeSelector")


def _read_keys(shape: Any, found: set[str]) -> set[str]:
    """Every field name the shape checks read: an unknown field must not be one of them."""
    if isinstance(shape, (shapes.ListOf, shapes.MapOf)):
        _read_keys(shape.item if isinstance(shape, shapes.ListOf) else shape.value, found)
    elif isinstance(shape, Mapping):
        for key, inner in shape.items():
            found.add(key)
            _read_keys(inner, found)
    return found


READ_KEYS = frozenset(
    _read_keys(shapes.POD_SPEC, set())
    | _read_keys(shapes.METADATA, set())
    | _read_keys(shapes.SCHEDULING, set())
)
UNKNOWN_KEY = st.text(min_size=1, max_size=8).filter(lambda key: key not in READ_KEYS)


def with_unknown_fields(value: Any, draw: st.DrawFn, key: str = "") -> Any:
    """Every object gets, or not, extra fields of any JSON value under unicode keys."""
    if isinstance(value, dict):
        copied = {name: with_unknown_fields(item, draw, name) for name, item in value.items()}
        values = UNICODE if key in STRING_MAPS else JSON_VALUES
        extra = draw(st.dictionaries(UNKNOWN_KEY, values, max_size=2))
        for name, item in extra.items():
            copied.setdefault(name, item)
        return copied
    if isinstance(value, list):
        return [with_unknown_fields(item, draw, key) for item in value]
    return value


@st.composite
def odd_launcher_pods(draw: st.DrawFn, *, host_namespaces: bool | None = None) -> dict[str, Any]:
    """A well-typed launcher pod at its oddest: unicode names, labels, annotations and
    capabilities, unknown fields in every object, nulls for absent maps, no or many containers."""
    pod = draw(launcher_pods(host_namespaces=host_namespaces))
    for list_field in CONTAINER_LISTS:
        for container in pod["spec"].get(list_field) or ():
            if container["name"] != "compute" and draw(st.booleans()):
                container["name"] = draw(UNICODE)
            security = container.get("securityContext")
            capabilities = security and security.get("capabilities")
            if capabilities and capabilities.get("add") is not None and draw(st.booleans()):
                capabilities["add"] = draw(st.lists(ODD_CAPABILITY, max_size=3))
    metadata = pod["metadata"]
    metadata["labels"].update(draw(st.dictionaries(UNICODE, UNICODE, max_size=3)))
    metadata["labels"]["kubevirt.io"] = "virt-launcher"
    metadata["annotations"] = draw(st.dictionaries(UNICODE, UNICODE, max_size=3))
    if draw(st.booleans()):
        metadata["name"] = draw(UNICODE)
    return with_unknown_fields(pod, draw) if draw(st.booleans()) else pod


@st.composite
def broken_reviews(draw: st.DrawFn) -> dict[str, Any] | Any:
    """A launcher review broken one to three times: any JSON value (wrong type or not) put at
    any location, an unknown field added to any object, a field or list item removed, a value
    wrapped in a list. Before that, the review itself takes any of the shapes the API server
    sends for launcher pods: v1 or v1beta1, CREATE or UPDATE (with an old object), a Pod or the
    pre-1.22 EphemeralContainers object (its list at top level, no spec)."""
    document: Any = orjson.loads(admission_review(draw(odd_launcher_pods())))
    document["apiVersion"] = draw(st.sampled_from(API_VERSIONS), label="apiVersion")
    request = document["request"]
    if draw(st.booleans(), label="update"):
        request["operation"] = "UPDATE"
        request["oldObject"] = draw(st.one_of(st.just(request["object"]), odd_launcher_pods()))
    if draw(st.booleans(), label="EphemeralContainers"):
        request["kind"]["kind"] = "EphemeralContainers"
        request["subResource"] = "ephemeralcontainers"
        for name in ("object", "oldObject"):
            pod = request.get(name)
            if pod is not None:
                request[name] = {
                    "metadata": pod["metadata"],
                    "ephemeralContainers": pod["spec"].get("ephemeralContainers"),
                }
    for _ in range(draw(st.integers(1, 3))):
        parts = draw(st.sampled_from(list(locations(document))), label="location")
        target = value_at(document, parts)
        action = draw(st.sampled_from(["replace", "add", "add", "remove", "wrap"]), label="action")
        if action == "replace":
            document = replaced(document, parts, draw(JSON_VALUES, label="value"))
        elif action == "add" and isinstance(target, dict):
            target[draw(KEYS, label="key")] = draw(JSON_VALUES, label="value")
        elif action == "remove" and parts:
            del value_at(document, parts[:-1])[parts[-1]]
        elif action == "wrap":
            document = replaced(document, parts, [target])
    return document


# --- what every answer must be ------------------------------------------------------------------


def assert_never_5xx_and_well_formed(response: Any, sent: Any, limit: int) -> Any:
    """The common contract; returns the AdmissionReview response of a 200, else None."""
    assert response.status_code < 500, response.text
    if response.status_code == 413:
        assert len(orjson.dumps(sent)) > limit if not isinstance(sent, bytes) else len(sent) > limit
        return None
    if response.status_code == 400:
        status = response.json()
        assert status["kind"] == "Status" and status["code"] == 400
        cause = status["details"]["causes"][0]
        assert cause["field"].startswith("$"), cause
        return None
    assert response.status_code == 200, response.text
    answer = response.json()
    assert isinstance(sent, dict)
    assert answer["apiVersion"] == sent["apiVersion"] and answer["kind"] == "AdmissionReview"
    reply = answer["response"]
    assert reply["uid"] == sent["request"]["uid"]
    assert isinstance(reply["allowed"], bool)
    assert ("patch" in reply) == ("patchType" in reply)
    for warning in reply.get("warnings", []):
        assert 0 < len(warning) <= 120 and not warning.startswith("Warning:")
    if not reply["allowed"]:
        assert_denial_names_a_field(reply)
    return reply


def assert_denial_names_a_field(reply: dict[str, Any]) -> None:
    """A denial says which fields: `auditAnnotations.violations` lists `spec.` paths, and the
    message names the first of them."""
    assert "patch" not in reply
    violations = reply["auditAnnotations"]["violations"]
    first = violations.split("; ")[0]
    assert first.startswith("spec."), violations
    assert re.search(
        r" refused by virtdev \(KubeVirt \S+ profile on Pod Security baseline "
        rf"latest \(v1\.\d+\), [^)]*\): {re.escape(first)}: ",
        reply["status"]["message"],
    ), reply["status"]


def patch_of(reply: dict[str, Any]) -> list[dict[str, Any]]:
    if "patch" not in reply:
        return []
    assert reply["patchType"] == "JSONPatch"
    patch: list[dict[str, Any]] = orjson.loads(base64.b64decode(reply["patch"]))
    assert patch, "an empty patch is sent as no patch"
    return patch


# --- properties through HTTP ------------------------------------------------------------------


@HOSTILE
@given(pod=odd_launcher_pods())
def test_launcher_pods_of_every_shape_are_patched_validly_and_idempotently(
    client: TestClient, pod: dict[str, Any]
) -> None:
    body = admission_review(pod)
    sent = orjson.loads(body)
    reply = assert_never_5xx_and_well_formed(post(client, "/mutate", body), sent, LIMIT)
    assert reply is not None and reply["allowed"] is True
    # The patch applies to the object exactly as sent (jsonpatch raises otherwise).
    patched = jsonpatch.apply_patch(sent["request"]["object"], patch_of(reply))

    again = admission_review(patched)
    second = assert_never_5xx_and_well_formed(
        post(client, "/mutate", again), orjson.loads(again), LIMIT
    )
    assert second is not None and patch_of(second) == [], "mutation is idempotent"

    verdict = assert_never_5xx_and_well_formed(
        post(client, "/validate", again), orjson.loads(again), LIMIT
    )
    assert verdict is not None
    host = [name for name in HOST_NAMESPACES if pod["spec"].get(name) is True]
    assert verdict["allowed"] is (not host), verdict
    if host:
        assert verdict["auditAnnotations"]["violations"] == "; ".join(f"spec.{n}" for n in host)

    as_sent = assert_never_5xx_and_well_formed(post(client, "/validate", body), sent, LIMIT)
    assert as_sent is not None  # a denial of the pod as sent names its fields (checked above)


@HOSTILE
@given(document=broken_reviews(), endpoint=ENDPOINT)
def test_broken_reviews_are_a_400_naming_a_path_or_a_sound_answer(
    client: TestClient, document: Any, endpoint: str
) -> None:
    response = post(client, endpoint, orjson.dumps(document))
    reply = assert_never_5xx_and_well_formed(response, document, LIMIT)
    event(f"{endpoint} {response.status_code}" + (" patched" if reply and "patch" in reply else ""))
    if reply is None or "patch" not in reply:
        return
    patched = jsonpatch.apply_patch(document["request"]["object"], patch_of(reply))
    document["request"]["object"] = patched
    again = assert_never_5xx_and_well_formed(
        post(client, endpoint, orjson.dumps(document)), document, LIMIT
    )
    assert again is not None and patch_of(again) == [], "mutation is idempotent"


ANY_BODY = st.one_of(
    st.binary(max_size=64),
    JSON_VALUES.map(orjson.dumps),
    JSON_VALUES.map(
        lambda request: orjson.dumps(
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
        )
    ),
    JSON_VALUES.map(
        lambda obj: orjson.dumps(
            {
                "apiVersion": "admission.k8s.io/v1beta1",
                "kind": "AdmissionReview",
                "request": {
                    "uid": UID,
                    "kind": {"kind": "Pod"},
                    "operation": "CREATE",
                    "object": obj,
                },
            }
        )
    ),
)


@HOSTILE
@given(body=ANY_BODY, endpoint=ENDPOINT)
def test_any_body_at_all_is_a_400_or_an_answer(
    client: TestClient, body: bytes, endpoint: str
) -> None:
    response = post(client, endpoint, body)
    event(f"{endpoint} {response.status_code}")
    try:
        sent = orjson.loads(body)
    except orjson.JSONDecodeError:
        assert response.status_code == 400, response.text
        assert response.json()["details"]["causes"][0]["field"] == "$"
        return
    assert_never_5xx_and_well_formed(response, sent, LIMIT)


# --- deep nesting: orjson stops at 1024 levels, and that is a 400 -------------------------------

ORJSON_DEPTH = 1024
#: Where the nested value goes, and how deep that place already is.
DEEP_PLACES = {
    "the body": ((), 0),
    "an unknown top-level field": (("zz",), 1),
    "an unknown request field": (("request", "zz"), 2),
    "the object": (("request", "object"), 2),
    "the old object": (("request", "oldObject"), 2),
    "an unknown pod field": (("request", "object", "zz"), 3),
    "an unknown spec field": (("request", "object", "spec", "zz"), 4),
    "a container": (("request", "object", "spec", "containers", 0, "zz"), 6),
    "a label": (("request", "object", "metadata", "labels", "zz"), 5),
    "an annotation": (("request", "object", "metadata", "annotations", "zz"), 5),
    "a capability": (
        ("request", "object", "spec", "containers", 0, "securityContext", "capabilities", "add", 0),
        8,
    ),
}
MARK = "@@deep@@"


def nested(depth: int, kind: str) -> bytes:
    if kind == "lists":
        return b"[" * depth + b"]" * depth
    if kind == "objects":
        return b'{"a":' * depth + b"null" + b"}" * depth
    opens = [b"[", b'{"a":'] * (depth // 2) + [b"["] * (depth % 2)
    closes = [b"]" if part == b"[" else b"}" for part in reversed(opens)]
    return b"".join(opens) + b"1" + b"".join(closes)


def deep_review(place: tuple[str | int, ...], depth: int, kind: str) -> bytes:
    document = load_fixture("v1-launcher-2018-privileged.json")
    document["request"]["object"]["metadata"]["annotations"] = {}
    document["request"]["oldObject"] = None
    if not place:
        return nested(depth, kind)
    target: Any = document
    for part, child in zip(place[:-1], place[1:], strict=True):
        if isinstance(part, str) and target.get(part) is None:  # a missing parent: made
            target[part] = [None] if isinstance(child, int) else {}
        target = target[part]
    target[place[-1]] = MARK
    return orjson.dumps(document).replace(f'"{MARK}"'.encode(), nested(depth, kind))


@pytest.mark.parametrize("kind", ["lists", "objects", "mixed"])
@pytest.mark.parametrize("depth", [1000, 1020, 1025, 100_000])
@pytest.mark.parametrize("place", list(DEEP_PLACES))
@pytest.mark.parametrize("endpoint", ["/mutate", "/validate"])
def test_deep_nesting_anywhere_is_a_400_or_an_answer_never_a_500(
    client: TestClient, endpoint: str, place: str, depth: int, kind: str
) -> None:
    parts, above = DEEP_PLACES[place]
    body = deep_review(parts, depth, kind)
    response = post(client, endpoint, body)
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert response.json()["details"]["causes"][0]["field"].startswith("$")
    if above + depth > ORJSON_DEPTH:  # `mixed` nests two levels per step, as deep in total
        assert response.status_code == 400, response.text
        assert response.json()["details"]["causes"][0]["field"] == "$"
        assert "depth limit" in response.json()["message"]


# --- huge pods: just under and just over the body limit ---------------------------------------

SMALL_LIMIT = 48 * 1024
SIDECAR = {
    "name": "",
    "image": "quay.io/example/sidecar:v1",
    "securityContext": {"privileged": True},
}


def enlarged(pod: dict[str, Any], size: int, *, how: str) -> bytes:
    """The review of `pod` grown to exactly `size` bytes: by privileged sidecars (each one
    patched), then an annotation of the remaining length."""
    pod = copy.deepcopy(pod)
    pod["metadata"]["annotations"] = {"virtdev.test/padding": ""}
    base = len(admission_review(pod))
    if how == "containers":
        one = len(orjson.dumps({**SIDECAR, "name": "sidecar-00000"})) + 1
        containers = pod["spec"]["containers"]
        for index in range(max(0, (size - base) // one - 1)):
            containers.append({**SIDECAR, "name": f"sidecar-{index:05d}"})
    missing = size - len(admission_review(pod))
    assert missing >= 0, "the pod is already larger than wanted"
    pod["metadata"]["annotations"]["virtdev.test/padding"] = "x" * missing
    body = admission_review(pod)
    assert len(body) == size
    return body


def privileged_or_unpermitted(pod: dict[str, Any]) -> bool:
    """Whether /validate refuses the pod as generated (no host namespaces in these pods)."""
    answer = validate_review(review.parse(admission_review(pod)), LauncherPolicy())
    return not answer.allowed


@pytest.fixture(scope="module")
def small_client() -> Iterator[TestClient]:
    with TestClient(create_app(WebhookSettings(max_body_bytes=SMALL_LIMIT))) as test_client:
        yield test_client


@settings(max_examples=25, deadline=None)
@given(pod=launcher_pods(host_namespaces=False), how=st.sampled_from(["containers", "annotation"]))
def test_a_huge_pod_at_the_limit_is_patched_and_one_byte_more_is_413(
    small_client: TestClient, pod: dict[str, Any], how: str
) -> None:
    at_limit = enlarged(pod, SMALL_LIMIT, how=how)
    sent = orjson.loads(at_limit)
    reply = assert_never_5xx_and_well_formed(
        post(small_client, "/mutate", at_limit), sent, SMALL_LIMIT
    )
    assert reply is not None and reply["allowed"] is True
    patched = jsonpatch.apply_patch(sent["request"]["object"], patch_of(reply))
    # The patched pod may be over the limit: the rest is checked without HTTP.
    policy = LauncherPolicy()
    assert mutate_review(review.parse(admission_review(patched)), policy).patch == []
    assert validate_review(review.parse(admission_review(patched)), policy).allowed is True
    # /validate at the limit: the pod as sent, privileged sidecars and all, denied by field.
    verdict = post(small_client, "/validate", at_limit)
    denial = assert_never_5xx_and_well_formed(verdict, sent, SMALL_LIMIT)
    assert denial is not None
    assert denial["allowed"] is (how == "annotation" and not privileged_or_unpermitted(pod))

    for endpoint in ("/mutate", "/validate"):
        over = post(small_client, endpoint, enlarged(pod, SMALL_LIMIT + 1, how=how))
        assert over.status_code == 413, over.text
        assert over.json()["reason"] == "RequestEntityTooLarge"


@pytest.mark.slow
def test_the_real_process_answers_6_mib_and_refuses_one_byte_more(tmp_path: Path) -> None:
    """At the default --max-body-bytes (6 MiB), over real HTTPS: a launcher with thousands of
    privileged sidecars, exactly at the limit, is patched; one byte more is a 413."""
    pod = load_fixture("v1-launcher-2018-privileged.json")["request"]["object"]
    at_limit = enlarged(pod, DEFAULT_MAX_BODY_BYTES, how="containers")
    server = start_webhook(tmp_path)
    try:
        reply = server.post("/mutate", at_limit)
        assert reply.status == 200, reply.body[:300]
        sent = orjson.loads(at_limit)
        answer = reply.json()["response"]
        assert answer["uid"] == sent["request"]["uid"] and answer["allowed"] is True
        patch = patch_of(answer)
        patched = jsonpatch.apply_patch(sent["request"]["object"], patch)
        assert len(patch) > len(patched["spec"]["containers"]), "every sidecar loses privileges"
        assert not any(
            (c.get("securityContext") or {}).get("privileged")
            for c in patched["spec"]["containers"]
        )
        over = server.post("/mutate", enlarged(pod, DEFAULT_MAX_BODY_BYTES + 1, how="containers"))
        assert over.status == 413, over.body[:300]
        server.assert_still_serving()
    finally:
        server.stop()


# --- with the node view on: scheduling fields of every shape, well-typed or not ---------------

LABEL_KEYS = st.sampled_from(["zone", "kubernetes.io/hostname", "dedicated", ""]) | UNICODE
OPERATORS = st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt", "Equal", "?"])
REQUIREMENT = st.fixed_dictionaries(
    {"key": LABEL_KEYS, "operator": OPERATORS},
    optional={"values": st.lists(st.sampled_from(["a", "plain", "7", "-1", "x" * 70]), max_size=3)},
)
TERM = st.fixed_dictionaries(
    {},
    optional={
        "matchExpressions": st.lists(REQUIREMENT, max_size=2),
        "matchFields": st.lists(REQUIREMENT, max_size=2),
    },
)
WELL_TYPED_SCHEDULING = {
    "nodeName": st.sampled_from(["plain", "node-x", ""]),
    "nodeSelector": st.dictionaries(LABEL_KEYS, st.sampled_from(["a", "x"]), max_size=2),
    "tolerations": st.lists(
        st.fixed_dictionaries(
            {},
            optional={
                "key": LABEL_KEYS,
                "operator": st.sampled_from(["Exists", "Equal", "?"]),
                "value": st.sampled_from(["x", ""]),
                "effect": st.sampled_from(["NoSchedule", "NoExecute", "PreferNoSchedule", ""]),
            },
        ),
        max_size=3,
    ),
    "affinity": st.lists(TERM, max_size=2).map(lambda items: terms(*items)),
}


@st.composite
def scheduled_launcher_pods(draw: st.DrawFn) -> dict[str, Any]:
    """Odd launcher pods with scheduling fields, each well-typed or any JSON value at all."""
    pod = draw(odd_launcher_pods())
    for name, strategy in WELL_TYPED_SCHEDULING.items():
        choice = draw(st.sampled_from(["absent", "well-typed", "any"]))
        if choice == "well-typed":
            pod["spec"][name] = draw(strategy)
        elif choice == "any":
            pod["spec"][name] = draw(JSON_VALUES)
    return pod


@HOSTILE
@given(pod=scheduled_launcher_pods())
def test_scheduling_fields_of_any_shape_are_a_400_or_a_sound_patch_with_a_node_view(
    client_with_nodes: TestClient, pod: dict[str, Any]
) -> None:
    body = admission_review(pod)
    sent = orjson.loads(body)
    response = post(client_with_nodes, "/mutate", body)
    reply = assert_never_5xx_and_well_formed(response, sent, LIMIT)
    event(f"{response.status_code}" + (" patched" if reply and "patch" in reply else ""))
    if reply is None:
        return
    assert reply["allowed"] is True  # --no-kvm-policy warn: never a denial
    patched = jsonpatch.apply_patch(sent["request"]["object"], patch_of(reply))
    again = admission_review(patched)
    second = assert_never_5xx_and_well_formed(
        post(client_with_nodes, "/mutate", again), orjson.loads(again), LIMIT
    )
    assert second is not None and patch_of(second) == [], "mutation is idempotent"


# --- a hostile network: the node view's watch cut again and again ------------------------------


def seconds_until(condition: Callable[[], bool], timeout: float = 20.0) -> float:
    """How long until `condition` holds, checking every 10 ms."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "timed out"
        time.sleep(0.01)  # polling interval of the condition
    return time.monotonic() - started


def test_a_watch_cut_after_a_long_healthy_run_is_resumed_after_the_first_backoff_step(
    tmp_path: Path,
) -> None:
    """Once a watch has run healthy for longer than the longest backoff step, the next cut is a
    new trouble, not the next of a series: it is retried after the first step. Was: the count
    of failures only reset when a watch ended cleanly, so cuts hours apart (a proxy or load
    balancer dropping long connections) climbed to the longest step and stayed there: the view
    was out of sync for 10 s after every cut."""
    backoff = (0.1, 0.3, 2.5)
    with StandIn().running() as stand_in:
        stand_in.put_object(node_object("node-a"))
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", stand_in.url)
        view = NodeView(lambda: core_api(kubeconfig), watch_seconds=60, backoff=backoff)
        thread = threading.Thread(target=view.run_blocking, name="node-view", daemon=True)
        thread.start()
        try:
            seconds_until(lambda: stand_in.open_watches == 1)
            out_of_sync: list[float] = []
            for _ in range(4):
                time.sleep(backoff[-1] + 0.2)  # a healthy watch, longer than the longest step
                assert view.snapshot.synced and stand_in.drop_watches() == 1
                seconds_until(lambda: not view.snapshot.synced, timeout=5)
                out_of_sync.append(seconds_until(lambda: view.snapshot.synced))
        finally:
            view.stop()
            thread.join(timeout=10)
    assert max(out_of_sync) < backoff[-1] - 1, out_of_sync
