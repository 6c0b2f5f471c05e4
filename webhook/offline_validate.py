"""Show what /validate says of Pods or AdmissionReviews in a file, without a cluster.

FILE is one object, a multi-document YAML stream or a `v1 List` (what `kubectl get pods -o yaml`
prints), or - for standard input. One line per object: `NAMESPACE/NAME: allowed`, or
`NAMESPACE/NAME: denied: ` with every violation and its field path (`warned:` under
--enforcement warn). An AdmissionReview with an oldObject is judged as the UPDATE it is: only new
violations count. Exit 0 allowed, 1 any denied, 2 bad input. Examples:
  virtdev validate tests/fixtures/v1-ephemeral-debug-update.json
  kubectl get pods -A -l kubevirt.io=virt-launcher -o yaml | virtdev validate -
"""

from __future__ import annotations

import argparse

from webhook.cli import add_enforcement_flag
from webhook.offline_args import configure_common


def configure(parser: argparse.ArgumentParser) -> None:
    configure_common(parser)
    add_enforcement_flag(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from webhook.offline import run_validate

    return run_validate(args)
