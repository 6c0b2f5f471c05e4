"""Serve the admission webhook: POST /mutate and /validate over HTTPS (TLS 1.2 or newer).

Without --tls-cert/--tls-key it makes throwaway certificates for localhost and 127.0.0.1 in
--dev-certs-dir and prints a ready curl line: the quickest way to try it. Probes and Prometheus
metrics are served over plain HTTP on --metrics-port (/livez, /healthz, /readyz, /metrics).
A port in use or an unusable --kubeconfig is one line on stderr and exit 1 or 2, never a
traceback.
"""

from __future__ import annotations

import argparse

from virtdev import catalogue
from virtdev.config import (
    add_config_flag,
    add_launcher_policy_flags,
    add_log_format_flag,
    port,
    port_or_zero,
)
from webhook.options import (
    DEFAULT_BODY_SECONDS,
    DEFAULT_ENFORCEMENT,
    DEFAULT_HEAD_SECONDS,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_BUFFERED_BYTES,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_NO_KVM_POLICY,
    ENFORCEMENTS,
    NO_KVM_POLICIES,
)


def configure(parser: argparse.ArgumentParser) -> None:
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
    parser.set_defaults(run=run)


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


def run(args: argparse.Namespace) -> int:
    import sys

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

    from webhook.server import serve

    return serve(args)
