"""What the rules conclude about one admission request, before it is put on the wire.

`webhook.admission` and `enforcement` build `Answer`s; they, `mutation` and
`webhook.nodes.feasibility` fit their warnings to the API server's limit (`fit_warning`);
`webhook.serving.review` renders an `Answer` as an AdmissionReview reply. Kept apart from it so
the rules never import the wire format (the layers contract in pyproject.toml holds them to it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

#: What the rules made of a request: skipped (not ours), allowed, patched, warned, denied.
Verdict = Literal["skipped", "allowed", "patched", "warned", "denied"]
VERDICTS: tuple[Verdict, ...] = get_args(Verdict)

#: The API server's limit for one admission warning.
MAX_WARNING = 120


@dataclass(slots=True)
class Answer:
    allowed: bool
    #: For metrics and logs.
    verdict: Verdict
    patch: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    status_code: int | None = None
    message: str = ""
    audit_annotations: dict[str, str] = field(default_factory=dict)
    #: On a denial by the rules: each violation as `"<field path>: <message>"`, for the log line,
    #: `virtdev audit` and the warn enforcement (webhook.rules.enforcement).
    violations: list[str] = field(default_factory=list)
    #: The Pod Security checks a denial breaks (PSA's ids), and the profile that judged any pod
    #: /validate or /guard looked at (`v0.20`, `v1.7+`, or `baseline`), for metrics and reports.
    controls: tuple[str, ...] = ()
    profile: str = ""
    #: The requester, where the rules took the pod for another's than KubeVirt's controller
    #: (launcher- or hotplug-labelled, judged as any pod): for the metric and the offline notes.
    other_requester: str = ""
    #: Each violation named in `violations` with the check it breaks: (control, text).
    findings: list[tuple[str, str]] = field(default_factory=list)


def fit_warning(text: str) -> str:
    """A warning within the API server's limit: longer ones are cut, ending in `…`."""
    return text if len(text) <= MAX_WARNING else text[: MAX_WARNING - 1] + "…"


def verdict_line(name: str, answer: Answer) -> str:
    """What /validate decided, in one line: `NAME: allowed` or `NAME: denied: <violations>`."""
    if answer.verdict == "skipped":
        return f"{name}: allowed (not a launcher pod)"
    why = "; ".join(answer.violations) or answer.message
    if not answer.allowed:
        return f"{name}: denied: {why}"
    if answer.violations:  # admitted under --enforcement warn
        return f"{name}: warned: {why}"
    return f"{name}: allowed"
