"""Pod Security Admission's own fixtures as the oracle: every one gets PSA's answer, at its version.

`tests/fixtures/psa/baseline/v1.N/{pass,fail}/*.yaml` are PSA's baseline test data, unchanged
(kubernetes/pod-security-admission@8f84a87c7f, tests/fixtures/psa/README.md): at policy version
v1.N baseline allows every `pass` pod and refuses every `fail` pod. Each is judged here at its
version (`--baseline-version v1.N`), as a tenant's CREATE, three ways:

- by the pure rules, `/guard`'s `guard_review`;
- with the launcher label added, by `/validate`'s `validate_review`: a tenant's launcher-labelled
  pod is judged as any pod, so the same answer and the same violations;
- through the real `virtdev webhook` over HTTPS, both ways, for a sample of versions: the first
  and last of each run of versions whose fixtures are the same, and `latest` (38 servers would
  take a minute).

The fixtures are all single Pods. Workload kinds (Deployments and the like, whose pod templates
PSA also checks, with warnings only) are out of scope: virtdev admits pods. A refreshed set that
holds anything but Pods fails `test_every_fixture_is_a_pod`. What the fixtures leave out (a
control's value just before the version that changed it) is tried last, from the checks
themselves (tests/fixtures/psa/CONTROLS.md).
"""

from __future__ import annotations

import copy
import functools
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from tests import support
from virtdev import catalogue
from webhook.admission import Request, guard_review, validate_review
from webhook.rules.answer import Answer
from webhook.rules.policy import LauncherPolicy
from webhook.serving import review
from webhook.serving.review import create_review

PSA = Path(__file__).resolve().parents[2] / "fixtures" / "psa" / "baseline"
TENANT = "system:serviceaccount:tenant-a:default"


def minor(version: str) -> int:
    """`v1.37` -> 37."""
    return int(version.removeprefix("v1."))


VERSIONS = sorted((path.name for path in PSA.iterdir() if path.is_dir()), key=minor)
NEWEST = VERSIONS[-1]


@dataclass(frozen=True)
class Fixture:
    version: str
    expected: str  # "pass" or "fail"
    path: Path

    @property
    def id(self) -> str:
        """`v1.37/fail/capabilities_baseline1.yaml`."""
        return f"{self.version}/{self.expected}/{self.path.name}"

    @property
    def allowed(self) -> bool:
        return self.expected == "pass"

    def documents(self) -> list[Any]:
        return list(yaml.safe_load_all(self.path.read_text(encoding="utf-8")))

    def pod(self) -> dict[str, Any]:
        """The fixture's one Pod (`test_every_fixture_is_a_pod` holds them to that)."""
        (document,) = self.documents()
        assert isinstance(document, dict), self.id
        return document


def fixtures(version: str) -> list[Fixture]:
    return [
        Fixture(version, expected, path)
        for expected in ("pass", "fail")
        for path in sorted((PSA / version / expected).glob("*.yaml"))
    ]


FIXTURES = [fixture for version in VERSIONS for fixture in fixtures(version)]


def sampled_versions() -> list[str]:
    """The first and the last version of each run whose fixtures are byte for byte the same."""
    runs: list[list[str]] = []
    previous: dict[str, bytes] = {}
    for version in VERSIONS:
        files = {f.id.split("/", 1)[1]: f.path.read_bytes() for f in fixtures(version)}
        if files != previous:
            runs.append([])
        runs[-1].append(version)
        previous = files
    return sorted({v for run in runs for v in (run[0], run[-1])}, key=minor)


@functools.cache
def policy_at(version: str) -> LauncherPolicy:
    """The policy of `--baseline-version <version>`, otherwise the defaults."""
    return LauncherPolicy.from_flags(baseline_version=version)


def create(pod: dict[str, Any]) -> dict[str, Any]:
    """The AdmissionReview the API server sends when the tenant creates `pod` in its namespace."""
    body = create_review(pod, TENANT)
    body["request"]["uid"] = "5a5a5a5a-0000-4000-8000-000000000021"
    body["request"]["namespace"] = "tenant-a"
    return body


def parsed(body: dict[str, Any]) -> Request:
    return review.parse(orjson.dumps(body))


def labelled(pod: dict[str, Any]) -> dict[str, Any]:
    """The same pod with KubeVirt's launcher label."""
    launcher = copy.deepcopy(pod)
    metadata = launcher.setdefault("metadata", {})
    metadata.setdefault("labels", {})[catalogue.LAUNCHER_LABEL_KEY] = catalogue.LAUNCHER_LABEL_VALUE
    return launcher


def psa_says(allowed: bool) -> str:
    return "PSA allows it" if allowed else "PSA refuses it"


def virtdev_says(answer: Answer) -> str:
    return f"virtdev: {answer.message}" if not answer.allowed else "virtdev allowed it"


def test_every_version_from_v1_0_to_the_newest_is_there() -> None:
    assert VERSIONS == [f"v1.{n}" for n in range(minor(NEWEST) + 1)]
    assert all((PSA / version / "pass" / "base.yaml").is_file() for version in VERSIONS)
    assert len(FIXTURES) == 1555  # at 8f84a87c7f: 40 a version to v1.33, 48 at v1.34, 49 after


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda f: f.id)
def test_every_fixture_is_a_pod(fixture: Fixture) -> None:
    kinds = [
        (document or {}).get("kind") if isinstance(document, dict) else type(document).__name__
        for document in fixture.documents()
    ]
    assert kinds == ["Pod"], f"{fixture.id}: {kinds}; only Pods are in scope (module docstring)"


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda f: f.id)
def test_guard_gives_psas_answer_at_the_fixtures_version(fixture: Fixture) -> None:
    answer = guard_review(parsed(create(fixture.pod())), policy_at(fixture.version))
    assert answer.allowed is fixture.allowed, (
        f"{fixture.id}: {psa_says(fixture.allowed)}; {virtdev_says(answer)}"
    )
    if not answer.allowed:
        # The denial names the version that judged.
        assert f"Pod Security baseline {fixture.version}" in answer.message, answer.message


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda f: f.id)
def test_a_tenants_launcher_labelled_fixture_is_judged_as_any_pod(fixture: Fixture) -> None:
    policy = policy_at(fixture.version)
    as_any_pod = guard_review(parsed(create(fixture.pod())), policy)
    answer = validate_review(parsed(create(labelled(fixture.pod()))), policy)
    assert answer.verdict != "skipped", fixture.id
    assert answer.allowed is fixture.allowed, (
        f"{fixture.id} labelled {catalogue.LAUNCHER_SELECTOR}: {psa_says(fixture.allowed)}; "
        f"{virtdev_says(answer)}"
    )
    assert answer.violations == as_any_pod.violations, fixture.id


@pytest.fixture(scope="module")
def webhooks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One `virtdev webhook --baseline-version V` per sampled version, started when first asked
    for and stopped together at the end of the module."""
    started: dict[str, Any] = {}
    try:
        yield started
    finally:
        for server in started.values():
            server.stop()


def webhook_at(webhooks: dict[str, Any], tmp_path_factory: pytest.TempPathFactory, v: str) -> Any:
    if v not in webhooks:
        directory = tmp_path_factory.mktemp(f"psa-{v}")
        webhooks[v] = support.start_webhook(directory, "--baseline-version", v)
    return webhooks[v]


@pytest.mark.slow
@pytest.mark.parametrize("version", [*sampled_versions(), "latest"])
def test_the_real_server_gives_psas_answer_to_every_fixture_of_its_version(
    version: str, webhooks: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    server = webhook_at(webhooks, tmp_path_factory, version)
    judged = NEWEST if version == "latest" else version
    named = f"latest ({NEWEST})" if version == "latest" else version
    wrong = []
    context = ssl.create_default_context(cafile=str(server.ca_cert))
    with httpx.Client(verify=context, timeout=30) as client:
        for fixture in fixtures(judged):
            for path, pod in (("/guard", fixture.pod()), ("/validate", labelled(fixture.pod()))):
                reply = client.post(f"https://127.0.0.1:{server.port}{path}", json=create(pod))
                assert reply.status_code == 200, f"{fixture.id} {path}: {reply.text}"
                response = reply.json()["response"]
                message = (response.get("status") or {}).get("message", "")
                if response["allowed"] is not fixture.allowed:
                    wrong.append(f"{path} {fixture.id}: {psa_says(fixture.allowed)}; {message}")
                elif not fixture.allowed and f"Pod Security baseline {named}" not in message:
                    wrong.append(f"{path} {fixture.id}: the denial names no {named}: {message}")
    assert not wrong, "\n".join(wrong)


# What the fixtures leave out: each control's value at the last version before the one that
# changed it, and at that one, read from policy/check_*.go@8f84a87c7f (CONTROLS.md). Cases of
# this module's own, built on PSA's `pass/base.yaml`, not upstream data.


def sysctl(name: str) -> Callable[[dict[str, Any]], None]:
    def change(pod: dict[str, Any]) -> None:
        context = pod["spec"].setdefault("securityContext", {})
        context["sysctls"] = [{"name": name, "value": "1"}]

    return change


def pod_security_context(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(pod: dict[str, Any]) -> None:
        pod["spec"].setdefault("securityContext", {})[key] = value

    return change


def container(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(pod: dict[str, Any]) -> None:
        pod["spec"]["containers"][0][key] = value

    return change


def annotation(key: str, value: str) -> Callable[[dict[str, Any]], None]:
    def change(pod: dict[str, Any]) -> None:
        pod["metadata"].setdefault("annotations", {})[key] = value

    return change


EDGES: list[tuple[str, str, bool, Callable[[dict[str, Any]], None]]] = [
    (
        "v1.26",
        "sysctl net.ipv4.ip_local_reserved_ports",
        False,
        sysctl("net.ipv4.ip_local_reserved_ports"),
    ),
    (
        "v1.27",
        "sysctl net.ipv4.ip_local_reserved_ports",
        True,
        sysctl("net.ipv4.ip_local_reserved_ports"),
    ),
    ("v1.28", "sysctl net.ipv4.tcp_keepalive_time", False, sysctl("net.ipv4.tcp_keepalive_time")),
    ("v1.29", "sysctl net.ipv4.tcp_keepalive_time", True, sysctl("net.ipv4.tcp_keepalive_time")),
    ("v1.31", "sysctl net.ipv4.tcp_rmem", False, sysctl("net.ipv4.tcp_rmem")),
    ("v1.32", "sysctl net.ipv4.tcp_rmem", True, sysctl("net.ipv4.tcp_rmem")),
    ("v1.36", "sysctl net.ipv4.tcp_notsent_lowat", False, sysctl("net.ipv4.tcp_notsent_lowat")),
    ("v1.37", "sysctl net.ipv4.tcp_notsent_lowat", True, sysctl("net.ipv4.tcp_notsent_lowat")),
    ("latest", "sysctl net.ipv4.tcp_notsent_lowat", True, sysctl("net.ipv4.tcp_notsent_lowat")),
    (
        "v1.30",
        "pod seLinuxOptions.type container_engine_t",
        False,
        pod_security_context("seLinuxOptions", {"type": "container_engine_t"}),
    ),
    (
        "v1.31",
        "pod seLinuxOptions.type container_engine_t",
        True,
        pod_security_context("seLinuxOptions", {"type": "container_engine_t"}),
    ),
    (
        "v1.18",
        "pod seccompProfile.type Unconfined (fields not checked before v1.19)",
        True,
        pod_security_context("seccompProfile", {"type": "Unconfined"}),
    ),
    (
        "v1.19",
        "seccomp annotation unconfined (annotations not checked from v1.19)",
        True,
        annotation("seccomp.security.alpha.kubernetes.io/pod", "unconfined"),
    ),
    (
        "v1.0",
        "pod appArmorProfile.type Unconfined (checked at every version)",
        False,
        pod_security_context("appArmorProfile", {"type": "Unconfined"}),
    ),
    (
        "v1.33",
        "livenessProbe.httpGet.host (no such check before v1.34)",
        True,
        container("livenessProbe", {"httpGet": {"host": "10.0.0.1", "port": 8080}}),
    ),
    (
        "v1.34",
        "livenessProbe.httpGet.host",
        False,
        container("livenessProbe", {"httpGet": {"host": "10.0.0.1", "port": 8080}}),
    ),
]


@pytest.mark.parametrize(
    ("version", "what", "allowed", "change"),
    EDGES,
    ids=[f"{v} {'allows' if ok else 'refuses'} {what}" for v, what, ok, _ in EDGES],
)
def test_what_the_fixtures_leave_out_is_judged_as_psa_would(
    version: str, what: str, allowed: bool, change: Callable[[dict[str, Any]], None]
) -> None:
    judged = NEWEST if version == "latest" else version
    pod = Fixture(judged, "pass", PSA / judged / "pass" / "base.yaml").pod()
    change(pod)
    policy = policy_at(version)
    for name, answer in (
        ("/guard", guard_review(parsed(create(pod)), policy)),
        ("/validate, labelled", validate_review(parsed(create(labelled(pod))), policy)),
    ):
        assert answer.allowed is allowed, (
            f"{version} {what} ({name}): {psa_says(allowed)}; {virtdev_says(answer)}"
        )
