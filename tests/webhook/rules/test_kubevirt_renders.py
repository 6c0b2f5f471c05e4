"""Launcher pods as KubeVirt's own template code renders them, release by release.

The pods in `tests/fixtures/kubevirt/` were written from `pkg/virt-controller/services/` at each
tag; every file cites the `path@tag:lines` its fields come from. The promise tested here is the
one virtdev exists for: a launcher KubeVirt renders is never broken or refused, except that
`privileged` is replaced (v0.6's render), and escalations on top of a render are denied with
their field path and value. Each render is checked under `auto` (the image tag decides) and
under an explicit `--kubevirt-version` with the images pinned by digest, as release manifests
and air-gapped mirrors pin them.
"""

from __future__ import annotations

import base64
import copy
import re
from typing import Any

import jsonpatch
import orjson
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.webhook.conftest import RENDERS
from webhook.admission import mutate_review, validate_review
from webhook.rules import baseline, profiles
from webhook.rules.launcher import read_launcher
from webhook.rules.policy import LauncherPolicy, normalise_capability
from webhook.serving import review
from webhook.serving.review import as_request

LAUNCHERS = sorted(p.name for p in RENDERS.glob("v*.yaml"))
DOMAIN = "devices.kubevirt.io/"
DIGEST = "@sha256:" + "5f" * 32


def load(name: str) -> dict[str, Any]:
    pod: dict[str, Any] = yaml.safe_load((RENDERS / name).read_text(encoding="utf-8"))
    return pod


def release_of(name: str) -> tuple[int, int]:
    version = profiles.parse_version(name.split("-", 1)[0].removesuffix(".yaml"))
    assert version is not None, name
    return version


def pinned(pod: dict[str, Any]) -> dict[str, Any]:
    """The same pod with every image pinned by digest: no tag left to read a release from."""
    text = orjson.dumps(pod).decode()
    text = re.sub(r'("image":"[^"@]*?/virt-launcher):[^"@]+"', r"\1" + DIGEST + '"', text)
    result: dict[str, Any] = orjson.loads(text)
    return result


def capabilities(pod: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    found = {}
    for field in ("containers", "initContainers"):
        for container in pod["spec"].get(field) or ():
            security = container.get("securityContext") or {}
            adds = (security.get("capabilities") or {}).get("add") or ()
            found[(field, container["name"])] = {normalise_capability(c) for c in adds}
    return found


def devices(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = {}
    for field in ("containers", "initContainers"):
        for container in pod["spec"].get(field) or ():
            resources = container.get("resources") or {}
            found[container["name"]] = {
                section: {
                    k: v for k, v in (resources.get(section) or {}).items() if k.startswith(DOMAIN)
                }
                for section in ("limits", "requests")
            }
    return found


def variants(name: str) -> list[tuple[str, dict[str, Any], LauncherPolicy]]:
    pod = load(name)
    return [
        ("auto", pod, LauncherPolicy()),
        ("pinned", pinned(pod), LauncherPolicy(kubevirt_version=release_of(name))),
    ]


def mutated(pod: dict[str, Any], policy: LauncherPolicy) -> tuple[dict[str, Any], Any]:
    answer = mutate_review(as_request(pod), policy)
    assert answer.allowed
    return jsonpatch.apply_patch(copy.deepcopy(pod), answer.patch), answer


def test_there_is_a_render_of_every_era_the_issue_names() -> None:
    wanted = {
        "v0.6.0-privileged.yaml",
        "v0.7.0.yaml",
        "v0.20.0.yaml",
        "v0.30.0.yaml",
        "v0.50.0-root.yaml",
        "v0.50.0-virtiofs.yaml",
        "v0.59.0-virtiofs-hook-sidecar.yaml",
        "v1.9.0-nonroot.yaml",
        "v1.9.0-root-dedicated-cpus.yaml",
        "v1.9.0-emulation.yaml",
        "v1.9.0-migration-target.yaml",
        "v1.9.0-virtiofs-hook-sidecar.yaml",
    }
    assert wanted <= set(LAUNCHERS)
    for name in [*LAUNCHERS, "hotplug-v1.9.0.yaml"]:
        text = (RENDERS / name).read_text(encoding="utf-8")
        assert re.search(r"pkg/[\w/.-]+\.go@v\d+\.\d+\.\d+:\d+", text), f"{name} cites no source"


@pytest.mark.parametrize("name", LAUNCHERS)
def test_validate_allows_every_render_but_a_privileged_one(name: str) -> None:
    for variant, pod, policy in variants(name):
        answer = validate_review(as_request(pod), policy)
        profile = profiles.profile_for(release_of(name))
        assert answer.audit_annotations["profile"].startswith(f"KubeVirt {profile.name} profile")
        if "privileged" in name:
            assert not answer.allowed, variant
            index = pod["spec"]["containers"].index(compute_of(pod))
            assert f"spec.containers[{index}].securityContext.privileged: true" in answer.message
        else:
            assert answer.allowed, (variant, answer.message)


@pytest.mark.parametrize("name", LAUNCHERS)
def test_mutate_keeps_the_render_able_to_run_and_validate_allows_it(name: str) -> None:
    for variant, pod, policy in variants(name):
        after, answer = mutated(pod, policy)
        before_caps, after_caps = capabilities(pod), capabilities(after)
        for container, rendered in before_caps.items():
            assert rendered <= after_caps[container], (variant, container, "lost a capability")
        version = release_of(name)
        if version >= (0, 41):
            for container, added in after_caps.items():
                assert "NET_ADMIN" not in added - before_caps[container], (variant, container)
        rendered_devices = devices(pod)
        if any(any(sections.values()) for sections in rendered_devices.values()):
            assert devices(after) == rendered_devices, (variant, "device requests changed")
        assert validate_review(as_request(after), policy).allowed, (variant, answer.patch)
        assert mutate_review(as_request(after), policy).patch == [], (variant, "not idempotent")


def test_the_current_nonroot_render_is_not_touched_at_all() -> None:
    for _, pod, policy in variants("v1.9.0-nonroot.yaml"):
        answer = mutate_review(as_request(pod), policy)
        assert answer.patch == [] and answer.warnings == []
        assert answer.verdict == "allowed"


def test_the_v06_render_is_rewritten_as_v07_rendered_it() -> None:
    pod = load("v0.6.0-privileged.yaml")
    after, answer = mutated(pod, LauncherPolicy())
    v07 = load("v0.7.0.yaml")
    compute, compute_07 = compute_of(after), compute_of(v07)
    assert compute["name"] == compute_07["name"] == "compute"
    assert compute["securityContext"]["privileged"] is False
    assert (
        compute["securityContext"]["capabilities"] == compute_07["securityContext"]["capabilities"]
    )
    assert devices(after)["compute"] == devices(v07)["compute"]
    assert (
        after["spec"]["securityContext"]["seLinuxOptions"]
        == v07["spec"]["securityContext"]["seLinuxOptions"]
    )
    assert "compute privileged=false" in answer.audit_annotations["mutation"]


def test_a_hotplug_attachment_pod_is_not_a_launcher() -> None:
    pod = load("hotplug-v1.9.0.yaml")
    assert mutate_review(as_request(pod), LauncherPolicy()).verdict == "skipped"
    assert validate_review(as_request(pod), LauncherPolicy()).verdict == "skipped"


# --- escalations on top of a legitimate render -------------------------------------------------


def compute_of(pod: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in pod["spec"]["containers"] if c["name"] == "compute")


def denial(pod: dict[str, Any], policy: LauncherPolicy | None = None) -> str:
    answer = validate_review(as_request(pod), policy or LauncherPolicy())
    assert not answer.allowed
    return answer.message


@pytest.mark.parametrize("name", ["v1.9.0-nonroot.yaml", "v0.59.0-virtiofs-hook-sidecar.yaml"])
@pytest.mark.parametrize("capability", ["SYS_ADMIN", "SYS_PTRACE"])
def test_an_extra_capability_is_denied_with_its_path_and_value(name: str, capability: str) -> None:
    pod = load(name)
    adds = compute_of(pod)["securityContext"]["capabilities"]["add"]
    adds.append(capability)
    index = pod["spec"]["containers"].index(compute_of(pod))
    assert (
        f"spec.containers[{index}].securityContext.capabilities.add[{len(adds) - 1}]: {capability}"
        in denial(pod)
    )


def test_sys_ptrace_is_allowed_where_the_release_renders_it() -> None:
    pod = load("v0.50.0-root.yaml")
    compute_of(pod)["securityContext"]["capabilities"]["add"].append("SYS_PTRACE")
    pod["spec"]["containers"][0]["image"] = "quay.io/kubevirt/virt-launcher:v0.55.0"
    assert validate_review(as_request(pod), LauncherPolicy()).allowed


@pytest.mark.parametrize("path", ["/", "/var/run/kubevirt", "/etc/kubernetes"])
def test_a_host_path_the_release_does_not_mount_is_denied(path: str) -> None:
    pod = load("v1.9.0-root-dedicated-cpus.yaml")
    volumes = pod["spec"].setdefault("volumes", [])
    volumes.append({"name": "host", "hostPath": {"path": path}})
    assert f"spec.volumes[{len(volumes) - 1}].hostPath.path: {path}" in denial(pod)


def test_the_host_paths_v020_renders_itself_are_allowed() -> None:
    pod = load("v0.20.0.yaml")
    assert any("hostPath" in v for v in pod["spec"]["volumes"])
    assert validate_review(as_request(pod), LauncherPolicy()).allowed


def test_seccomp_unconfined_is_denied() -> None:
    pod = load("v1.9.0-nonroot.yaml")
    pod["spec"]["securityContext"]["seccompProfile"] = {"type": "Unconfined"}
    assert "spec.securityContext.seccompProfile.type: Unconfined" in denial(pod)


def test_spc_t_is_denied_on_a_release_that_no_longer_sets_it() -> None:
    pod = load("v1.9.0-nonroot.yaml")
    pod["spec"]["securityContext"]["seLinuxOptions"] = {"type": "spc_t"}
    assert "spec.securityContext.seLinuxOptions.type: spc_t" in denial(pod)
    assert validate_review(as_request(load("v0.7.0.yaml")), LauncherPolicy()).allowed


def test_a_denial_names_the_profile_that_decided() -> None:
    pod = pinned(load("v1.9.0-nonroot.yaml"))
    compute_of(pod)["securityContext"]["capabilities"]["add"].append("SYS_ADMIN")
    message = denial(pod)
    assert (
        "(KubeVirt v1.7+ profile on Pod Security baseline latest (v1.37), the newest, "
        "image pinned by digest or untagged): "
    ) in message


def test_the_number_of_violations_named_is_capped() -> None:
    pod = load("v1.9.0-nonroot.yaml")
    compute_of(pod)["securityContext"]["capabilities"]["add"] = [f"X_{i}" for i in range(5000)]
    message = denial(pod)
    assert message.count("capabilities.add[") == 16
    assert message.endswith("and 4984 more")
    assert len(message) < 4096
    # Past MAX_COUNTED the verdict is long known: counting stops.
    compute_of(pod)["securityContext"]["capabilities"]["add"] = [f"X_{i}" for i in range(30_000)]
    assert denial(pod).endswith("and more than 10000 more")


# --- property: every profile's own renders survive mutation and validation ---------------------

BEYOND = ["SYS_ADMIN", "SYS_PTRACE", "NET_RAW", "BPF", "SYS_MODULE", "NET_ADMIN", "SYS_NICE"]
ROLE_NAMES = {
    "compute": "compute",
    "virtiofs": "virtiofs-disk0",
    "hook-sidecar": "hook-sidecar-0",
    "guest-console-log": "guest-console-log",
    "container-disk": "volumecontainerdisk",
    "unknown": "istio-proxy",
}


@st.composite
def launcher_pods(draw: st.DrawFn) -> tuple[dict[str, Any], profiles.Profile]:
    profile = draw(st.sampled_from(profiles.PROFILES))
    release = f"v{profile.since[0]}.{profile.since[1]}.{draw(st.integers(0, 3))}"
    containers = []
    # KubeVirt renders compute in every launcher, and the release is read from its image alone.
    roles = draw(st.lists(st.sampled_from(profiles.ROLES), max_size=4, unique=True))
    for role in roles if "compute" in roles else ["compute", *roles]:
        allowed = sorted(profile.capabilities.get(role, frozenset()) | baseline.CAPABILITIES)
        adds = draw(st.lists(st.sampled_from(allowed + BEYOND), max_size=5))
        security: dict[str, Any] = {}
        if len(adds) > 0 or draw(st.booleans()):
            security["capabilities"] = {"add": adds, "drop": draw(st.sampled_from([[], ["ALL"]]))}
        privileged = draw(st.sampled_from([None, False, True]))
        if privileged is not None:
            security["privileged"] = privileged
        container: dict[str, Any] = {
            "name": ROLE_NAMES[role],
            "image": f"quay.io/kubevirt/virt-launcher:{release}",
        }
        if len(security) > 0 or draw(st.booleans()):
            container["securityContext"] = security
        if role == "compute":
            if draw(st.booleans()):
                container["command"] = [
                    "virt-launcher",
                    draw(st.sampled_from(["--allow-emulation", "-v"])),
                ]
            if draw(st.booleans()):
                wanted = draw(
                    st.sampled_from(
                        [["kvm"], ["kvm", "tun"], ["mshv"], ["tun"], ["kvm", "vhost-net"]]
                    )
                )
                limits = {DOMAIN + d: "1" for d in wanted}
                container["resources"] = {"limits": limits, "requests": dict(limits)}
        containers.append(container)
    spec: dict[str, Any] = {"containers": containers}
    if profile.selinux_type and draw(st.booleans()):
        spec["securityContext"] = {"seLinuxOptions": {"type": profile.selinux_type}}
    mounts = sorted(p for p in profile.host_paths if not p.endswith("/"))
    if len(mounts) > 0 and draw(st.booleans()):
        spec["volumes"] = [{"name": "host", "hostPath": {"path": draw(st.sampled_from(mounts))}}]
    pod = {
        "metadata": {
            "generateName": "virt-launcher-vm-",
            "labels": {"kubevirt.io": "virt-launcher"},
        },
        "spec": spec,
    }
    return pod, profile


@settings(max_examples=300, deadline=None)
@given(case=launcher_pods())
def test_validate_allows_what_mutate_makes_of_any_render_and_nothing_allowed_is_lost(
    case: tuple[dict[str, Any], profiles.Profile],
) -> None:
    pod, profile = case
    policy = LauncherPolicy()
    launcher = read_launcher(pod, policy)
    assert launcher.release.profile is profile
    after, _ = mutated(pod, policy)
    verdict = validate_review(as_request(after), policy)
    assert verdict.allowed, verdict.message
    assert mutate_review(as_request(after), policy).patch == []
    after_caps = capabilities(after)
    for slot in launcher.slots:
        adds = ((slot.container.get("securityContext") or {}).get("capabilities") or {}).get(
            "add"
        ) or ()
        kept = {normalise_capability(c) for c in adds if c in slot.capabilities}
        assert kept <= after_caps[(slot.list_field, slot.container["name"])]


def test_the_answer_carries_base64_of_the_patch() -> None:
    pod = load("v0.6.0-privileged.yaml")
    body = review.render(as_request(pod), mutate_review(as_request(pod), LauncherPolicy()))
    patch = orjson.loads(base64.b64decode(body["response"]["patch"]))
    index = pod["spec"]["containers"].index(compute_of(pod))
    assert {
        "op": "replace",
        "path": f"/spec/containers/{index}/securityContext/privileged",
        "value": False,
    } in patch
