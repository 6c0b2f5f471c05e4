"""The `virtdev` commands of the webhook package: webhook, mutate, validate, capacity, audit.

Argparse and `virtdev` only: every process (the agent on every node included) builds the whole
`virtdev` parser, so each command's `run` imports the rules, the server or the Kubernetes client
it needs. Each `configure_*` docstring is its command's `--help` description.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from virtdev import catalogue
from virtdev.config import (
    add_config_flag,
    add_launcher_policy_flags,
    add_log_format_flag,
    port,
    port_or_zero,
)
from virtdev.kube import add_flags as add_kube_flags

if TYPE_CHECKING:  # the rules are imported when a command runs, not to build the parser
    from webhook.rules.policy import LauncherPolicy
from webhook.options import (
    BAD_INPUT,
    DEFAULT_BODY_SECONDS,
    DEFAULT_ENFORCEMENT,
    DEFAULT_HEAD_SECONDS,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_BUFFERED_BYTES,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_NO_KVM_POLICY,
    DEFAULT_PAGE_SIZE,
    ENFORCEMENTS,
    NO_KVM_POLICIES,
)


def configure_webhook(parser: argparse.ArgumentParser) -> None:
    """Serve the admission webhook: POST /mutate, /validate and /guard over HTTPS (TLS 1.2+).

    Without --tls-cert/--tls-key it makes throwaway certificates for localhost and 127.0.0.1 in
    --dev-certs-dir and prints a ready curl line: the quickest way to try it. Probes and Prometheus
    metrics are served over plain HTTP on --metrics-port (/livez, /healthz, /readyz, /metrics).
    A port in use or an unusable --kubeconfig is one line on stderr and exit 1 or 2, never a
    traceback.
    """
    add_config_flag(parser)
    server = parser.add_argument_group("server")
    server.add_argument("--host", default="0.0.0.0", help="address to listen on (default: 0.0.0.0)")
    server.add_argument(
        "--port",
        type=port,
        metavar="PORT",
        default=catalogue.WEBHOOK_PORT,
        help=f"HTTPS port for /mutate and /validate (default: {catalogue.WEBHOOK_PORT})",
    )
    server.add_argument(
        "--metrics-port",
        type=port_or_zero,
        metavar="PORT",
        default=catalogue.WEBHOOK_METRICS_PORT,
        help="plain-HTTP port for /livez, /healthz, /readyz and /metrics "
        f"(default: {catalogue.WEBHOOK_METRICS_PORT}); 0 picks a free port",
    )
    server.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help="larger request bodies are refused with 413 (default: 6 MiB, an UPDATE review "
        "carries two objects of the API server's maximum request size)",
    )
    limits = parser.add_argument_group(
        "connection limits", "what slow or many clients may take (see docs/benchmarks.md)"
    )
    limits.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        help="connections open at once on the HTTPS port, TLS handshakes included; more are "
        "reset at once; lowered to fit the open-file limit (default: "
        f"{DEFAULT_MAX_CONNECTIONS})",
    )
    limits.add_argument(
        "--head-timeout",
        type=float,
        default=DEFAULT_HEAD_SECONDS,
        metavar="SECONDS",
        help="seconds for the TLS handshake and then each request head; a late one is answered "
        f"408 and closed (default: {DEFAULT_HEAD_SECONDS:g})",
    )
    limits.add_argument(
        "--body-timeout",
        type=float,
        default=DEFAULT_BODY_SECONDS,
        metavar="SECONDS",
        help="seconds for a request body once its head is in; a late one is answered 408 and "
        f"closed (default: {DEFAULT_BODY_SECONDS:g})",
    )
    limits.add_argument(
        "--max-buffered-bytes",
        type=int,
        default=DEFAULT_MAX_BUFFERED_BYTES,
        help="bytes of request bodies over 64 KiB held at once across all requests; a body that "
        "does not fit is refused with 503 (default: 64 MiB)",
    )
    add_log_format_flag(server)
    tls = parser.add_argument_group("TLS")
    tls.add_argument("--tls-cert", metavar="FILE", help="serving certificate chain (PEM)")
    tls.add_argument("--tls-key", metavar="FILE", help="private key of the serving certificate")
    tls.add_argument(
        "--client-ca",
        metavar="FILE",
        help="require client certificates signed by this CA (the API server's) on the HTTPS port",
    )
    tls.add_argument(
        "--dev-certs-dir",
        default=".virtdev/dev-certs",
        metavar="DIR",
        help="where throwaway local certificates go when no --tls-cert is given "
        "(default: .virtdev/dev-certs)",
    )
    add_launcher_policy_flags(parser)
    add_enforcement_flag(parser.add_argument_group("enforcement"))
    scheduling = parser.add_argument_group(
        "scheduling", "which nodes could run a launcher pod (see docs/scheduling.md)"
    )
    scheduling.add_argument(
        "--no-kvm-policy",
        choices=NO_KVM_POLICIES,
        default=DEFAULT_NO_KVM_POLICY,
        help="when no schedulable node advertises devices.kubevirt.io/kvm: warn and inject it "
        "anyway, emulate (inject tun only, the VM runs without KVM) or deny the pod; migration "
        "targets are never changed (default: warn)",
    )
    scheduling.add_argument(
        "--kubeconfig",
        metavar="FILE",
        help="kubeconfig for the webhook's watch of nodes (RBAC: nodes get/list/watch); without "
        "it the in-cluster service account is used when running in a pod, and outside a cluster "
        "the check is off (~/.kube/config and $KUBECONFIG are never read); a file that cannot "
        "be used stops the webhook at start",
    )
    scheduling.add_argument(
        "--node-selector",
        default="",
        metavar="SELECTOR",
        help="label selector of the nodes that may run VMs (e.g. kubevirt.io/schedulable=true), "
        "passed to the list and watch: the view holds only those nodes (default: every node)",
    )
    parser.set_defaults(run=run_webhook)


def launcher_policy(args: argparse.Namespace) -> LauncherPolicy:
    """The launcher policy the launcher-policy flags (and config keys) describe."""
    from webhook.rules.policy import LauncherPolicy

    return LauncherPolicy.from_flags(
        launcher_selector=str(args.launcher_selector),
        compute_container=args.compute_container,
        devices=args.devices,
        kubevirt_version=args.kubevirt_version,
        kubevirt_controllers=args.kubevirt_controllers,
        baseline_version=args.baseline_version,
        permitted_capabilities=args.permitted_capabilities,
        permitted_host_paths=args.permitted_host_paths,
        selinux_launcher_types=args.selinux_launcher_types,
        emulation=bool(args.emulation),
    )


def _with_policy(
    command: str, run: Callable[[argparse.Namespace, LauncherPolicy], int], args: argparse.Namespace
) -> int:
    """Run a command with the launcher policy its flags describe. The commands take the policy
    as an argument, not from here: they never import this module, which imports them."""
    try:
        policy = launcher_policy(args)
    except ValueError as error:
        print(f"virtdev {command}: {error}", file=sys.stderr)
        return BAD_INPUT
    return run(args, policy)


def add_enforcement_flag(parser: argparse._ActionsContainer) -> None:
    """`--enforcement`, of `virtdev webhook` and `virtdev validate`."""
    parser.add_argument(
        "--enforcement",
        choices=ENFORCEMENTS,
        default=DEFAULT_ENFORCEMENT,
        help="what /validate does with a launcher pod its rules refuse: deny it, or warn (admit "
        "it with a warning and an audit annotation per violation, counted as verdict warned) "
        "while rolling out; see docs/install.md (default: deny)",
    )


def run_webhook(args: argparse.Namespace) -> int:
    from virtdev import kube

    # A --kubeconfig that cannot be used is a bad flag, said at start: not a node view that
    # retries forever while launcher pods are patched without the check the operator asked for.
    try:
        source = kube.webhook_source(args.kubeconfig)
        if source is not None:
            kube.load(source)
    except kube.KubeConfigError as error:
        print(f"virtdev webhook: {error}", file=sys.stderr)
        return 2

    from webhook.serving.server import serve

    return _with_policy("webhook", serve, args)


# --- virtdev mutate and virtdev validate: the rules on files --------------------------------------


def _configure_offline(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file",
        metavar="FILE",
        help="Pods or AdmissionReviews (YAML or JSON; one object, a multi-document stream or a "
        "List), or - for standard input",
    )
    add_config_flag(parser)
    add_launcher_policy_flags(parser)
    parser.add_argument(
        "--as",
        dest="requester",
        metavar="USER",
        help="who creates the bare Pods of FILE, as request.userInfo.username (default: "
        "KubeVirt's controller, the first of --kubevirt-controllers: what KubeVirt's pod gets); "
        "an AdmissionReview names its own requester",
    )


def configure_mutate(parser: argparse.ArgumentParser) -> None:
    """Show what /mutate does to Pods or AdmissionReviews in a file, without a cluster.

    FILE is one object, a multi-document YAML stream or a `v1 List`, or - for standard input. Prints
    the mutated pod (in the input's format), or with --patch the JSON Patch /mutate would return;
    several objects are printed as a YAML stream. Warnings go to stderr. Exit 0 allowed, 2 bad
    input. Examples:
      virtdev mutate --patch tests/fixtures/v1-launcher-2018-privileged.json
      kubectl get pods -l kubevirt.io=virt-launcher -o yaml | virtdev mutate - > mutated.yaml
    """
    _configure_offline(parser)
    parser.add_argument(
        "--patch",
        action="store_true",
        help="print the JSON Patch instead of the pod (a single object only)",
    )
    parser.set_defaults(run=run_mutate)


def run_mutate(args: argparse.Namespace) -> int:
    from webhook.offline import run_mutate

    return _with_policy("mutate", run_mutate, args)


def configure_validate(parser: argparse.ArgumentParser) -> None:
    """Show what /validate says of Pods or AdmissionReviews in a file, without a cluster.

    FILE is one object, a multi-document YAML stream or a `v1 List` (what `kubectl get pods -o
    yaml` prints), or - for standard input. One line per object: `NAMESPACE/NAME: allowed`, or
    `NAMESPACE/NAME: denied: ` with every violation and its field path (`warned:` under
    --enforcement warn). An AdmissionReview with an oldObject is judged as the UPDATE it is:
    only new violations count. Exit 0 allowed, 1 any denied, 2 bad input. Examples:
      virtdev validate tests/fixtures/v1-ephemeral-debug-update.json
      kubectl get pods -A -l kubevirt.io=virt-launcher -o yaml | virtdev validate -
    """
    _configure_offline(parser)
    add_enforcement_flag(parser)
    parser.set_defaults(run=run_validate)


def run_validate(args: argparse.Namespace) -> int:
    from webhook.offline import run_validate

    return _with_policy("validate", run_validate, args)


# --- virtdev capacity and virtdev audit: the cluster as it is -------------------------------------


def configure_capacity(parser: argparse.ArgumentParser) -> None:
    """Show, per node, whether it can take a VM: Ready, schedulable, and for devices.kubevirt.io/kvm
    and /tun the capacity, allocatable and requested by running pods (as "Allocated resources" in
    `kubectl describe node`), with a one-line verdict on why a node cannot take a VM.

    Reads the cluster as kubectl does: --kubeconfig, else $KUBECONFIG, else ~/.kube/config, else
    the in-cluster service account; --context picks a context. Needs nodes list and pods list
    (cluster-wide).
    See docs/scheduling.md for what the verdicts mean.
    """
    add_config_flag(parser)
    add_kube_flags(parser)
    parser.add_argument(
        "-o",
        "--output",
        choices=("table", "json"),
        default="table",
        help="a table for people or JSON for scripts (default: table)",
    )
    parser.set_defaults(run=run_capacity)


def run_capacity(args: argparse.Namespace) -> int:
    from webhook.nodes.capacity import run_capacity

    return run_capacity(args)


def _chunk_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= 10_000:
        raise argparse.ArgumentTypeError(f"must be between 1 and 10000, got {value}")
    return value


def configure_audit(parser: argparse.ArgumentParser) -> None:
    """Say what /validate would decide of the launcher pods already in the cluster.

    Lists the pods that carry the launcher label (--launcher-selector), page by page (--chunk-size,
    as kubectl), and judges each as /validate would judge its creation today, and the other pods of
    namespaces labelled virtdev.io/guard=baseline as /guard would (every pod with --guard): one line
    per pod,
    `NAMESPACE/NAME: allowed` or `NAMESPACE/NAME: denied: <violations>`, as `virtdev validate`
    prints them. Run it before switching the webhook on, and again before moving from
    --enforcement warn to deny (docs/install.md). Needs `pods list` in the namespace, or
    cluster-wide with -A. Exit 0 all allowed, 1 any would be denied, 2 bad flags or a pod that could
    not be judged.

    With --report it also writes one PolicyReport (wgpolicyk8s.io/v1alpha2, `kubectl get polr`)
    per namespace judged, named virtdev-audit, by server-side apply (field manager virtdev-audit),
    and deletes its reports of namespaces with nothing left to judge (-n: that namespace only).
    A rerun over unchanged pods changes nothing. A report stays under 512 KiB: past that, passes
    are left out, then messages cut, and annotations virtdev.io/*-omitted say how many. Needs
    policyreports create, patch, list and delete in the namespaces too. With --report the exit
    status is 0 once every report is written, whatever they say (1: the cluster could not be read
    or a report not written; 2: bad flags); --report -o yaml prints the reports instead, writing
    nothing. Example:
      virtdev audit -A
      kubectl virtdev audit -n vms -o json
      virtdev audit --guard -n vms        # before `kubectl label ns vms virtdev.io/guard=baseline`
      virtdev audit -A --report           # what a CronJob runs
      virtdev audit -n vms --report -o yaml
    """
    add_config_flag(parser)
    add_kube_flags(parser)
    scope = parser.add_mutually_exclusive_group(required=True)
    scope.add_argument("-n", "--namespace", metavar="NS", help="the launcher pods of one namespace")
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="the launcher pods of every namespace"
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=("table", "json", "yaml"),
        default="table",
        help="one line per pod for people, JSON for scripts, or with --report yaml: the "
        "PolicyReports printed as a YAML stream instead of written (default: table)",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="write the judgements as PolicyReports (wgpolicyk8s.io/v1alpha2), one per namespace, "
        "and delete virtdev's reports of namespaces with nothing left to judge; exit 0 once "
        "written",
    )
    parser.add_argument(
        "--enforcement",
        choices=ENFORCEMENTS,
        default=DEFAULT_ENFORCEMENT,
        help="the webhook's (config key enforcement): under warn the reports give what the rules "
        "refuse as warn results, as the webhook admits it with a warning, instead of fail; the "
        "lines and the exit status say what deny would do either way (default: deny)",
    )
    parser.add_argument(
        "--guard",
        action="store_true",
        help="judge every pod of the namespace(s) as /guard would (Pod Security baseline; "
        "launchers by their release), whether or not the namespace is labelled "
        "virtdev.io/guard=baseline yet: a preview before labelling it",
    )
    parser.add_argument(
        "--chunk-size",
        type=_chunk_size,
        default=DEFAULT_PAGE_SIZE,
        metavar="N",
        help=f"pods per list request, as kubectl's (default: {DEFAULT_PAGE_SIZE})",
    )
    add_launcher_policy_flags(parser)
    parser.set_defaults(run=run_audit)


def run_audit(args: argparse.Namespace) -> int:
    from webhook.audit import run_audit

    return _with_policy("audit", run_audit, args)
