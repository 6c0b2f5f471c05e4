"""Say what /validate would decide of the launcher pods already in the cluster.

Lists the pods that carry the launcher label (--launcher-selector), page by page (--chunk-size,
as kubectl), and judges each as /validate would judge its creation today, and the other pods of
namespaces labelled virtdev.io/guard=baseline as /guard would (every pod with --guard): one line
per pod,
`NAMESPACE/NAME: allowed` or `NAMESPACE/NAME: denied: <violations>`, as `virtdev validate`
prints them. Run it before switching the webhook on, and again before moving from
--enforcement warn to deny (docs/install.md). Read-only; needs `pods list` in the namespace, or
cluster-wide with -A. Exit 0 all allowed, 1 any would be denied, 2 bad flags or a pod that could
not be judged. Example:
  virtdev audit -A
  kubectl virtdev audit -n vms -o json
  virtdev audit --guard -n vms        # before `kubectl label ns vms virtdev.io/guard=baseline`
"""

from __future__ import annotations

import argparse

from virtdev.config import add_config_flag, add_launcher_policy_flags
from virtdev.kube import add_flags

#: kubectl's default --chunk-size.
DEFAULT_CHUNK_SIZE = 500


def _chunk_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= 10_000:
        raise argparse.ArgumentTypeError(f"must be between 1 and 10000, got {value}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    add_config_flag(parser)
    add_flags(parser)
    scope = parser.add_mutually_exclusive_group(required=True)
    scope.add_argument("-n", "--namespace", metavar="NS", help="the launcher pods of one namespace")
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="the launcher pods of every namespace"
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=("table", "json"),
        default="table",
        help="one line per pod for people, or JSON for scripts (default: table)",
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
        default=DEFAULT_CHUNK_SIZE,
        metavar="N",
        help=f"pods per list request, as kubectl's (default: {DEFAULT_CHUNK_SIZE})",
    )
    add_launcher_policy_flags(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from webhook.audit import run_audit

    return run_audit(args)
