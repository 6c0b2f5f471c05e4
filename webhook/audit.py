"""`virtdev audit`: /validate's judgement of the launcher pods already running, and /guard's of
the other pods of guarded namespaces.

Each pod is judged by `validate_review` (launchers) or `guard_review` (every other pod of a
namespace labelled `virtdev.io/guard=baseline`, or of the namespaces named with `--guard`) on
the CREATE review the API server would send for it (`webhook.serving.review.as_request`): when
virt-controller next creates a launcher like it — a VM restart, a migration — or a controller
re-creates the pod, this is what the webhook will answer. The lines and the exit status say what
`deny` would do, whatever the webhook runs with now; `--enforcement warn` makes only the
reports' results `warn` instead of `fail`.

With `--report`, the judgements are also written as PolicyReports, one per namespace judged
(`webhook.rules.reports` makes them, sizes them and says why there are no timestamps): each
applied server-side under the field manager `virtdev-audit` with force (the fields are the
audit's alone), so a rerun updates the report in place and one over unchanged pods changes
nothing (same resourceVersion); then the audit's reports (by label and name) of the namespaces
in scope that had nothing to judge this time are deleted. The reports are applied after every
pod is judged: a run that cannot list the pods writes and deletes nothing. `-o yaml` prints them
instead, reading and writing no PolicyReport.

The webhook grants a release's exceptions only to pods KubeVirt's controller asks for; a running
pod does not say who created it. The audit counts a launcher (or hotplug pod) as KubeVirt's only
where KubeVirt's own state vouches for it: the VirtualMachineInstance that controls it lists it
in `status.activePods`, which only KubeVirt may write (`webhook.rules.vouching`, with the sources).
The VMIs of the namespaces audited are listed first, page by page, and kept as a small index;
every other launcher is judged as any pod, by Pod Security baseline, and each line says which.
When the VMIs cannot be listed (KubeVirt not installed, or no permission), the audit says so on
stderr and vouches for none.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, Protocol, TextIO

import orjson
import yaml

from virtdev import catalogue
from webhook.admission import Request, guard_review, validate_review
from webhook.options import ALLOWED, BAD_INPUT, DENIED
from webhook.rules import reports
from webhook.rules.answer import Answer, verdict_line
from webhook.rules.policy import LauncherPolicy
from webhook.rules.reports import GUARD_POLICY, LAUNCHER_POLICY, Judged, Judgement
from webhook.rules.shapes import BadInput
from webhook.rules.vouching import KUBEVIRT_GROUP, Index, Vouching, read_instance, vouch
from webhook.serving.review import as_request

CONNECT_TIMEOUT_SECONDS = 5
LIST_TIMEOUT_SECONDS = 60
#: The requester of the reviews of pods KubeVirt's state does not vouch for (messages name it).
UNVOUCHED = "a requester KubeVirt's state does not vouch for"
VMI_VERSION, VMI_PLURAL = "v1", "virtualmachineinstances"
_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def line(judged: Judged) -> str:
    """The pod's line on stdout: `NAMESPACE/NAME: allowed` or `...: denied: <violations>`, as
    `virtdev validate` prints it, and for launcher- and hotplug-labelled pods who vouched."""
    name = f"{judged.namespace}/{judged.name}"
    if judged.verdict == "error":
        return f"{name}: not judged: {judged.message}"
    answer = Answer(
        allowed=judged.verdict != "denied",
        verdict=judged.verdict,
        message=judged.message,
        violations=judged.violations,
    )
    if judged.vouched is None:
        return verdict_line(name, answer)
    if judged.vouched:
        return f"{verdict_line(name, answer)} [KubeVirt's: {judged.vouching}]"
    basis = "judged as any pod, not vouched for by KubeVirt"
    return f"{verdict_line(name, answer)} [{basis}: {judged.vouching}]"


class Decide(Protocol):
    """`validate_review` or `guard_review`: `trusted` stands for the requester the audit cannot
    see."""

    def __call__(
        self, request: Request, policy: LauncherPolicy, *, trusted: bool | None = None
    ) -> Answer: ...


#: The namespaces /guard judges: the label the second validating webhook selects.
GUARDED = f"{catalogue.GUARD_LABEL_KEY}={catalogue.GUARD_LABEL_VALUE}"


def judge(
    pod: dict[str, Any],
    policy: LauncherPolicy,
    decide: Decide = validate_review,
    *,
    vouching: Vouching | None = None,
) -> Judged:
    """What /validate (or /guard) would answer if `pod` were created now: by KubeVirt's
    controller when `vouching` says KubeVirt's state vouches for it, else by someone else."""
    metadata = pod.get("metadata") if isinstance(pod.get("metadata"), dict) else {}
    namespace = str((metadata or {}).get("namespace") or "")
    name = str((metadata or {}).get("name") or "")
    trusted = vouching is not None and vouching.vouched
    basis: dict[str, Any] = {
        "uid": str((metadata or {}).get("uid") or ""),
        "policy": LAUNCHER_POLICY if policy.is_launcher(pod) else GUARD_POLICY,
    }
    if vouching is not None:
        basis.update(vouched=vouching.vouched, vouching=vouching.why)
    try:
        request = as_request(pod, policy.controller if trusted else UNVOUCHED)
        answer = decide(request, policy, trusted=trusted)
    except BadInput as error:
        return Judged(namespace, name, "error", message=str(error), **basis)
    verdict: Judgement = (
        "denied" if not answer.allowed else "skipped" if answer.verdict == "skipped" else "allowed"
    )
    return Judged(
        namespace,
        name,
        verdict,
        violations=list(answer.violations),
        message=answer.message,
        findings=tuple(answer.findings),
        controls=answer.controls,
        profile=answer.profile,
        **basis,
    )


def custom_objects(
    custom: Any,
    group: str,
    version: str,
    plural: str,
    *,
    namespace: str | None,
    chunk_size: int,
    **params: Any,
) -> Iterator[dict[str, Any]]:
    """Every object of a custom resource in one namespace (or all), page by page."""
    from webhook.nodes.paging import pages

    where = (group, version)
    list_call = (
        functools.partial(custom.list_cluster_custom_object, *where, plural)
        if namespace is None
        else functools.partial(custom.list_namespaced_custom_object, *where, namespace, plural)
    )
    timeout = (CONNECT_TIMEOUT_SECONDS, LIST_TIMEOUT_SECONDS)
    for page in pages(list_call, limit=chunk_size, request_timeout=timeout, **params):
        yield from page.get("items") or ()


def virtual_machine_instances(custom: Any, *, namespace: str | None, chunk_size: int) -> Index:
    """The VMIs of one namespace (or all), read page by page into a small index."""
    index = Index()
    for item in custom_objects(
        custom, KUBEVIRT_GROUP, VMI_VERSION, VMI_PLURAL, namespace=namespace, chunk_size=chunk_size
    ):
        instance = read_instance(item)
        if instance is not None:
            index.add(instance)
    return index


def unreadable(error: Any, where: str) -> tuple[Index, str]:
    """No index, and the one line that says why (a 404: KubeVirt not installed; 403: RBAC)."""
    status = f"{error.status} {error.reason}"
    hint = {
        404: "is KubeVirt installed?",
        403: "needs virtualmachineinstances list in API group kubevirt.io",
    }.get(error.status)
    line = (
        f"virtdev audit: cannot list VirtualMachineInstances {where}: {status}"
        + (f" ({hint})" if hint else "")
        + ": KubeVirt's state vouches for no pod, every launcher and hotplug pod is judged as "
        "any pod (Pod Security baseline)"
    )
    return Index(unreadable=status), line


def guarded_namespaces(core: Any, namespace: str | None) -> list[str]:
    """The namespaces in scope that carry the guard label (one, or all of them)."""
    from kubernetes.client.exceptions import ApiException

    options: dict[str, Any] = {
        "_preload_content": False,
        "_request_timeout": (CONNECT_TIMEOUT_SECONDS, LIST_TIMEOUT_SECONDS),
    }
    if namespace is not None:
        try:
            response = core.read_namespace(namespace, **options)
        except ApiException as error:
            if error.status == 404:  # pods may be listed in a namespace being created
                return []
            raise
        try:
            labels = (orjson.loads(response.data).get("metadata") or {}).get("labels") or {}
        finally:
            response.release_conn()
        guarded = labels.get(catalogue.GUARD_LABEL_KEY) == catalogue.GUARD_LABEL_VALUE
        return [namespace] if guarded else []
    response = core.list_namespace(label_selector=GUARDED, **options)
    try:
        items = orjson.loads(response.data).get("items") or ()
    finally:
        response.release_conn()
    return sorted(str((item.get("metadata") or {}).get("name")) for item in items)


def launcher_pods(
    core: Any, *, selector: str, namespace: str | None, chunk_size: int
) -> Iterator[dict[str, Any]]:
    """Every pod matching `selector`, one list request per `chunk_size` pods (`continue`)."""
    from webhook.nodes.paging import pages

    list_call = (
        core.list_pod_for_all_namespaces
        if namespace is None
        else functools.partial(core.list_namespaced_pod, namespace)
    )
    params: dict[str, Any] = {"label_selector": selector} if selector else {}
    timeout = (CONNECT_TIMEOUT_SECONDS, LIST_TIMEOUT_SECONDS)
    for page in pages(list_call, limit=chunk_size, request_timeout=timeout, **params):
        yield from page.get("items") or ()


def existing_reports(custom: Any, *, namespace: str | None, chunk_size: int) -> dict[str, str]:
    """The audit's own reports in scope (labelled, named `virtdev-audit`): namespace ->
    resourceVersion."""
    found: dict[str, str] = {}
    for item in custom_objects(
        custom,
        reports.GROUP,
        reports.VERSION,
        reports.PLURAL,
        namespace=namespace,
        chunk_size=chunk_size,
        label_selector=reports.SELECTOR,
    ):
        metadata = item.get("metadata") or {}
        if metadata.get("name") == reports.NAME:
            found[str(metadata.get("namespace"))] = str(metadata.get("resourceVersion"))
    return found


def apply_report(custom: Any, report: dict[str, Any]) -> str:
    """Server-side apply of one report under the audit's field manager (forced: the fields are
    the audit's alone); its resourceVersion afterwards."""
    namespace = report["metadata"]["namespace"]
    response = custom.patch_namespaced_custom_object(
        reports.GROUP,
        reports.VERSION,
        namespace,
        reports.PLURAL,
        reports.NAME,
        report,
        field_manager=reports.FIELD_MANAGER,
        force=True,
        _content_type="application/apply-patch+yaml",
        _preload_content=False,
        _request_timeout=(CONNECT_TIMEOUT_SECONDS, LIST_TIMEOUT_SECONDS),
    )
    try:
        applied = orjson.loads(response.data)
    finally:
        response.release_conn()
    return str((applied.get("metadata") or {}).get("resourceVersion"))


def delete_report(custom: Any, namespace: str) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        response = custom.delete_namespaced_custom_object(
            reports.GROUP,
            reports.VERSION,
            namespace,
            reports.PLURAL,
            reports.NAME,
            _preload_content=False,
            _request_timeout=(CONNECT_TIMEOUT_SECONDS, LIST_TIMEOUT_SECONDS),
        )
    except ApiException as error:
        if error.status == 404:  # gone already: what was wanted
            return
        raise
    response.release_conn()


@dataclass(frozen=True)
class Written:
    """What `--report` did: namespaces whose report was created or changed, left as it was, or
    deleted (nothing left to judge there)."""

    changed: list[str]
    unchanged: list[str]
    deleted: list[str]

    @property
    def line(self) -> str:
        return (
            f"PolicyReports: {len(self.changed)} written, {len(self.unchanged)} unchanged, "
            f"{len(self.deleted)} deleted"
        )


def write_reports(
    custom: Any, reports: list[dict[str, Any]], *, namespace: str | None, chunk_size: int
) -> Written:
    """Apply every report, then delete the audit's reports of namespaces with nothing judged."""
    before = existing_reports(custom, namespace=namespace, chunk_size=chunk_size)
    changed: list[str] = []
    unchanged: list[str] = []
    for report in reports:
        where = report["metadata"]["namespace"]
        version = apply_report(custom, report)
        (unchanged if before.get(where) == version else changed).append(where)
    kept = {report["metadata"]["namespace"] for report in reports}
    deleted = sorted(set(before) - kept)
    for where in deleted:
        delete_report(custom, where)
    return Written(changed, unchanged, deleted)


def report_refused(error: Any) -> str:
    """One line for a PolicyReport call the API server refused."""
    hint = {
        404: "is the PolicyReport CRD (wgpolicyk8s.io/v1alpha2) installed? Kyverno, Policy "
        "Reporter or manifests/ install it",
        403: "needs policyreports create, patch, list and delete in API group wgpolicyk8s.io",
    }.get(error.status)
    return f"virtdev audit: cannot write PolicyReports: {error.status} {error.reason}" + (
        f" ({hint})" if hint else ""
    )


def run_audit(
    args: argparse.Namespace,
    policy: LauncherPolicy,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    from virtdev import kube

    writing = bool(args.report) and args.output != "yaml"
    if args.output == "yaml" and not args.report:
        print(
            "virtdev audit: --output: yaml prints the PolicyReports --report would write: give "
            "--report too (see virtdev audit --help)",
            file=err,
        )
        return BAD_INPUT
    try:
        api = kube.cli_client(args.kubeconfig, args.context)
    except kube.KubeConfigError as error:
        print(f"virtdev audit: {error}", file=err)
        return BAD_INPUT
    selector = f"{policy.label_key}={policy.label_value}"
    others = f"{policy.label_key}!={policy.label_value}"  # also pods without the label
    namespace = None if args.all_namespaces else args.namespace
    judged: list[Judged] = []
    guarded: list[str] = []
    written: Written | None = None

    index = Index()

    def report(pods: Iterator[dict[str, Any]], decide: Decide) -> None:
        for pod in pods:
            judged.append(judge(pod, policy, decide, vouching=vouch(pod, index, policy)))
            if args.output == "table":
                print(line(judged[-1]), file=out)

    where = f"in namespace {namespace}" if namespace else "in all namespaces"
    with api as api_client:
        core = client.CoreV1Api(api_client)
        custom = client.CustomObjectsApi(api_client)
        pages = {"namespace": namespace, "chunk_size": args.chunk_size}
        try:
            try:  # first: the launchers are judged as their pages arrive
                index = virtual_machine_instances(custom, **pages)
            except ApiException as error:
                index, unread = unreadable(error, where)
                print(unread, file=err)
            if args.guard:  # every pod, as /guard would judge it once the label is set
                report(launcher_pods(core, selector="", **pages), guard_review)
            else:
                report(launcher_pods(core, selector=selector, **pages), validate_review)
                try:
                    guarded = guarded_namespaces(core, namespace)
                except ApiException as error:
                    print(
                        f"virtdev audit: cannot read the namespaces' labels ({error.status} "
                        f"{error.reason}, needs namespaces get/list): the other pods of guarded "
                        "namespaces are not audited",
                        file=err,
                    )
                for name in guarded:
                    pods = {"namespace": name, "chunk_size": args.chunk_size}
                    report(launcher_pods(core, selector=others, **pods), guard_review)
        except ApiException as error:
            print(
                f"virtdev audit: the API server refused to list pods {where}: "
                f"{error.status} {error.reason} (needs pods list; see docs/install.md)",
                file=err,
            )
            return 1
        except (HTTPError, OSError) as error:
            print(f"virtdev audit: cannot reach the API server: {error}", file=err)
            return 1
        made = reports.reports(judged, enforcement=args.enforcement) if args.report else []
        if writing:
            try:
                written = write_reports(custom, made, **pages)
            except ApiException as error:
                print(report_refused(error), file=err)
                return 1
            except (HTTPError, OSError) as error:
                print(f"virtdev audit: cannot reach the API server: {error}", file=err)
                return 1
    denied = sum(j.verdict == "denied" for j in judged)
    errors = sum(j.verdict == "error" for j in judged)
    unvouched = sum(j.vouched is False for j in judged)
    what = "pods" if args.guard else f"launcher pods ({selector})"
    if guarded:
        what += f" and the other pods of guarded namespaces ({', '.join(guarded)})"
    scope = f"namespace {namespace}" if namespace else "all namespaces"
    if args.output == "json":
        document = {
            "selector": "" if args.guard else selector,
            "namespace": namespace,
            "guarded": guarded,
            "pods": [as_json(j) for j in judged],
            "denied": denied,
            # Launcher and hotplug pods judged as any pod, and why no VMI could vouch if none.
            "not_vouched": unvouched,
            "vmis_unreadable": index.unreadable or None,
        }
        if written is not None:
            document["reports"] = asdict(written)
        out.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif args.output == "yaml":
        yaml.dump_all(made, out, Dumper=_Dumper, sort_keys=False)
    if args.output != "json":
        print(
            f"{len(judged)} {what} in {scope}: {denied} would be denied"
            + (f", {unvouched} judged as any pod (not KubeVirt's)" if unvouched else "")
            + (f", {errors} not judged" if errors else ""),
            file=err,
        )
    if args.output == "yaml":
        print(f"PolicyReports: {len(made)} printed, none written", file=err)
    elif written is not None and args.output != "json":
        print(written.line, file=err)
    for made_report in made:
        omitted = (made_report["metadata"].get("annotations") or {}).items()
        said = ", ".join(f"{k}={v}" for k, v in omitted)
        if said:
            where_ns = made_report["metadata"]["namespace"]
            print(f"virtdev audit: PolicyReport {where_ns}/{reports.NAME}: {said}", file=err)
    if args.report:  # the findings are in the reports: a scheduled run succeeds
        return ALLOWED
    return BAD_INPUT if errors else DENIED if denied else ALLOWED


def as_json(judged: Judged) -> dict[str, Any]:
    """One pod of `-o json`, as it always was (the report's fields are the reports')."""
    return {
        "namespace": judged.namespace,
        "name": judged.name,
        "verdict": judged.verdict,
        "violations": judged.violations,
        "message": judged.message,
        "vouched": judged.vouched,
        "vouching": judged.vouching,
    }
