"""`virtdev audit --report`: the audit's judgements as PolicyReports, the Kubernetes Policy WG's
CRD (`wgpolicyk8s.io/v1alpha2`, kubernetes-sigs/wg-policy-prototypes
policy-report/apis/wgpolicyk8s.io/v1alpha2/policyreport_types.go) that Kyverno and Kubewarden
write and Policy Reporter shows. Pure: judged pods in, report objects out; `webhook.audit` lists,
applies and deletes them.

One report per namespace judged, named `virtdev-audit`, labelled
`app.kubernetes.io/managed-by: virtdev` (how the audit finds its own reports again), scoped to
the Namespace. Its results, per pod:

- a pod the rules refuse: one result per Pod Security check it breaks (PSA's id as the `rule`:
  `capabilities_baseline`, `hostPathVolumes`, `seLinuxOptions`…), `fail`, or `warn` under
  `--enforcement warn` (the webhook admits it with a warning); the message lists each violation
  of that check as `virtdev validate` prints it (`<field path>: <value> (<why>)`);
- a pod allowed: one `pass` result, rule `baseline`;
- a pod that could not be judged: `error`; one the rules would not look at: `skip`;

each with the pod as its resource (with its uid), policy `virtdev-launcher` (launchers, as
/validate judges them) or `virtdev-guard` (every other pod, as /guard judges it), and as
properties the profile that decided (`v0.20`, `v1.7+`, `baseline`) and, for launcher- and
hotplug-labelled pods, whether KubeVirt's own state vouched for the pod (`webhook.rules.vouching`).

No timestamps. The CRD makes a result's `timestamp` optional, and the audit is rerun on a
schedule: a time that changed every run would rewrite every report every run (a new
resourceVersion, an event to every watcher, a revision in etcd's history) although nothing
changed. Without one, a rerun over the same pods applies the same object and the API server
keeps it as it is; the report's `metadata.managedFields[].time` says when it last changed.

Size: etcd refuses a request over 1.5 MiB (`--max-request-bytes`), and the reports that outgrew
it are Kyverno's best-known pain (kyverno#2674, #6462). A report here stays within
`MAX_REPORT_BYTES` (512 KiB of JSON): a third of etcd's limit, so that the object, its
managedFields and the apply request around it fit with room to spare, and so that every watcher
of PolicyReports (Policy Reporter) receives at most that per change. Past the bound, in order:

1. passes are left out (those that fit are kept, in the report's order), and the annotation
   `virtdev.io/passes-omitted` says how many;
2. the messages of the remaining results are cut, all to one length, ending in `…`, no shorter
   than `MIN_MESSAGE` characters (the field path and value come first), and
   `virtdev.io/messages-cut` says how many were;
3. should they still not fit (some thousand failing checks in one namespace), results are left
   out from the end, skips first, then errors, warnings and fails last, each counted in an
   annotation (`virtdev.io/fails-omitted`…): never silently. The summary always counts every
   result, and the audit's lines on stdout name every pod.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

import orjson

from webhook.options import Enforcement

GROUP, VERSION, PLURAL = "wgpolicyk8s.io", "v1alpha2", "policyreports"
API_VERSION, KIND = f"{GROUP}/{VERSION}", "PolicyReport"
#: The one report per namespace, and the field manager that applies it.
NAME = FIELD_MANAGER = "virtdev-audit"
MANAGED_BY = {"app.kubernetes.io/managed-by": "virtdev"}
#: How the audit lists its own reports (to delete those of namespaces with nothing left).
SELECTOR = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())
SOURCE = "virtdev"
LAUNCHER_POLICY, GUARD_POLICY = "virtdev-launcher", "virtdev-guard"
#: As Kyverno's Pod Security Standards policies categorise and rate themselves.
CATEGORY, SEVERITY = "Pod Security Standards (Baseline)", "medium"
#: The rule of a pass: the pod meets Pod Security baseline (with its release's exceptions).
PASS_RULE = "baseline"

MAX_REPORT_BYTES = 512 * 1024
#: Every message is cut to this many characters first (a denial names at most 16 violations).
MAX_MESSAGE = 1024
#: Messages are never cut shorter than this to make room (a field path and its value).
MIN_MESSAGE = 120
CUT = "…"

Outcome = Literal["pass", "fail", "warn", "error", "skip"]
OUTCOMES: tuple[Outcome, ...] = ("pass", "fail", "warn", "error", "skip")
#: The annotation that counts the results of each kind left out, and the one for cut messages.
OMITTED = {
    "pass": "virtdev.io/passes-omitted",
    "fail": "virtdev.io/fails-omitted",
    "warn": "virtdev.io/warnings-omitted",
    "error": "virtdev.io/errors-omitted",
    "skip": "virtdev.io/skips-omitted",
}
MESSAGES_CUT = "virtdev.io/messages-cut"
#: Left out last to first when even the cut messages do not fit.
_DROP_ORDER: tuple[Outcome, ...] = ("skip", "error", "warn", "fail")

#: A verdict of the rules, or error: the pod could not be judged. skipped: the label matched but
#: /validate would not look.
Judgement = Literal["allowed", "denied", "skipped", "error"]


@dataclass(frozen=True)
class Judged:
    """The audit's judgement of one pod: a line on stdout, an entry of `-o json`, results in its
    namespace's report."""

    namespace: str
    name: str
    verdict: Judgement
    violations: list[str] = field(default_factory=list)
    message: str = ""
    #: For launcher- and hotplug-labelled pods: whether KubeVirt's state vouches for the pod
    #: (judged with its release's exceptions) or not (judged as any pod); None for other pods.
    vouched: bool | None = None
    #: What vouches for it, or what is missing.
    vouching: str = ""
    uid: str = ""
    #: `virtdev-launcher` or `virtdev-guard`: which webhook's judgement this is.
    policy: str = LAUNCHER_POLICY
    #: On a denial: each named violation with the Pod Security check it breaks, and every check
    #: broken (`Answer.findings`, `Answer.controls`).
    findings: tuple[tuple[str, str], ...] = ()
    controls: tuple[str, ...] = ()
    #: The profile that decided: `v0.20`, `v1.7+`, `baseline` ("" when not judged).
    profile: str = ""


class ObjectReference(TypedDict):
    apiVersion: str
    kind: str
    namespace: str
    name: str
    uid: str


class Result(TypedDict, total=False):
    source: str
    policy: str
    rule: str
    category: str
    severity: str
    result: Outcome
    message: str
    resources: list[ObjectReference]
    properties: dict[str, str]


Summary = TypedDict("Summary", {"pass": int, "fail": int, "warn": int, "error": int, "skip": int})


def _fit(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + CUT


def pod_results(judged: Judged, *, enforcement: Enforcement = "deny") -> list[Result]:
    """What the report says of one pod: a result per broken check, or one pass, error or skip."""
    resource: ObjectReference = {
        "apiVersion": "v1",
        "kind": "Pod",
        "namespace": judged.namespace,
        "name": judged.name,
        "uid": judged.uid,
    }
    properties: dict[str, str] = {}
    if judged.profile:
        properties["profile"] = judged.profile
    if judged.vouched is not None:
        properties["vouched"] = "true" if judged.vouched else "false"
        properties["vouching"] = judged.vouching

    def result(outcome: Outcome, rule: str, message: str) -> Result:
        made: Result = {
            "source": SOURCE,
            "policy": judged.policy,
            "rule": rule,
            "category": CATEGORY,
            "severity": SEVERITY,
            "result": outcome,
            "message": _fit(message, MAX_MESSAGE),
            "resources": [resource.copy()],  # not shared: YAML would print an anchor
        }
        if properties:
            made["properties"] = dict(properties)
        return made

    if judged.verdict == "error":
        return [result("error", "judgement", f"not judged: {judged.message}")]
    if judged.verdict == "skipped":
        return [result("skip", PASS_RULE, "not a pod the webhook judges")]
    if judged.verdict == "allowed":
        return [result("pass", PASS_RULE, "meets Pod Security baseline" + _beyond(judged))]
    failed: Outcome = "warn" if enforcement == "warn" else "fail"
    named: dict[str, list[str]] = {}
    for control, text in judged.findings:
        named.setdefault(control or "unclassified", []).append(text)
    controls = sorted(set(judged.controls) | set(named))
    if not controls:  # a denial that names no check: its message says why
        return [result(failed, "unclassified", "; ".join(judged.violations) or judged.message)]
    unnamed = [v for v in judged.violations if v not in {t for _, t in judged.findings}]
    results = []
    for control in controls:
        texts = named.get(control)
        if texts:
            message = "; ".join(texts)
        else:  # beyond the violations a denial names: counted there, not named
            rest = f" ({'; '.join(unnamed)})" if unnamed else ""
            message = f"not named: the denial names the first {len(judged.findings)}{rest}"
        results.append(result(failed, control, message))
    return results


def _beyond(judged: Judged) -> str:
    if judged.profile and judged.profile != "baseline":
        return f" with KubeVirt {judged.profile}'s exceptions"
    return ""


def summary_of(results: Iterable[Result]) -> Summary:
    counts = Counter(r.get("result") for r in results)
    return {
        "pass": counts["pass"],
        "fail": counts["fail"],
        "warn": counts["warn"],
        "error": counts["error"],
        "skip": counts["skip"],
    }


def _order(result: Result) -> tuple[str, str, str]:
    """Pod by pod, then policy and rule: the same pods give the same report, run after run."""
    resources = result.get("resources") or []
    name = resources[0]["name"] if resources else ""
    return (name, result.get("policy", ""), result.get("rule", ""))


def _size(value: Any) -> int:
    return len(orjson.dumps(value))


def report(
    namespace: str, results: Iterable[Result], *, max_bytes: int = MAX_REPORT_BYTES
) -> dict[str, Any]:
    """The namespace's PolicyReport: every result when it fits `max_bytes` of JSON, else as the
    module says (passes left out, then messages cut, then results left out, each counted)."""
    ordered = sorted(results, key=_order)
    summary = summary_of(ordered)
    annotations: dict[str, str] = {}
    body: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": NAME, "namespace": namespace, "labels": dict(MANAGED_BY)},
        "scope": {"apiVersion": "v1", "kind": "Namespace", "name": namespace},
        "summary": summary,
        "results": [],
    }
    # Room for the annotations that may be added, each a short key and a count.
    overhead = _size(body) + sum(len(key) + 16 for key in (*OMITTED.values(), MESSAGES_CUT))
    budget = max_bytes - overhead
    sizes = [_size(r) + 1 for r in ordered]  # + the comma between items
    if sum(sizes) <= max_bytes - _size(body):
        body["results"] = ordered
        return body
    kept = [r for r in ordered if r.get("result") != "pass"]
    kept_size = sum(s for r, s in zip(ordered, sizes, strict=True) if r.get("result") != "pass")
    if kept_size > budget:
        kept, cut = _cut_messages(kept, budget)
        if cut:
            annotations[MESSAGES_CUT] = str(cut)
        kept_size = sum(_size(r) + 1 for r in kept)
    dropped: Counter[str] = Counter()
    for outcome in _DROP_ORDER:  # the last resort: fails go last, each one counted
        while kept_size > budget:
            index = next(
                (i for i in reversed(range(len(kept))) if kept[i]["result"] == outcome), -1
            )
            if index < 0:
                break
            kept_size -= _size(kept.pop(index)) + 1
            dropped[outcome] += 1
    passes = 0
    room = budget - kept_size
    chosen = []
    for item, size in zip(ordered, sizes, strict=True):
        if item.get("result") == "pass":
            if size <= room:
                chosen.append(item)
                room -= size
            else:
                passes += 1
    dropped["pass"] = passes
    for kind, count in dropped.items():
        if count:
            annotations[OMITTED[kind]] = str(count)
    if annotations:
        body["metadata"]["annotations"] = dict(sorted(annotations.items()))
    body["results"] = sorted([*kept, *chosen], key=_order)
    return body


def _cut_messages(results: list[Result], budget: int) -> tuple[list[Result], int]:
    """The results with every message cut to one length, the longest that fits `budget` (not
    under MIN_MESSAGE), and how many messages were cut."""
    lengths = [len(r.get("message", "")) for r in results]

    def cut_to(limit: int) -> list[Result]:
        return [
            {**r, "message": _fit(r.get("message", ""), limit)} if n > limit else r
            for r, n in zip(results, lengths, strict=True)
        ]

    def total(limit: int) -> int:
        return sum(_size(r) + 1 for r in cut_to(limit))

    low, high = MIN_MESSAGE, max(lengths, default=MIN_MESSAGE)
    if total(low) > budget:
        best = low
    else:  # the longest limit that fits: total() grows with the limit
        while low < high:
            middle = (low + high + 1) // 2
            if total(middle) <= budget:
                low = middle
            else:
                high = middle - 1
        best = low
    return cut_to(best), sum(n > best for n in lengths)


def reports(
    judged: Iterable[Judged],
    *,
    enforcement: Enforcement = "deny",
    max_bytes: int = MAX_REPORT_BYTES,
) -> list[dict[str, Any]]:
    """One report per namespace with a pod judged, in the namespaces' order."""
    by_namespace: dict[str, list[Result]] = {}
    for pod in judged:
        results = pod_results(pod, enforcement=enforcement)
        by_namespace.setdefault(pod.namespace, []).extend(results)
    return [
        report(namespace, results, max_bytes=max_bytes)
        for namespace, results in sorted(by_namespace.items())
    ]
