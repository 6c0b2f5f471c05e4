"""`virtdev audit`: /validate's judgement of the launcher pods already running, and /guard's of
the other pods of guarded namespaces.

Each pod is judged by `validate_review` (launchers) or `guard_review` (every other pod of a
namespace labelled `virtdev.io/guard=baseline`, or of the namespaces named with `--guard`) on
the CREATE review the API server would send for it (`webhook.offline.create_review`): when
virt-controller next creates a launcher like it — a VM restart, a migration — or a controller
re-creates the pod, this is what the webhook will answer. The enforcement is not applied: the
audit says what `deny` would do, whatever the webhook runs with now.

The webhook grants a release's exceptions only to pods KubeVirt's controller asks for; a running
pod does not say who created it. The audit counts a launcher (or hotplug pod) as KubeVirt's only
where KubeVirt's own state vouches for it: the VirtualMachineInstance that controls it lists it
in `status.activePods`, which only KubeVirt may write (`webhook.vouching`, with the sources).
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
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, TextIO

import orjson

from virtdev import catalogue
from webhook import review
from webhook.admission import guard_review, validate_review
from webhook.answer import Answer
from webhook.cli import launcher_policy
from webhook.offline import ALLOWED, BAD_INPUT, DENIED, create_review, verdict_line
from webhook.policy import LauncherPolicy
from webhook.shapes import BadInput
from webhook.vouching import KUBEVIRT_GROUP, Index, Vouching, read_instance, vouch

CONNECT_TIMEOUT_SECONDS = 5
LIST_TIMEOUT_SECONDS = 60
#: The requester of the reviews of pods KubeVirt's state does not vouch for (messages name it).
UNVOUCHED = "a requester KubeVirt's state does not vouch for"
VMI_VERSION, VMI_PLURAL = "v1", "virtualmachineinstances"


#: A verdict of the rules, or error: the pod could not be judged. skipped: the label matched but
#: /validate would not look.
Judgement = Literal["allowed", "denied", "skipped", "error"]


@dataclass(frozen=True)
class Judged:
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

    @property
    def line(self) -> str:
        name = f"{self.namespace}/{self.name}"
        if self.verdict == "error":
            return f"{name}: not judged: {self.message}"
        answer = Answer(
            allowed=self.verdict != "denied",
            verdict=self.verdict,
            message=self.message,
            violations=self.violations,
        )
        if self.vouched is None:
            return verdict_line(name, answer)
        if self.vouched:
            return f"{verdict_line(name, answer)} [KubeVirt's: {self.vouching}]"
        basis = "judged as any pod, not vouched for by KubeVirt"
        return f"{verdict_line(name, answer)} [{basis}: {self.vouching}]"


class Decide(Protocol):
    """`validate_review` or `guard_review`: `trusted` stands for the requester the audit cannot
    see."""

    def __call__(
        self, request: review.Request, policy: LauncherPolicy, *, trusted: bool | None = None
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
    basis: dict[str, Any] = {}
    if vouching is not None:
        basis = {"vouched": vouching.vouched, "vouching": vouching.why}
    try:
        created = create_review(pod) if trusted else create_review(pod, UNVOUCHED)
        answer = decide(review.parse(orjson.dumps(created)), policy, trusted=trusted)
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
        **basis,
    )


def virtual_machine_instances(custom: Any, *, namespace: str | None, chunk_size: int) -> Index:
    """The VMIs of one namespace (or all), read page by page into a small index."""
    from webhook.paging import pages

    where = (KUBEVIRT_GROUP, VMI_VERSION)
    list_call = (
        functools.partial(custom.list_cluster_custom_object, *where, VMI_PLURAL)
        if namespace is None
        else functools.partial(custom.list_namespaced_custom_object, *where, namespace, VMI_PLURAL)
    )
    index = Index()
    timeout = (CONNECT_TIMEOUT_SECONDS, LIST_TIMEOUT_SECONDS)
    for page in pages(list_call, limit=chunk_size, request_timeout=timeout):
        for item in page.get("items") or ():
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
    from webhook.paging import pages

    list_call = (
        core.list_pod_for_all_namespaces
        if namespace is None
        else functools.partial(core.list_namespaced_pod, namespace)
    )
    params: dict[str, Any] = {"label_selector": selector} if selector else {}
    timeout = (CONNECT_TIMEOUT_SECONDS, LIST_TIMEOUT_SECONDS)
    for page in pages(list_call, limit=chunk_size, request_timeout=timeout, **params):
        yield from page.get("items") or ()


def run_audit(
    args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    from virtdev import kube

    try:
        policy = launcher_policy(args)
        api = kube.cli_client(args.kubeconfig, args.context)
    except (ValueError, kube.KubeConfigError) as error:
        print(f"virtdev audit: {error}", file=err)
        return BAD_INPUT
    selector = f"{policy.label_key}={policy.label_value}"
    others = f"{policy.label_key}!={policy.label_value}"  # also pods without the label
    namespace = None if args.all_namespaces else args.namespace
    judged: list[Judged] = []
    guarded: list[str] = []

    index = Index()

    def report(pods: Iterator[dict[str, Any]], decide: Decide) -> None:
        for pod in pods:
            judged.append(judge(pod, policy, decide, vouching=vouch(pod, index, policy)))
            if args.output == "table":
                print(judged[-1].line, file=out)

    where = f"in namespace {namespace}" if namespace else "in all namespaces"
    with api as api_client:
        core = client.CoreV1Api(api_client)
        pages = {"namespace": namespace, "chunk_size": args.chunk_size}
        try:
            try:  # first: the launchers are judged as their pages arrive
                custom = client.CustomObjectsApi(api_client)
                index = virtual_machine_instances(custom, **pages)
            except ApiException as error:
                index, line = unreadable(error, where)
                print(line, file=err)
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
    denied = sum(j.verdict == "denied" for j in judged)
    errors = sum(j.verdict == "error" for j in judged)
    unvouched = sum(j.vouched is False for j in judged)
    what = "pods" if args.guard else f"launcher pods ({selector})"
    if guarded:
        what += f" and the other pods of guarded namespaces ({', '.join(guarded)})"
    if args.output == "json":
        document = {
            "selector": "" if args.guard else selector,
            "namespace": namespace,
            "guarded": guarded,
            "pods": [asdict(j) for j in judged],
            "denied": denied,
            # Launcher and hotplug pods judged as any pod, and why no VMI could vouch if none.
            "not_vouched": unvouched,
            "vmis_unreadable": index.unreadable or None,
        }
        out.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        scope = f"namespace {namespace}" if namespace else "all namespaces"
        print(
            f"{len(judged)} {what} in {scope}: {denied} would be denied"
            + (f", {unvouched} judged as any pod (not KubeVirt's)" if unvouched else "")
            + (f", {errors} not judged" if errors else ""),
            file=err,
        )
    return BAD_INPUT if errors else DENIED if denied else ALLOWED
