"""The audit's PolicyReports, made from judged pods: results, summary and the size bound."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest
import yaml

from tests.webhook.conftest import RENDERS
from webhook.admission import validate_review
from webhook.rules.policy import LauncherPolicy
from webhook.rules.reports import (
    CUT,
    GUARD_POLICY,
    LAUNCHER_POLICY,
    MAX_REPORT_BYTES,
    MESSAGES_CUT,
    MIN_MESSAGE,
    OMITTED,
    Judged,
    pod_results,
    report,
    reports,
)
from webhook.serving.review import as_request

V0_20_FINDINGS = (
    ("seLinuxOptions", "spec.securityContext.seLinuxOptions.type: spc_t (not baseline's)"),
    ("hostPathVolumes", "spec.volumes[0].hostPath.path: /var/run/kubevirt (a host path)"),
    ("capabilities_baseline", "spec.containers[0]...capabilities.add[0]: NET_ADMIN (beyond)"),
    ("hostPathVolumes", "spec.volumes[1].hostPath.path: /dev (a host path)"),
)


def render(name: str) -> dict[str, Any]:
    pod: dict[str, Any] = yaml.safe_load((RENDERS / name).read_text(encoding="utf-8"))
    pod["metadata"].update(name="p", namespace="vms")
    return pod


def denied(name: str = "forged", namespace: str = "vms", **changes: Any) -> Judged:
    fields: dict[str, Any] = {
        "namespace": namespace,
        "name": name,
        "verdict": "denied",
        "violations": [text for _, text in V0_20_FINDINGS],
        "vouched": False,
        "vouching": "VMI vms/testvmi does not list it in status.activePods",
        "uid": f"uid-{name}",
        "findings": V0_20_FINDINGS,
        "controls": ("capabilities_baseline", "hostPathVolumes", "seLinuxOptions"),
        "profile": "baseline",
    }
    return Judged(**{**fields, **changes})


def allowed(name: str = "real", namespace: str = "vms", **changes: Any) -> Judged:
    fields: dict[str, Any] = {
        "namespace": namespace,
        "name": name,
        "verdict": "allowed",
        "vouched": True,
        "vouching": "VMI vms/testvmi lists it in status.activePods",
        "uid": f"uid-{name}",
        "profile": "v1.7+",
    }
    return Judged(**{**fields, **changes})


def size(value: Any) -> int:
    return len(orjson.dumps(value))


# --- one pod's results ----------------------------------------------------------------------------


def test_a_denied_pod_has_one_fail_per_check_it_breaks_with_each_violation_named() -> None:
    results = pod_results(denied())
    assert [(r["rule"], r["result"]) for r in results] == [
        ("capabilities_baseline", "fail"),
        ("hostPathVolumes", "fail"),
        ("seLinuxOptions", "fail"),
    ]
    assert results[1]["message"] == (
        "spec.volumes[0].hostPath.path: /var/run/kubevirt (a host path); "
        "spec.volumes[1].hostPath.path: /dev (a host path)"
    )
    first = results[0]
    assert first["policy"] == LAUNCHER_POLICY
    assert first["source"] == "virtdev"
    assert first["resources"] == [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "namespace": "vms",
            "name": "forged",
            "uid": "uid-forged",
        }
    ]
    assert first["properties"] == {
        "profile": "baseline",
        "vouched": "false",
        "vouching": "VMI vms/testvmi does not list it in status.activePods",
    }
    assert "timestamp" not in first, "a rerun over the same pods makes the same report"


def test_under_warn_enforcement_the_failures_are_warnings() -> None:
    results = pod_results(denied(), enforcement="warn")
    assert {r["result"] for r in results} == {"warn"}


def test_an_allowed_pod_is_one_pass_and_a_pod_not_judged_an_error() -> None:
    (passed,) = pod_results(allowed())
    assert (passed["rule"], passed["result"]) == ("baseline", "pass")
    assert passed["message"] == "meets Pod Security baseline with KubeVirt v1.7+'s exceptions"
    assert passed["properties"]["vouched"] == "true"
    (error,) = pod_results(Judged("vms", "x", "error", message="$.spec: not an object"))
    assert (error["result"], error["message"]) == ("error", "not judged: $.spec: not an object")
    (skipped,) = pod_results(Judged("vms", "x", "skipped"))
    assert skipped["result"] == "skip"


def test_other_pods_are_the_guards_and_say_nothing_of_vouching() -> None:
    (passed,) = pod_results(
        Judged("vms", "tool", "allowed", policy=GUARD_POLICY, profile="baseline")
    )
    assert passed["policy"] == GUARD_POLICY
    assert passed["properties"] == {"profile": "baseline"}


def test_checks_beyond_the_named_violations_still_have_their_result() -> None:
    judged = denied(
        findings=V0_20_FINDINGS[:1],
        violations=[V0_20_FINDINGS[0][1], "and 3 more"],
    )
    results = {r["rule"]: r["message"] for r in pod_results(judged)}
    assert results["seLinuxOptions"] == V0_20_FINDINGS[0][1]
    assert results["hostPathVolumes"] == "not named: the denial names the first 1 (and 3 more)"


def test_the_profile_is_the_denials_or_the_one_an_allowed_answer_describes() -> None:
    policy = LauncherPolicy()
    refused = validate_review(as_request(render("v0.20.0.yaml")), policy, trusted=False)
    assert not refused.allowed and refused.profile == "baseline"
    kubevirts = validate_review(as_request(render("v1.9.0-nonroot.yaml")), policy, trusted=True)
    assert kubevirts.allowed and kubevirts.profile == "v1.7+"
    old = validate_review(as_request(render("v0.20.0.yaml")), policy, trusted=True)
    assert old.allowed and old.profile == "v0.20"
    anyones = validate_review(as_request(render("v1.9.0-nonroot.yaml")), policy, trusted=False)
    assert anyones.allowed and anyones.profile == "baseline"


# --- the report -----------------------------------------------------------------------------------


def test_a_report_per_namespace_with_its_summary_labels_and_scope() -> None:
    made = reports([allowed("b", "vms"), denied("a", "vms"), allowed("x", "prod")])
    assert [r["metadata"]["namespace"] for r in made] == ["prod", "vms"]
    vms = made[1]
    assert vms["apiVersion"] == "wgpolicyk8s.io/v1alpha2" and vms["kind"] == "PolicyReport"
    assert vms["metadata"] == {
        "name": "virtdev-audit",
        "namespace": "vms",
        "labels": {"app.kubernetes.io/managed-by": "virtdev"},
    }
    assert vms["scope"] == {"apiVersion": "v1", "kind": "Namespace", "name": "vms"}
    assert vms["summary"] == {"pass": 1, "fail": 3, "warn": 0, "error": 0, "skip": 0}
    names = [(r["resources"][0]["name"], r["rule"]) for r in vms["results"]]
    assert names == [
        ("a", "capabilities_baseline"),
        ("a", "hostPathVolumes"),
        ("a", "seLinuxOptions"),
        ("b", "baseline"),
    ]


def test_the_same_pods_in_any_order_make_the_same_report() -> None:
    pods = [denied(f"f{i}") for i in range(20)] + [allowed(f"a{i}") for i in range(50)]
    first = reports(pods, max_bytes=8 * 1024)
    random.Random(7).shuffle(pods)
    assert orjson.dumps(reports(pods, max_bytes=8 * 1024)) == orjson.dumps(first)


def test_past_the_bound_passes_are_left_out_and_counted_every_fail_kept() -> None:
    pods = [denied(f"f{i:03}") for i in range(30)] + [allowed(f"p{i:04}") for i in range(2000)]
    full = report("vms", [r for pod in pods for r in pod_results(pod)])
    made = report("vms", [r for pod in pods for r in pod_results(pod)], max_bytes=64 * 1024)
    assert size(full) > 64 * 1024 >= size(made)
    assert made["summary"] == full["summary"]
    assert made["summary"] == {"pass": 2000, "fail": 90, "warn": 0, "error": 0, "skip": 0}
    fails = [r for r in made["results"] if r["result"] == "fail"]
    assert fails == [r for r in full["results"] if r["result"] == "fail"], "whole, uncut"
    passes = sum(r["result"] == "pass" for r in made["results"])
    assert 0 < passes < 2000, "as many passes as fit"
    assert made["metadata"]["annotations"] == {OMITTED["pass"]: str(2000 - passes)}


def test_fails_that_alone_exceed_the_bound_have_their_messages_cut_evenly() -> None:
    long = tuple((control, text + " " + "x" * 900) for control, text in V0_20_FINDINGS)
    pods = [denied(f"f{i:03}", findings=long) for i in range(40)] + [allowed("p")]
    made = report("vms", [r for pod in pods for r in pod_results(pod)], max_bytes=64 * 1024)
    assert size(made) <= 64 * 1024
    fails = [r for r in made["results"] if r["result"] == "fail"]
    assert len(fails) == 120, "every fail"
    assert all(r["message"].endswith(CUT) for r in fails)
    assert all(MIN_MESSAGE <= len(r["message"]) < 1000 for r in fails)
    assert fails[0]["message"].startswith("spec.containers[0]...capabilities.add[0]: NET_ADMIN")
    annotations = made["metadata"]["annotations"]
    assert annotations == {MESSAGES_CUT: "120", OMITTED["pass"]: "1"}


def test_as_a_last_resort_fails_are_left_out_last_and_counted() -> None:
    pods = [denied(f"f{i:04}") for i in range(400)] + [
        Judged("vms", f"e{i}", "error", message="bad") for i in range(5)
    ]
    made = report("vms", [r for pod in pods for r in pod_results(pod)], max_bytes=64 * 1024)
    assert size(made) <= 64 * 1024
    assert made["summary"]["fail"] == 1200 and made["summary"]["error"] == 5
    kept = sum(r["result"] == "fail" for r in made["results"])
    annotations = made["metadata"]["annotations"]
    assert annotations[OMITTED["error"]] == "5", "errors go before fails"
    assert int(annotations[OMITTED["fail"]]) == 1200 - kept > 0
    assert not any(r["result"] == "error" for r in made["results"])
    # The first pods' fails are the ones kept: the report's order, cut at the end.
    assert made["results"][0]["resources"][0]["name"] == "f0000"


@pytest.mark.parametrize("pods", [1, 10, 3000])
def test_every_report_is_within_the_bound(pods: int) -> None:
    judged = [denied(f"f{i}") if i % 7 == 0 else allowed(f"p{i}") for i in range(pods)]
    for made in reports(judged):
        assert size(made) <= MAX_REPORT_BYTES
