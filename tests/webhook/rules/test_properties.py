"""Properties of /mutate and /validate over generated launcher pods (hypothesis).

The generators omit every parent map the rules write under (`resources`, `limits`, `requests`,
`securityContext`, `capabilities`, `add`) independently, or send it as JSON null (which counts as
absent), and mix odd containers: sidecars, init containers (native sidecars with
`restartPolicy: Always` among them), ephemeral containers, no compute, duplicate names,
capabilities spelt `CAP_NET_ADMIN` or `net_admin`, privileged true/false/absent, device counts
such as "2" or 1 and other resources. The rules are called the way the server calls them: a
review is serialised, parsed by `review.parse` and answered by `webhook.admission`.

Properties: the patch applies to the object exactly as generated; a second pass over the patched
pod yields no patch; the patched pod is allowed by /validate unless it uses a host namespace.
Through the HTTP app: structurally broken input is never a 5xx, and a wrong type where the rules
read is a 400 naming its JSON path.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Iterator
from typing import Any

import jsonpatch
import orjson
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.webhook.conftest import FIXTURE_NAMES, load_fixture
from virtdev import catalogue
from webhook.admission import mutate_review, validate_review
from webhook.rules.launcher import grants_net_admin, read_launcher
from webhook.rules.policy import LauncherPolicy, normalise_capability
from webhook.rules.shapes import BadInput
from webhook.serving import review
from webhook.serving.app import WebhookSettings, create_app

KVM, TUN, VHOST = (
    "devices.kubevirt.io/kvm",
    "devices.kubevirt.io/tun",
    "devices.kubevirt.io/vhost-net",
)
LAUNCHER_LABELS = {"kubevirt.io": "virt-launcher"}
HOST_NAMESPACES = ("hostPID", "hostIPC", "hostNetwork")
CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")

PROPERTY = settings(max_examples=200, deadline=None)
#: Each example is an HTTP round trip through TestClient's thread portal: fewer of them.
HTTP_PROPERTY = settings(max_examples=100, deadline=None)

POLICIES = {
    "default": LauncherPolicy(),
    "emulation": LauncherPolicy(emulation=True),
    "wide": LauncherPolicy(permitted_capabilities=frozenset({"NET_BIND_SERVICE", "net_raw"})),
    "vhost": LauncherPolicy(devices=catalogue.resolve_devices(["kvm", "tun", "vhost-net"])),
}


# --- generators ------------------------------------------------------------------------------


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A value that may also be JSON null (absent, for the API server)."""
    return st.one_of(st.none(), strategy)


def fields(required: dict[str, Any], optional: dict[str, Any]) -> st.SearchStrategy[Any]:
    """An object whose optional keys are each independently left out, null, or present."""
    return st.fixed_dictionaries(
        {key: value for key, value in required.items()},
        optional={key: maybe(value) for key, value in optional.items()},
    )


CAPABILITY = st.sampled_from(
    [
        "NET_ADMIN",
        "net_admin",
        "CAP_NET_ADMIN",
        "cap_net_admin",
        "NET_BIND_SERVICE",
        "NET_RAW",
        "net_raw",
        "SYS_NICE",
        "SYS_PTRACE",
        "SYS_ADMIN",
        "CAP_SYS_ADMIN",
        "ALL",
    ]
)
QUANTITY = st.sampled_from(["1", "2", "0", "10", 1, 2, 0, 1.0, 1.5, "100m", "1Gi"])
RESOURCE_NAME = st.sampled_from(
    [KVM, TUN, VHOST, "cpu", "memory", "ephemeral-storage", "nvidia.com/gpu", "example.com/x~y"]
)
RESOURCE_MAP = st.dictionaries(RESOURCE_NAME, QUANTITY, max_size=5)
RESOURCES = fields({}, {"limits": RESOURCE_MAP, "requests": RESOURCE_MAP, "claims": st.just([])})
CAPABILITIES = fields(
    {}, {"add": st.lists(CAPABILITY, max_size=5), "drop": st.lists(CAPABILITY, max_size=3)}
)
SECURITY_CONTEXT = fields(
    {},
    {
        "privileged": st.booleans(),
        "capabilities": CAPABILITIES,
        "runAsUser": st.sampled_from([0, 107]),
        "allowPrivilegeEscalation": st.booleans(),
    },
)
ARGS = st.lists(
    st.sampled_from(["--qemu-timeout", "5m", "--allow-emulation", "--use-emulation", "--name"]),
    max_size=4,
)
NAME = st.sampled_from(["compute", "hook-sidecar-0", "guest-console-log", "debugger", "x"])


def container(name: st.SearchStrategy[str], **extra: st.SearchStrategy[Any]) -> Any:
    return fields(
        {"name": name, "image": st.just("quay.io/kubevirt/virt-launcher:v1")},
        {
            "command": ARGS,
            "args": ARGS,
            "resources": RESOURCES,
            "securityContext": SECURITY_CONTEXT,
            **extra,
        },
    )


CONTAINER = container(NAME)
INIT_CONTAINER = container(NAME, restartPolicy=st.just("Always"))
COMPUTE = container(st.just("compute"))


@st.composite
def launcher_pods(
    draw: st.DrawFn, *, with_compute: bool | None = None, host_namespaces: bool | None = None
) -> dict[str, Any]:
    """A virt-launcher pod; None for either flag: sometimes with, sometimes without."""
    containers = draw(st.lists(CONTAINER, max_size=3))
    has_compute = draw(st.booleans()) if with_compute is None else with_compute
    if has_compute:
        containers.insert(draw(st.integers(0, len(containers))), draw(COMPUTE))
    else:
        containers = [c for c in containers if c["name"] != "compute"]
    spec: dict[str, Any] = {"containers": containers, "restartPolicy": "Never"}
    for list_field, strategy in (
        ("initContainers", INIT_CONTAINER),
        ("ephemeralContainers", CONTAINER),
    ):
        choice = draw(st.sampled_from(["absent", "null", "list"]))
        if choice == "null":
            spec[list_field] = None
        elif choice == "list":
            spec[list_field] = draw(st.lists(strategy, max_size=2))
    for name in HOST_NAMESPACES:
        values = [None, False, True] if host_namespaces is not False else [None, False]
        choice = draw(st.sampled_from(["absent", *map(str, values)]))
        if choice != "absent":
            spec[name] = {"None": None, "False": False, "True": True}[choice]
    if host_namespaces and not any(spec.get(name) is True for name in HOST_NAMESPACES):
        spec[draw(st.sampled_from(HOST_NAMESPACES))] = True
    labels = {**LAUNCHER_LABELS, **draw(st.dictionaries(st.sampled_from(["a", "b"]), NAME))}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "virt-launcher-vm-",
            "namespace": "vms",
            "labels": labels,
        },
        "spec": spec,
    }


POLICY = st.sampled_from(sorted(POLICIES))
ENDPOINT = st.sampled_from(["/mutate", "/validate"])


def admission_review(
    pod: dict[str, Any],
    *,
    operation: str = "CREATE",
    old: Any = None,
    username: str = catalogue.KUBEVIRT_CONTROLLERS[0],
) -> bytes:
    """The review the API server sends when `username` (KubeVirt's controller) makes the pod."""
    request: dict[str, Any] = {
        "uid": "f00dfeed-0000-4000-8000-000000000001",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "operation": operation,
        "userInfo": {"username": username},
        "namespace": "vms",
        "object": pod,
    }
    if old is not None:
        request["oldObject"] = old
    return orjson.dumps(
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    )


def mutated(pod: dict[str, Any], policy: LauncherPolicy) -> tuple[dict[str, Any], list[Any]]:
    """(patched pod, patch) as /mutate answers it, the patch applied with jsonpatch."""
    request = review.parse(admission_review(pod))
    answer = mutate_review(request, policy)
    assert answer.allowed is True
    rendered = review.render(request, answer)["response"]
    if answer.patch:
        assert rendered["patchType"] == "JSONPatch"
        assert orjson.loads(base64.b64decode(rendered["patch"])) == answer.patch
    else:
        assert "patch" not in rendered and "patchType" not in rendered
    patched: dict[str, Any] = jsonpatch.apply_patch(pod, answer.patch)
    return patched, answer.patch


def every_container(pod: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for list_field in CONTAINER_LISTS:
        yield from pod["spec"].get(list_field) or ()


# --- the pure properties ---------------------------------------------------------------------


@PROPERTY
@given(pod=launcher_pods(), policy=POLICY)
def test_the_patch_applies_to_the_pod_exactly_as_generated(
    pod: dict[str, Any], policy: str
) -> None:
    generated = copy.deepcopy(pod)
    mutated(pod, POLICIES[policy])  # raises if an operation does not apply
    assert pod == generated, "apply_patch works on a copy; the input is left as sent"


@PROPERTY
@given(pod=launcher_pods(), policy=POLICY)
def test_mutation_is_idempotent(pod: dict[str, Any], policy: str) -> None:
    patched, _ = mutated(pod, POLICIES[policy])
    again, patch = mutated(patched, POLICIES[policy])
    assert patch == []
    assert again == patched


@PROPERTY
@given(pod=launcher_pods(with_compute=True), policy=POLICY)
def test_a_privileged_compute_is_replaced_and_a_rendered_one_keeps_its_requests(
    pod: dict[str, Any], policy: str
) -> None:
    chosen = POLICIES[policy]
    patched, _ = mutated(pod, chosen)
    index = next(i for i, c in enumerate(pod["spec"]["containers"]) if c["name"] == "compute")
    original, compute = pod["spec"]["containers"][index], patched["spec"]["containers"][index]
    security = original.get("securityContext") or {}
    resources = original.get("resources") or {}
    requested = {
        name
        for section in ("limits", "requests")
        for name in resources.get(section) or {}
        if name.startswith("devices.kubevirt.io/")
    }
    hypervisor = bool(requested & {KVM, "devices.kubevirt.io/mshv"})
    if security.get("privileged") is True and not hypervisor:
        words = [*(original.get("command") or ()), *(original.get("args") or ())]
        emulated = chosen.emulation or "--allow-emulation" in words or "--use-emulation" in words
        wanted = [d.resource for d in chosen.devices if not (emulated and d.name == "kvm")]
        for resource in wanted:
            assert resource in compute["resources"]["limits"]
            assert resource in compute["resources"]["requests"]
        added = {
            normalise_capability(c)
            for c in ((compute.get("securityContext") or {}).get("capabilities") or {}).get("add")
            or ()
        }
        # v0.7 rendered NET_ADMIN in place of privileged; from v0.41 no release needs it.
        profile = read_launcher(pod, chosen).release.profile
        assert ("NET_ADMIN" in added) is grants_net_admin(profile)
    elif hypervisor:
        after = compute.get("resources") or {}
        for section in ("limits", "requests"):
            assert (after.get(section) or None) == (resources.get(section) or None), section
    assert (compute.get("securityContext") or {}).get("privileged") is not True
    before = (security.get("capabilities") or {}).get("drop")
    after_drop = ((compute.get("securityContext") or {}).get("capabilities") or {}).get("drop")
    assert after_drop == before, "drop is never touched"


@PROPERTY
@given(pod=launcher_pods(with_compute=True, host_namespaces=False), policy=POLICY)
def test_validate_allows_every_mutated_launcher_pod_with_compute(
    pod: dict[str, Any], policy: str
) -> None:
    patched, _ = mutated(pod, POLICIES[policy])
    answer = validate_review(review.parse(admission_review(patched)), POLICIES[policy])
    assert answer.allowed is True, answer.message
    assert answer.patch == []


@PROPERTY
@given(pod=launcher_pods(host_namespaces=False), policy=POLICY)
def test_validate_allows_every_mutated_launcher_pod_without_host_namespaces(
    pod: dict[str, Any], policy: str
) -> None:
    """The issue's property, for every launcher pod, including those without compute.

    A launcher without compute gets no devices, but its containers lose their privileges all
    the same: otherwise /validate would deny the pod that /mutate let through.
    """
    patched, _ = mutated(pod, POLICIES[policy])
    answer = validate_review(review.parse(admission_review(patched)), POLICIES[policy])
    assert answer.allowed is True, answer.message


@PROPERTY
@given(pod=launcher_pods(with_compute=True, host_namespaces=True), policy=POLICY)
def test_a_mutated_pod_with_host_namespaces_is_denied_for_those_alone(
    pod: dict[str, Any], policy: str
) -> None:
    patched, _ = mutated(pod, POLICIES[policy])
    answer = validate_review(review.parse(admission_review(patched)), POLICIES[policy])
    assert answer.allowed is False
    assert answer.status_code == 403
    expected = [f"spec.{n}" for n in HOST_NAMESPACES if pod["spec"].get(n) is True]
    assert answer.audit_annotations["violations"] == "; ".join(expected)


@PROPERTY
@given(pod=launcher_pods(), policy=POLICY)
def test_an_update_that_changes_nothing_is_always_allowed(pod: dict[str, Any], policy: str) -> None:
    """Old launchers stay updatable: only what an UPDATE introduces is refused."""
    body = admission_review(pod, operation="UPDATE", old=copy.deepcopy(pod))
    answer = validate_review(review.parse(body), POLICIES[policy])
    assert answer.allowed is True, answer.message


@PROPERTY
@given(pod=launcher_pods(), policy=POLICY)
def test_validate_denies_exactly_the_privileged_and_what_no_profile_allows(
    pod: dict[str, Any], policy: str
) -> None:
    chosen = POLICIES[policy]
    answer = validate_review(review.parse(admission_review(pod)), chosen)
    launcher = read_launcher(pod, chosen)
    expected = [f"spec.{n}" for n in HOST_NAMESPACES if pod["spec"].get(n) is True]
    for slot in launcher.slots:
        security = slot.container.get("securityContext") or {}
        where = f"{slot.path}.securityContext"
        if security.get("privileged") is True:
            expected.append(f"{where}.privileged")
        for cap_index, cap in enumerate((security.get("capabilities") or {}).get("add") or []):
            if cap not in slot.capabilities:
                expected.append(f"{where}.capabilities.add[{cap_index}]")
    assert answer.allowed is (not expected)
    if expected:
        assert answer.audit_annotations["violations"] == "; ".join(expected[:16])


# --- through HTTP: broken input is a 400 naming its path, never a 5xx ---------------------------


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(WebhookSettings())) as test_client:
        yield test_client


#: Object fields whose values are maps of arbitrary keys (the schema's MapOf).
MAPS = ("labels", "limits", "requests")
MAP_PARENTS = ("metadata", "resources")
REVIEW_FIELDS = {
    ("apiVersion",),
    ("kind",),
    ("request",),
    ("request", "uid"),
    ("request", "operation"),
    ("request", "kind"),
    ("request", "kind", "kind"),
    ("request", "resource"),
    ("request", "resource", "resource"),
    ("request", "subResource"),
    ("request", "namespace"),
    ("request", "name"),
    ("request", "object"),
    ("request", "userInfo"),
    ("request", "userInfo", "username"),
}
POD_FIELDS = {
    "metadata": {"name": 1, "namespace": 1, "generateName": 1, "labels": "map"},
    "spec": {
        "hostPID": 1,
        "hostIPC": 1,
        "hostNetwork": 1,
        **{
            list_field: {
                "[]": {
                    "name": 1,
                    "image": 1,
                    "command": {"[]": 1},
                    "args": {"[]": 1},
                    "resources": {"limits": "map", "requests": "map"},
                    "securityContext": {
                        "privileged": 1,
                        "capabilities": {"add": {"[]": 1}, "drop": {"[]": 1}},
                    },
                }
            }
            for list_field in CONTAINER_LISTS
        },
    },
}


def is_read(parts: tuple[str | int, ...]) -> bool:
    """Whether the rules read (and so check) the value at this location of a launcher review."""
    if parts == () or parts in REVIEW_FIELDS:
        return True
    if parts[:2] != ("request", "object"):
        return False
    shape: Any = POD_FIELDS
    for part in parts[2:]:
        if shape == "map":
            shape = 1
        elif isinstance(shape, dict) and isinstance(part, int) and "[]" in shape:
            shape = shape["[]"]
        elif isinstance(shape, dict) and isinstance(part, str) and part in shape:
            shape = shape[part]
        else:
            return False
    return True


def json_path(parts: tuple[str | int, ...]) -> str:
    """The location as `schema.BadInput` names it: `$.a.b[0]`, map keys as `['key']`."""
    path = "$"
    for index, part in enumerate(parts):
        if isinstance(part, int):
            path += f"[{part}]"
        elif index >= 2 and parts[index - 1] in MAPS and parts[index - 2] in MAP_PARENTS:
            path += f"[{part!r}]"
        else:
            path += f".{part}"
    return path


def locations(value: Any, parts: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    yield parts
    if isinstance(value, dict):
        for key, item in value.items():
            yield from locations(item, (*parts, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from locations(item, (*parts, index))


def wrong_values(value: Any, *, quantity: bool) -> list[Any]:
    """Values of a JSON type other than the one found there (numbers stay valid quantities)."""
    candidates: list[Any] = ["text", 7, 2.5, True, [], ["x"], {}, {"k": "v"}]
    if isinstance(value, bool):
        return [c for c in candidates if not isinstance(c, bool)]
    if isinstance(value, (int, float)) or quantity and isinstance(value, str):
        return [c for c in candidates if isinstance(c, (bool, list, dict))]
    if isinstance(value, str):
        return [c for c in candidates if not isinstance(c, str)]
    if isinstance(value, list):
        return [c for c in candidates if not isinstance(c, list)]
    return [c for c in candidates if not isinstance(c, dict)]


def value_at(document: Any, parts: tuple[str | int, ...]) -> Any:
    for part in parts:
        document = document[part]
    return document


def replaced(document: Any, parts: tuple[str | int, ...], value: Any) -> Any:
    if not parts:
        return value
    copied = orjson.loads(orjson.dumps(document))
    target = copied
    for part in parts[:-1]:
        target = target[part]
    target[parts[-1]] = value
    return copied


@HTTP_PROPERTY
@given(pod=launcher_pods(with_compute=True), endpoint=ENDPOINT, data=st.data())
def test_a_wrong_type_anywhere_is_never_a_5xx(
    client: TestClient, pod: dict[str, Any], endpoint: str, data: st.DataObject
) -> None:
    document = orjson.loads(admission_review(pod))
    # A null has no type to be wrong against (it is absent); the next test covers nulls.
    present = [parts for parts in locations(document) if value_at(document, parts) is not None]
    parts = data.draw(st.sampled_from(present), label="location")
    current = value_at(document, parts)
    quantity = len(parts) >= 2 and parts[-2] in ("limits", "requests")
    bad = data.draw(st.sampled_from(wrong_values(current, quantity=quantity)), label="value")
    body = orjson.dumps(replaced(document, parts, bad))

    response = client.post(endpoint, content=body, headers={"Content-Type": "application/json"})

    assert response.status_code < 500, response.text
    if is_read(parts):
        assert response.status_code == 400, (json_path(parts), response.text)
        status = response.json()
        assert status["details"]["causes"][0]["field"] == json_path(parts)
    else:
        assert response.status_code == 200, (json_path(parts), response.text)


@HTTP_PROPERTY
@given(pod=launcher_pods(with_compute=True), endpoint=ENDPOINT, data=st.data())
def test_a_null_anywhere_is_never_a_5xx(
    client: TestClient, pod: dict[str, Any], endpoint: str, data: st.DataObject
) -> None:
    """JSON null where a value was: absent for a field, broken as a list item; never a 500.

    A null capability (`capabilities.add: [null]`) was once an AttributeError, a 500.
    """
    document = orjson.loads(admission_review(pod))
    parts = data.draw(st.sampled_from(list(locations(document))[1:]), label="location")
    body = orjson.dumps(replaced(document, parts, None))

    response = client.post(endpoint, content=body, headers={"Content-Type": "application/json"})

    assert response.status_code < 500, (json_path(parts), response.text)
    if response.status_code == 400:
        assert response.json()["details"]["causes"][0]["field"].startswith("$")
    else:
        assert response.status_code == 200


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_each_fixture_broken_at_each_location_is_bad_input_or_answered(name: str) -> None:
    """Exhaustive over the fixtures: null or a wrong type at every location, both endpoints.

    The app answers BadInput with 400 and anything else with 500, so the rules may only ever
    raise BadInput (naming a `$` path); `capabilities.add[i]: null` was once an AttributeError.
    """
    document = load_fixture(name)
    policy = LauncherPolicy()
    failures: list[str] = []
    for parts in locations(document):
        current = value_at(document, parts)
        quantity = len(parts) >= 2 and parts[-2] in ("limits", "requests")
        wrong = [] if current is None else wrong_values(current, quantity=quantity)
        for bad in [None, *wrong] if parts else wrong:
            body = orjson.dumps(replaced(document, parts, bad))
            for decide in (mutate_review, validate_review):
                try:
                    decide(review.parse(body), policy)
                except BadInput as error:
                    if not error.path.startswith("$"):
                        failures.append(f"{decide.__name__}: {json_path(parts)}={bad!r}: {error}")
                except Exception as error:
                    failures.append(f"{decide.__name__}: {json_path(parts)}={bad!r}: {error!r}")
    assert not failures, "\n".join(failures)
