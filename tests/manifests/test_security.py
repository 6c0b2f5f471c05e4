"""Least privilege in every rendered object: no privileged container anywhere, ever.

These hold for the base and every overlay, so an overlay cannot quietly loosen them. The agent's
two documented exceptions (uid 0, hostPath volumes) are checked to be exactly those.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.manifests.k8s import containers, find, find_all, ref, workloads
from tests.manifests.test_policy_reports import AUDIT_RULES
from tests.manifests.tools import kustomizations

Objects = list[dict[str, Any]]
APPLIED = [name for name in kustomizations() if name != "create-once"]
#: The only pods that hold a Kubernetes API token, and why: the webhook watches nodes, the
#: certificate job writes its Secret and caBundle, the scheduled audit (components/policy-reports)
#: lists pods and writes PolicyReports.
TOKEN_HOLDERS = {"virtdev-webhook", "virtdev-certs-ensure", "virtdev-certs-renew", "virtdev-audit"}


@pytest.mark.parametrize("kustomization", kustomizations())
def test_no_container_anywhere_is_privileged(
    kustomization: str, rendered: dict[str, Objects]
) -> None:
    offenders = [
        f"{ref(obj)} container {container['name']}"
        for obj, spec in workloads(rendered[kustomization])
        for container in containers(spec)
        if (container.get("securityContext") or {}).get("privileged") is not False
    ]
    assert not offenders, f"privileged, or not explicitly unprivileged: {offenders}"


@pytest.mark.parametrize("kustomization", APPLIED)
def test_every_container_is_locked_down(kustomization: str, rendered: dict[str, Objects]) -> None:
    problems = []
    for obj, spec in workloads(rendered[kustomization]):
        pod_context = spec.get("securityContext") or {}
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(flag):
                problems.append(f"{ref(obj)}: {flag}")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{ref(obj)}: automountServiceAccountToken is not false")
        for container in containers(spec):
            where = f"{ref(obj)} container {container['name']}"
            context = container.get("securityContext") or {}
            seccomp = context.get("seccompProfile") or pod_context.get("seccompProfile") or {}
            expectations = {
                "allowPrivilegeEscalation is false": context.get("allowPrivilegeEscalation")
                is False,
                "readOnlyRootFilesystem is true": context.get("readOnlyRootFilesystem") is True,
                "capabilities drop [ALL], add none": context.get("capabilities")
                == {"drop": ["ALL"]},
                "seccomp RuntimeDefault": seccomp.get("type") == "RuntimeDefault",
                "no hostPort": not any(p.get("hostPort") for p in container.get("ports") or []),
            }
            problems += [f"{where}: {want}" for want, ok in expectations.items() if not ok]
            resources = container.get("resources") or {}
            for section in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in (resources.get(section) or {}):
                        problems.append(f"{where}: no {resource} {section}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("kustomization", APPLIED)
def test_only_the_agent_runs_as_root_and_only_the_agent_mounts_host_paths(
    kustomization: str, rendered: dict[str, Objects]
) -> None:
    problems = []
    for obj, spec in workloads(rendered[kustomization]):
        name = obj["metadata"]["name"]
        host_paths = sorted(v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v)
        run_as_non_root = (spec.get("securityContext") or {}).get("runAsNonRoot")
        if name == "virtdev-agent":
            assert spec["securityContext"]["runAsUser"] == 0
            assert len(host_paths) == 2 and "/dev" in host_paths, host_paths
            assert spec.get("priorityClassName") == "system-node-critical"
            assert {"operator": "Exists"} in spec.get("tolerations", []), "not on tainted nodes"
        else:
            if host_paths:
                problems.append(f"{ref(obj)}: hostPath volumes {host_paths}")
            if run_as_non_root is not True:
                problems.append(f"{ref(obj)}: runAsNonRoot is not true")
            for container in containers(spec):
                if (container.get("securityContext") or {}).get("runAsUser") == 0:
                    problems.append(f"{ref(obj)}: container {container['name']} runs as uid 0")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("kustomization", APPLIED)
def test_api_tokens_only_where_needed(kustomization: str, rendered: dict[str, Objects]) -> None:
    objects = rendered[kustomization]
    for account in find_all(objects, "ServiceAccount"):
        assert account.get("automountServiceAccountToken") is False, ref(account)
    holders = {
        obj["metadata"]["name"]
        for obj, spec in workloads(objects)
        if any(
            "serviceAccountToken" in source
            for volume in spec["volumes"]
            for source in (volume.get("projected") or {}).get("sources", [])
        )
    }
    assert holders <= TOKEN_HOLDERS, f"unexpected token holders: {holders - TOKEN_HOLDERS}"
    bound = {
        subject["name"]
        for binding in find_all(objects, "RoleBinding") + find_all(objects, "ClusterRoleBinding")
        for subject in binding["subjects"]
        if binding["roleRef"]["name"] != "virtdev-agent-scc"  # OpenShift: `use` of its SCC only
    }
    assert "virtdev-agent" not in bound, "the agent needs no Kubernetes API access"


@pytest.mark.parametrize("kustomization", APPLIED)
def test_rbac_names_no_wildcards_and_no_escalation_verbs(
    kustomization: str, rendered: dict[str, Objects]
) -> None:
    problems = []
    for role in find_all(rendered[kustomization], "Role") + find_all(
        rendered[kustomization], "ClusterRole"
    ):
        for rule in role["rules"]:
            if role["metadata"]["name"] == "virtdev-audit" and rule in AUDIT_RULES:
                # Lists across namespaces and writes PolicyReports in any of them, which no
                # resourceName can narrow: exactly these rules (test_policy_reports.py).
                continue
            for field in ("apiGroups", "resources", "verbs"):
                if "*" in rule.get(field, []):
                    problems.append(f"{ref(role)}: wildcard in {field}")
            risky = {"escalate", "bind", "impersonate", "create", "delete", "deletecollection"}
            problems += [f"{ref(role)}: verb {verb}" for verb in set(rule["verbs"]) & risky]
            if rule.get("resources") != ["nodes"] and not rule.get("resourceNames"):
                problems.append(f"{ref(role)}: {rule['resources']} not limited by resourceNames")
    assert not problems, "\n".join(problems)


def test_namespace_pod_security_levels(rendered: dict[str, Objects]) -> None:
    labels = find(rendered["base"], "Namespace", "virtdev")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"  # hostPath: see the file
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"
    assert labels["pod-security.kubernetes.io/audit"] == "restricted"


@pytest.mark.parametrize("kustomization", APPLIED)
def test_every_pod_is_selected_by_a_network_policy(
    kustomization: str, rendered: dict[str, Objects]
) -> None:
    policies = find_all(rendered[kustomization], "NetworkPolicy")
    for obj, _ in workloads(rendered[kustomization]):
        template = (
            obj["spec"]["jobTemplate"]["spec"]["template"]
            if obj["kind"] == "CronJob"
            else obj["spec"]["template"]
        )
        labels = template["metadata"]["labels"]
        assert any(
            p["spec"]["podSelector"]["matchLabels"].items() <= labels.items() for p in policies
        ), f"{ref(obj)}: no NetworkPolicy selects its pods"
