"""Release exceptions go to KubeVirt's controller alone: each rule tried as a tenant would.

A tenant who may create pods in one namespace writes every field of them, labels, images and
ownerReferences included; what it cannot write is the requester the API server names in
`request.userInfo`. Each attack class of issue 20 is tried here against the pure rules and, at
the end, over real HTTPS against the `virtdev webhook` process: a forged launcher, a forged
hotplug pod, the guarded namespace, /mutate rewriting a tenant's privileged pod, an image swap,
a debug container mounting the launcher's hostPath, the release picked from a non-compute image,
and NET_ADMIN on releases that never render it. KubeVirt's own renders, created by its
controller, are still allowed (tests/webhook/rules/test_kubevirt_renders.py holds them all), and a
tenant's baseline `kubectl debug` and label edits still pass.
"""

from __future__ import annotations

import copy
import ssl
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
import yaml

from tests import support
from tests.webhook.conftest import RENDERS
from virtdev import catalogue
from webhook.admission import Request, guard_review, mutate_review, validate_review
from webhook.rules.answer import Answer
from webhook.rules.launcher import read_launcher
from webhook.rules.policy import LauncherPolicy
from webhook.rules.shapes import BadInput
from webhook.serving import review

CONTROLLER = catalogue.KUBEVIRT_CONTROLLERS[0]
TENANT = "system:serviceaccount:tenant-a:default"
POLICY = LauncherPolicy()
DIGEST = "@sha256:" + "5f" * 32


def render(name: str) -> dict[str, Any]:
    pod: dict[str, Any] = yaml.safe_load((RENDERS / name).read_text(encoding="utf-8"))
    return pod


def request(
    pod: dict[str, Any],
    username: str,
    *,
    old: dict[str, Any] | None = None,
    sub_resource: str = "",
) -> Request:
    """The review the API server sends when `username` creates `pod` (or updates `old` to it)."""
    body: dict[str, Any] = {
        "uid": "7c1e0c1a-0000-4000-8000-000000000001",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "operation": "CREATE" if old is None else "UPDATE",
        "userInfo": {"username": username, "groups": ["system:authenticated"]},
        "namespace": "vms",
        "object": pod,
    }
    if old is not None:
        body["oldObject"] = old
    if sub_resource:
        body["subResource"] = sub_resource
    return review.parse(
        orjson.dumps(
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": body}
        )
    )


def forged_launcher() -> dict[str, Any]:
    """What issue 20 measured /validate allow: a root shell with the v0.20 launcher's label,
    image tag, SELinux type, share directory and capabilities."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "not-a-vm", "labels": {"kubevirt.io": "virt-launcher"}},
        "spec": {
            "securityContext": {"runAsUser": 0, "seLinuxOptions": {"type": "spc_t"}},
            "volumes": [{"name": "share", "hostPath": {"path": "/var/run/kubevirt"}}],
            "containers": [
                {
                    "name": "compute",
                    "image": "anything/virt-launcher:v0.20.0",
                    "command": ["/bin/sh"],
                    "securityContext": {
                        "capabilities": {"add": ["NET_ADMIN", "SYS_NICE", "SYS_RESOURCE"]}
                    },
                    "volumeMounts": [{"name": "share", "mountPath": "/host"}],
                }
            ],
        },
    }


def denied_paths(answer: Answer) -> list[str]:
    assert not answer.allowed, "allowed"
    return [violation.split(": ", 1)[0] for violation in answer.violations]


# --- forged launchers and hotplug pods -----------------------------------------------------


def test_a_forged_launcher_from_a_tenant_is_judged_by_baseline_and_told_why() -> None:
    answer = validate_review(request(forged_launcher(), TENANT), POLICY)
    assert denied_paths(answer) == [
        "spec.securityContext.seLinuxOptions.type",
        "spec.volumes[0].hostPath.path",
        "spec.containers[0].securityContext.capabilities.add[0]",
        "spec.containers[0].securityContext.capabilities.add[1]",
        "spec.containers[0].securityContext.capabilities.add[2]",
    ]
    assert (
        f"launcher label, but created by {TENANT}, not by KubeVirt's controller" in answer.message
    )
    assert answer.audit_annotations["requester"] == f"other: {TENANT}"
    assert "Pod Security baseline" in answer.audit_annotations["profile"]
    # What the denials metric and the audit's reports are labelled with: PSA's check ids.
    assert answer.controls == ("capabilities_baseline", "hostPathVolumes", "seLinuxOptions")
    assert answer.profile == "baseline"


def test_the_same_pod_from_kubevirts_controller_gets_the_v020_exceptions() -> None:
    """The control: what tells the two apart is the requester, nothing in the pod."""
    answer = validate_review(request(forged_launcher(), CONTROLLER), POLICY)
    assert answer.allowed, answer.message
    assert "requester" not in answer.audit_annotations


@pytest.mark.parametrize("name", sorted(p.name for p in RENDERS.glob("v*.yaml")))
def test_kubevirts_own_render_created_by_a_tenant_gets_baseline_alone(name: str) -> None:
    pod = render(name)
    answer = validate_review(request(pod, TENANT), POLICY)
    as_any_pod = guard_review(request(_unlabelled(pod), TENANT), POLICY)
    # Exactly what /guard says of the same pod without the label: baseline, nothing more.
    assert answer.allowed is as_any_pod.allowed
    assert answer.violations == as_any_pod.violations
    if answer.allowed:
        assert any("judged by Pod Security baseline" in w for w in answer.warnings)


def _unlabelled(pod: dict[str, Any]) -> dict[str, Any]:
    other = copy.deepcopy(pod)
    other["metadata"]["labels"] = {"app": "vm"}
    return other


def test_a_requester_the_api_server_did_not_name_is_not_kubevirts_controller() -> None:
    pod = forged_launcher()
    body = orjson.loads(orjson.dumps(pod))
    no_user = review.parse(
        orjson.dumps(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {
                    "uid": "u",
                    "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "operation": "CREATE",
                    "object": body,
                },
            }
        )
    )
    answer = validate_review(no_user, POLICY)
    assert not answer.allowed
    assert "a requester the API server did not name" in answer.message


@pytest.mark.parametrize("endpoint", ["mutate", "validate", "guard"])
def test_the_audit_annotation_names_an_unnamed_requester_as_messages_do(endpoint: str) -> None:
    """Where `userInfo.username` is empty, the `requester` annotation says so in words (it was
    `other: ` and nothing after it), on every endpoint that takes the pod for another's."""
    decide: dict[str, Callable[[Request, LauncherPolicy], Answer]] = {
        "mutate": mutate_review,
        "validate": validate_review,
        "guard": guard_review,
    }
    answer = decide[endpoint](request(forged_launcher(), ""), POLICY)
    expected = "other: a requester the API server did not name"
    assert answer.audit_annotations["requester"] == expected
    assert answer.other_requester == "a requester the API server did not name"
    hotplug = guard_review(request(hotplug_pod(), ""), POLICY)
    assert hotplug.audit_annotations["requester"] == expected


def test_a_group_or_a_lookalike_name_is_not_kubevirts_controller() -> None:
    for username in (
        "system:serviceaccount:tenant-a:kubevirt-controller",
        CONTROLLER + " ",
        CONTROLLER.upper(),
        "system:serviceaccounts:kubevirt",
    ):
        assert not validate_review(request(forged_launcher(), username), POLICY).allowed, username


def test_the_controllers_are_the_admins_to_name() -> None:
    openshift = "system:serviceaccount:openshift-cnv:kubevirt-controller"
    policy = LauncherPolicy.from_flags(kubevirt_controllers=[openshift])
    assert validate_review(request(forged_launcher(), openshift), policy).allowed
    assert not validate_review(request(forged_launcher(), CONTROLLER), policy).allowed
    with pytest.raises(ValueError, match="--kubevirt-controllers"):
        LauncherPolicy.from_flags(kubevirt_controllers=[" "])


def hotplug_pod(release: str = "v0.41.0") -> dict[str, Any]:
    """KubeVirt's hotplug attachment pod as v0.41 - v0.46 render it: on the host's network."""
    pod = render("hotplug-v1.9.0.yaml")
    pod["spec"]["containers"][0]["image"] = f"quay.io/kubevirt/virt-launcher:{release}"
    pod["spec"]["hostNetwork"] = True
    return pod


def test_a_forged_hotplug_pod_gets_no_host_network() -> None:
    answer = guard_review(request(hotplug_pod(), TENANT), POLICY)
    assert denied_paths(answer) == ["spec.hostNetwork"]
    assert f"hotplug label, but created by {TENANT}" in answer.message
    assert guard_review(request(hotplug_pod(), CONTROLLER), POLICY).allowed


def test_a_hotplug_pods_release_is_its_own_containers_not_a_second_ones() -> None:
    pod = hotplug_pod(release="v1.9.0")
    pod["spec"]["containers"].append(
        {"name": "x", "image": "quay.io/kubevirt/virt-launcher:v0.41.0"}
    )
    answer = guard_review(request(pod, CONTROLLER), POLICY)
    assert denied_paths(answer) == ["spec.hostNetwork"]


def test_in_a_guarded_namespace_the_launcher_label_opts_nothing_out_of_baseline() -> None:
    """/guard hands launcher-labelled pods to the launcher rules, which give a tenant's pod
    baseline: the label is no way out."""
    answer = guard_review(request(forged_launcher(), TENANT), POLICY)
    assert not answer.allowed
    assert (
        answer.violations == validate_review(request(forged_launcher(), TENANT), POLICY).violations
    )


# --- /mutate ---------------------------------------------------------------------------------


def test_mutate_leaves_a_tenants_privileged_launcher_alone_and_validate_refuses_it() -> None:
    pod = render("v0.6.0-privileged.yaml")
    mutated = mutate_review(request(pod, TENANT), POLICY)
    assert mutated.allowed and mutated.patch == []
    assert mutated.audit_annotations == {"requester": f"other: {TENANT}"}
    refused = validate_review(request(pod, TENANT), POLICY)
    assert "spec.containers[1].securityContext.privileged" in denied_paths(refused)
    # KubeVirt's own v0.6 launcher is still rewritten.
    assert mutate_review(request(pod, CONTROLLER), POLICY).patch


# --- updates ---------------------------------------------------------------------------------


def updated(pod: dict[str, Any], change: Any) -> dict[str, Any]:
    new = copy.deepcopy(pod)
    change(new)
    return new


def compute(pod: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in pod["spec"]["containers"] if c["name"] == "compute")
    return found


def set_compute_image(image: str) -> Any:
    return lambda pod: compute(pod).update(image=image)


def test_a_tenants_image_swap_on_compute_loses_the_launcher_exceptions() -> None:
    running = render("v0.20.0.yaml")
    swapped = updated(running, set_compute_image("evil/shell:latest"))
    answer = validate_review(request(swapped, TENANT, old=running), POLICY)
    assert denied_paths(answer) == [
        "spec.containers[1].securityContext.seLinuxOptions.type",  # the pod's spc_t
        "spec.containers[1].volumeMounts[1].name",  # container-disks
        "spec.containers[1].volumeMounts[2].name",  # virt-share-dir
        "spec.containers[1].securityContext.capabilities.add[0]",  # NET_ADMIN
        "spec.containers[1].securityContext.capabilities.add[1]",  # SYS_NICE
    ]
    assert f"changed by {TENANT}, not by KubeVirt's controller" in answer.message
    # KubeVirt's controller may (it never does, but the update is its to make).
    assert validate_review(request(swapped, CONTROLLER, old=running), POLICY).allowed


def test_a_tenant_may_still_edit_a_launchers_labels_and_annotations() -> None:
    running = render("v0.20.0.yaml")

    def relabel(pod: dict[str, Any]) -> None:
        pod["metadata"]["labels"]["team"] = "a"
        pod["metadata"]["annotations"]["note"] = "x"

    assert validate_review(request(updated(running, relabel), TENANT, old=running), POLICY).allowed


def debug(container: dict[str, Any]) -> Any:
    return lambda pod: pod["spec"].setdefault("ephemeralContainers", []).append(container)


def test_a_tenants_debug_container_may_not_mount_the_launchers_host_paths() -> None:
    running = render("v0.20.0.yaml")
    container = {
        "name": "debugger",
        "image": "busybox:1.36",
        "volumeMounts": [{"name": "virt-share-dir", "mountPath": "/host"}],
    }
    attached = updated(running, debug(container))
    answer = validate_review(
        request(attached, TENANT, old=running, sub_resource="ephemeralcontainers"), POLICY
    )
    assert denied_paths(answer) == [
        "spec.ephemeralContainers[0].securityContext.seLinuxOptions.type",  # the pod's spc_t
        "spec.ephemeralContainers[0].volumeMounts[0].name",
    ]
    assert "a hostPath volume (/var/run/kubevirt)" in answer.message


def test_a_tenants_baseline_debug_container_passes() -> None:
    running = render("v1.9.0-nonroot.yaml")
    attached = updated(
        running, debug({"name": "debugger", "image": "busybox:1.36", "stdin": True, "tty": True})
    )
    answer = validate_review(
        request(attached, TENANT, old=running, sub_resource="ephemeralcontainers"), POLICY
    )
    assert answer.allowed, answer.message


def test_a_debug_containers_image_tag_picks_no_release() -> None:
    """With compute pinned by digest, a debug container tagged v0.20 used to choose v0.20's
    profile; the release comes from compute's image alone."""
    running = render("v0.20.0.yaml")
    compute(running)["image"] = "quay.io/kubevirt/virt-launcher" + DIGEST
    attached = updated(
        running,
        debug({"name": "d", "image": "quay.io/kubevirt/virt-launcher:v0.20.0"}),
    )
    launcher = read_launcher(attached, POLICY)
    assert launcher.release.why == "the newest, image pinned by digest or untagged"


def test_a_container_disk_image_tag_picks_no_release() -> None:
    pod = render("v0.20.0.yaml")
    compute(pod)["image"] = "quay.io/kubevirt/virt-launcher" + DIGEST
    for container in pod["spec"]["containers"]:
        if container["name"] != "compute":
            container["image"] = "quay.io/kubevirt/virt-launcher:v0.20.0"
    assert read_launcher(pod, POLICY).release.profile.since == (1, 7)


# --- NET_ADMIN -----------------------------------------------------------------------------


@pytest.mark.parametrize("pinned", ["auto", "v1.9"])
def test_net_admin_on_compute_is_refused_where_no_release_renders_it(pinned: str) -> None:
    policy = LauncherPolicy.from_flags(kubevirt_version=pinned)
    pod = render("v1.9.0-nonroot.yaml")
    compute(pod)["securityContext"]["capabilities"]["add"].append("NET_ADMIN")
    answer = validate_review(request(pod, CONTROLLER), policy)
    assert any("NET_ADMIN" in violation for violation in answer.violations), answer.message


def test_a_busybox_with_the_launcher_label_may_not_add_net_admin() -> None:
    pod = {
        "metadata": {"name": "bb", "labels": {"kubevirt.io": "virt-launcher"}},
        "spec": {
            "containers": [
                {
                    "name": "compute",
                    "image": "busybox",
                    "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}},
                }
            ]
        },
    }
    policy = LauncherPolicy.from_flags(kubevirt_version="v1.9")
    assert not validate_review(request(pod, TENANT), policy).allowed
    assert not validate_review(request(pod, CONTROLLER), policy).allowed


# --- offline ---------------------------------------------------------------------------------


def run_cli(*argv: str, stdin: bytes) -> subprocess.CompletedProcess[str]:
    """The `virtdev` command as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "virtdev.cli", *argv],
        input=stdin.decode(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_virtdev_validate_speaks_for_kubevirts_controller_unless_told_otherwise() -> None:
    document = orjson.dumps(forged_launcher())
    kubevirts = run_cli("validate", "-", stdin=document)
    assert (kubevirts.returncode, kubevirts.stdout.strip()) == (0, "not-a-vm: allowed")
    tenants = run_cli("validate", "--as", TENANT, "-", stdin=document)
    assert tenants.returncode == 1, tenants.stderr
    assert tenants.stdout.startswith("not-a-vm: denied: spec.securityContext.seLinuxOptions.type")
    assert f"launcher label, but created by {TENANT}, not by KubeVirt's controller" in (
        tenants.stderr
    )
    mutated = run_cli("mutate", "--patch", "--as", TENANT, "-", stdin=document)
    assert (mutated.returncode, orjson.loads(mutated.stdout)) == (0, []), mutated.stderr
    assert f"created by {TENANT}, not by KubeVirt's controller: /mutate leaves" in mutated.stderr


# --- over real HTTPS -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    process = support.start_webhook(tmp_path_factory.mktemp("trust"))
    try:
        yield process
    finally:
        process.stop()


def post(server: Any, path: str, request_body: dict[str, Any]) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=str(server.ca_cert))
    with httpx.Client(verify=context, timeout=30) as client:
        reply = client.post(f"https://127.0.0.1:{server.port}{path}", json=request_body)
    assert reply.status_code == 200, reply.text
    response: dict[str, Any] = reply.json()["response"]
    return response


def wire(
    pod: dict[str, Any], username: str, *, old: dict[str, Any] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "uid": "0a0b0c0d-0000-4000-8000-00000000000e",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "operation": "CREATE" if old is None else "UPDATE",
        "userInfo": {"username": username},
        "namespace": "vms",
        "object": pod,
    }
    if old is not None:
        body["oldObject"] = old
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": body}


@pytest.mark.slow
def test_over_https_each_attack_is_refused_and_kubevirts_pods_pass(server: Any) -> None:
    running = render("v0.20.0.yaml")
    refused = {
        "forged launcher": ("/validate", wire(forged_launcher(), TENANT)),
        "forged launcher, guarded namespace": ("/guard", wire(forged_launcher(), TENANT)),
        "forged hotplug pod": ("/guard", wire(hotplug_pod(), TENANT)),
        "tenant's privileged launcher": (
            "/validate",
            wire(render("v0.6.0-privileged.yaml"), TENANT),
        ),
        "image swap": (
            "/validate",
            wire(updated(running, set_compute_image("evil/shell:1")), TENANT, old=running),
        ),
        "debug container on a hostPath": (
            "/validate",
            wire(
                updated(
                    running,
                    debug(
                        {
                            "name": "d",
                            "image": "busybox",
                            "volumeMounts": [{"name": "virt-share-dir", "mountPath": "/h"}],
                        }
                    ),
                ),
                TENANT,
                old=running,
            ),
        ),
    }
    for what, (path, body) in refused.items():
        response = post(server, path, body)
        assert response["allowed"] is False, what
        assert "not by KubeVirt's controller" in response["status"]["message"], what
    # /mutate leaves the tenant's privileged launcher as it is: nothing to make of it.
    mutated = post(server, "/mutate", wire(render("v0.6.0-privileged.yaml"), TENANT))
    assert mutated["allowed"] is True and "patch" not in mutated
    # KubeVirt's own, from its controller: allowed, and patched where it always was.
    assert post(server, "/validate", wire(running, CONTROLLER))["allowed"] is True
    assert post(server, "/guard", wire(hotplug_pod(), CONTROLLER))["allowed"] is True
    assert "patch" in post(server, "/mutate", wire(render("v0.6.0-privileged.yaml"), CONTROLLER))
    # The metric counts the tenants' labelled pods by endpoint.
    metrics = server.metrics()
    assert 'virtdev_webhook_untrusted_pods_total{endpoint="validate"} 4.0' in metrics
    assert 'virtdev_webhook_untrusted_pods_total{endpoint="guard"} 2.0' in metrics
    assert 'virtdev_webhook_untrusted_pods_total{endpoint="mutate"} 1.0' in metrics
    denials = (
        'virtdev_webhook_denials_total{control="seLinuxOptions",endpoint="validate",'
        'profile="baseline",verdict="denied"} 1.0'
    )
    assert denials in metrics


# --- what the pod's own exceptions would lend a tenant's container (review of issue 20) --------


def test_a_tenants_debug_container_in_a_hotplug_pod_may_not_join_the_hosts_network() -> None:
    """v0.36 - v0.46 put their hotplug pods on the host's network; a container a tenant adds
    would share it: refused, though the pod itself keeps its exception."""
    running = hotplug_pod()
    attached = updated(running, debug({"name": "debugger", "image": "busybox"}))
    answer = guard_review(
        request(attached, TENANT, old=running, sub_resource="ephemeralcontainers"), POLICY
    )
    assert denied_paths(answer) == ["spec.hostNetwork"]
    assert "debugger would share it" in answer.message
    relabelled = updated(running, lambda pod: pod["metadata"]["labels"].update(team="a"))
    assert guard_review(request(relabelled, TENANT, old=running), POLICY).allowed


def test_a_tenants_container_without_a_type_of_its_own_may_not_run_as_the_pods_spc_t() -> None:
    running = render("v0.20.0.yaml")
    plain = updated(running, debug({"name": "debugger", "image": "busybox"}))
    answer = validate_review(
        request(plain, TENANT, old=running, sub_resource="ephemeralcontainers"), POLICY
    )
    assert answer.violations == [
        "spec.ephemeralContainers[0].securityContext.seLinuxOptions.type: spc_t (the pod's) "
        "(Pod Security baseline allows container_engine_t, container_init_t, container_kvm_t, "
        "container_t: set one of them on the container (container added or changed by "
        f"{TENANT}, not by KubeVirt's controller))"
    ]
    typed = updated(
        running,
        debug(
            {
                "name": "debugger",
                "image": "busybox",
                "securityContext": {"seLinuxOptions": {"type": "container_t"}},
            }
        ),
    )
    assert validate_review(
        request(typed, TENANT, old=running, sub_resource="ephemeralcontainers"), POLICY
    ).allowed


def test_a_tenant_may_edit_the_created_by_label_of_a_running_launcher() -> None:
    """The per-VM container-disk path is judged by the VMI the pod was admitted for."""
    running = render("v0.20.0.yaml")
    for value in ("other-uid", "", "../x"):
        edited = updated(
            running,
            lambda pod, value=value: pod["metadata"]["labels"].update(
                {catalogue.CREATED_BY_LABEL: value}
            ),
        )
        assert validate_review(request(edited, TENANT, old=running), POLICY).allowed, value


def test_an_ephemeral_container_is_never_kubevirts_even_from_its_controller() -> None:
    """KubeVirt renders none; `virtdev audit` judges a running pod as its controller's CREATE,
    so a debug container there gets no exception either."""
    pod = render("v0.20.0.yaml")
    debug(
        {
            "name": "debugger",
            "image": "evil/shell",
            "volumeMounts": [{"name": "virt-share-dir", "mountPath": "/host"}],
        }
    )(pod)
    answer = validate_review(request(pod, CONTROLLER), POLICY)
    assert "spec.ephemeralContainers[0].volumeMounts[0].name" in denied_paths(answer)
    assert "an ephemeral container: KubeVirt renders none" in answer.message


@pytest.mark.parametrize("mounts", [["x"], [{"name": ["a"]}]])
def test_a_malformed_volume_mount_is_bad_input_not_a_crash(mounts: list[Any]) -> None:
    running = render("v0.20.0.yaml")
    attached = updated(running, debug({"name": "d", "image": "b", "volumeMounts": mounts}))
    with pytest.raises(BadInput, match=r"volumeMounts\[0\]"):
        validate_review(
            request(attached, TENANT, old=running, sub_resource="ephemeralcontainers"), POLICY
        )
