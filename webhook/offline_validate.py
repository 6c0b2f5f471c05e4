"""Show what /validate says of a Pod or AdmissionReview file, without a cluster.

Prints `allowed`, or `denied:` with every violation and its field path. An AdmissionReview with
an oldObject is judged as the UPDATE it is: only new violations count. Exit 0 allowed, 1 denied,
2 bad input. Example:
  virtdev validate tests/fixtures/v1-ephemeral-debug-update.json
"""

from __future__ import annotations

import argparse

from webhook.offline_args import configure_common


def configure(parser: argparse.ArgumentParser) -> None:
    configure_common(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from webhook.offline import run_validate

    return run_validate(args)
