"""`webhook.rules.enforcement.enforce`: what a denial by the rules becomes under deny and warn."""

from __future__ import annotations

import pytest

from webhook.rules.answer import MAX_WARNING, Answer
from webhook.rules.enforcement import enforce


def denial(*violations: str) -> Answer:
    return Answer(
        allowed=False,
        verdict="denied",
        status_code=403,
        message="launcher pod vms/x refused by virtdev: " + "; ".join(violations),
        audit_annotations={"violations": "spec.hostPID"},
        violations=list(violations),
    )


def test_deny_sends_the_denial_as_it_is() -> None:
    answer = denial("spec.hostPID: not allowed")
    assert enforce(answer, "deny") is answer


def test_warn_admits_with_a_warning_per_violation_and_an_annotation() -> None:
    answer = enforce(denial("spec.hostPID: not allowed", "spec.hostIPC: not allowed"), "warn")
    assert (answer.allowed, answer.verdict, answer.status_code) == (True, "warned", None)
    assert answer.warnings == [
        "virtdev would deny: spec.hostPID: not allowed",
        "virtdev would deny: spec.hostIPC: not allowed",
    ]
    assert answer.audit_annotations == {
        "violations": "spec.hostPID",
        "enforcement": "warn",
        "would-deny": "spec.hostPID: not allowed; spec.hostIPC: not allowed",
    }
    assert answer.violations == ["spec.hostPID: not allowed", "spec.hostIPC: not allowed"]
    assert not answer.patch


def test_warnings_and_the_annotation_are_bounded() -> None:
    many = [f"spec.containers[{i}].securityContext.privileged: {'x' * 200}" for i in range(50)]
    answer = enforce(denial(*many), "warn")
    assert len(answer.warnings) == 11
    assert answer.warnings[-1] == "virtdev would deny: and 40 more"
    assert all(len(w) <= MAX_WARNING for w in answer.warnings)
    assert len(answer.audit_annotations["would-deny"]) == 1024


@pytest.mark.parametrize(
    "answer",
    [
        Answer(allowed=True, verdict="skipped"),
        Answer(allowed=True, verdict="warned", warnings=["compute requests kvm: 2"]),
        # A denial that is not the rules' (no violations): not softened.
        Answer(allowed=False, verdict="denied", status_code=403, message="no node has kvm"),
    ],
    ids=["skipped", "allowed-with-warnings", "denied-without-violations"],
)
def test_warn_leaves_every_other_answer_alone(answer: Answer) -> None:
    assert enforce(answer, "warn") is answer
