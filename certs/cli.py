"""Make, show and rotate the webhook's TLS material.

  virtdev certs generate --out DIR      CA + serving certificate in DIR (idempotent)
  virtdev certs ca-bundle DIR           the base64 caBundle for the webhook configurations
  virtdev certs ensure                  in the cluster: fill or renew the TLS Secret and patch
                                        the caBundles (a Job, a CronJob, or --interval)

Certificates are renewed when two thirds of their life have passed; a new CA is published next
to the old one before anything it signed is served. See docs/certificates.md.
"""

from __future__ import annotations

import argparse
import sys

from virtdev import catalogue
from virtdev.config import add_config_flag, add_log_format_flag, csv_list
from virtdev.kube import add_flags as add_kube_flags


def configure(parser: argparse.ArgumentParser) -> None:
    subparsers = parser.add_subparsers(dest="certs_command", metavar="COMMAND", required=True)
    generate = subparsers.add_parser(
        "generate",
        help="write ca.crt, tls.crt and tls.key for the webhook's Service into a directory",
        description="Write ca.crt (the CA bundle), ca.key, tls.crt and tls.key into DIR. "
        "Running it again keeps a valid CA and re-issues the certificate only when it is due.",
    )
    add_config_flag(generate)
    generate.add_argument("--out", required=True, metavar="DIR", help="directory to write to")
    _add_names(generate)
    _add_periods(generate)
    add_log_format_flag(generate)
    generate.set_defaults(run=run_generate)

    ca_bundle = subparsers.add_parser(
        "ca-bundle",
        help="print the base64 caBundle of a directory made by `generate`",
        description="Print DIR/ca.crt base64-encoded on one line: the value of caBundle. "
        "With --fill, print the given manifests with it filled in instead, e.g.\n"
        "  kubectl kustomize manifests/base | virtdev certs ca-bundle ./tls --fill -",
    )
    ca_bundle.add_argument("dir", metavar="DIR", help="directory holding ca.crt")
    ca_bundle.add_argument(
        "--fill",
        metavar="FILE",
        help="rendered manifests (YAML stream, - for stdin): print them with caBundle set on "
        "every webhook that calls --service in --namespace",
    )
    _add_names(ca_bundle)
    ca_bundle.set_defaults(run=run_ca_bundle)

    ensure = subparsers.add_parser(
        "ensure",
        help="in the cluster: fill or renew the TLS Secret and the webhooks' caBundle",
        description="Fill or renew the kubernetes.io/tls Secret the manifests create empty, "
        "and patch caBundle of the mutating and validating configurations. Needs only get/update "
        "on the Secret and get/patch on the two configurations. Exits 0 when nothing is due.",
    )
    add_config_flag(ensure)
    _add_names(ensure)
    ensure.add_argument(
        "--secret",
        default=catalogue.TLS_SECRET,
        help=f"the kubernetes.io/tls Secret to keep (default: {catalogue.TLS_SECRET})",
    )
    ensure.add_argument(
        "--mutating-webhook-configuration",
        default=catalogue.MUTATING_CONFIGURATION,
        metavar="NAME",
        help="MutatingWebhookConfiguration whose caBundle to set; empty to skip "
        f"(default: {catalogue.MUTATING_CONFIGURATION})",
    )
    ensure.add_argument(
        "--validating-webhook-configuration",
        default=catalogue.VALIDATING_CONFIGURATION,
        metavar="NAME",
        help="ValidatingWebhookConfiguration whose caBundle to set; empty to skip "
        f"(default: {catalogue.VALIDATING_CONFIGURATION})",
    )
    _add_periods(ensure)
    ensure.add_argument(
        "--grace",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="how long a new CA is published before it signs the served certificate, and how "
        "long a replaced certificate's CA stays trusted (default: 600)",
    )
    ensure.add_argument(
        "--interval",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="keep running, checking this often (default: 0, run once: a Job or CronJob)",
    )
    add_kube_flags(ensure)
    add_log_format_flag(ensure)
    ensure.set_defaults(run=run_ensure)


def _add_names(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--service",
        default=catalogue.WEBHOOK_SERVICE,
        metavar="NAME",
        help=f"the webhook's Service (default: {catalogue.WEBHOOK_SERVICE})",
    )
    parser.add_argument(
        "--namespace",
        default=catalogue.NAMESPACE,
        metavar="NS",
        help=f"the Service's namespace (default: {catalogue.NAMESPACE})",
    )
    parser.add_argument(
        "--dns",
        type=csv_list,
        action="extend",
        default=[],
        metavar="NAME",
        help="extra DNS name for the certificate (repeatable, or comma-separated)",
    )
    parser.add_argument(
        "--ip",
        type=csv_list,
        action="extend",
        default=[],
        metavar="ADDRESS",
        help="IP address for the certificate (repeatable, or comma-separated)",
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_periods(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ca-days",
        type=_positive_int,
        default=3650,
        metavar="N",
        help="validity of a new CA in days (default: 3650)",
    )
    parser.add_argument(
        "--days",
        type=_positive_int,
        default=365,
        metavar="N",
        help="validity of a new serving certificate in days (default: 365)",
    )


def _dns_names(args: argparse.Namespace) -> list[str]:
    from certs.store import service_dns_names

    return [*service_dns_names(args.service, args.namespace), *args.dns]


def run_generate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from certs.store import ensure_material
    from virtdev import logs

    logs.setup(args.log_format, args.log_level)
    try:
        material = ensure_material(
            Path(args.out),
            dns_names=_dns_names(args),
            ip_addresses=args.ip,
            ca_days=args.ca_days,
            days=args.days,
        )
    except ValueError as error:
        print(f"virtdev certs generate: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"virtdev certs generate: {args.out}: {error.strerror or error}", file=sys.stderr)
        return 1
    state = "updated" if material.issued else "already up to date"
    print(f"{args.out}: {state}")
    for path in (material.ca_cert, material.tls_cert, material.tls_key):
        print(f"  {path}")
    return 0


def run_ca_bundle(args: argparse.Namespace) -> int:
    import base64
    from pathlib import Path

    from certs import pki
    from certs.store import CA_CERT

    path = Path(args.dir) / CA_CERT
    try:
        pem = path.read_bytes()
    except OSError as error:
        print(f"virtdev certs ca-bundle: {path}: {error.strerror or error}", file=sys.stderr)
        return 1
    if not pki.load_certs(pem):
        print(f"virtdev certs ca-bundle: {path}: no PEM certificate in it", file=sys.stderr)
        return 1
    value = base64.b64encode(pem).decode()
    if args.fill is None:
        print(value)
        return 0
    return _fill(args, value)


def _fill(args: argparse.Namespace, value: str) -> int:
    import yaml

    from certs.bundle import fill_ca_bundle

    where = "stdin" if args.fill == "-" else args.fill
    try:
        text = sys.stdin.read() if args.fill == "-" else open(args.fill, encoding="utf-8").read()
        documents = list(yaml.safe_load_all(text))
    except OSError as error:
        print(f"virtdev certs ca-bundle: {where}: {error.strerror or error}", file=sys.stderr)
        return 1
    except yaml.YAMLError as error:
        print(f"virtdev certs ca-bundle: {where}: not YAML: {error}", file=sys.stderr)
        return 1
    if not fill_ca_bundle(documents, value, service=args.service, namespace=args.namespace):
        print(
            f"virtdev certs ca-bundle: {where}: no webhook calls Service "
            f"{args.namespace}/{args.service}",
            file=sys.stderr,
        )
        return 1
    yaml.safe_dump_all([d for d in documents if d is not None], sys.stdout, sort_keys=False)
    return 0


def run_ensure(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from certs import incluster
    from virtdev import kube, logs

    logs.setup(args.log_format, args.log_level)
    try:
        target = incluster.Target(
            namespace=args.namespace,
            service=args.service,
            secret=args.secret,
            mutating_configuration=args.mutating_webhook_configuration or None,
            validating_configuration=args.validating_webhook_configuration or None,
            dns_names=tuple(_dns_names(args)),
            ip_addresses=tuple(args.ip),
            ca_days=args.ca_days,
            days=args.days,
            grace=timedelta(seconds=args.grace),
        )
        api_client = kube.cli_client(args.kubeconfig, args.context)
    except (ValueError, incluster.ClusterError, kube.KubeConfigError) as error:
        incluster.ensure_log.error("cannot start: %s", error)
        return 2
    return incluster.keep(api_client, target, interval=args.interval)
