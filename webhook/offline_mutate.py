"""Show what /mutate does to a Pod or AdmissionReview file, without a cluster.

Prints the mutated pod (in the input's format), or with --patch the JSON Patch /mutate would
return; warnings go to stderr. Exit 0 allowed, 2 bad input. Example:
  virtdev mutate --patch tests/fixtures/v1-launcher-2018-privileged.json
"""

from __future__ import annotations

import argparse

from webhook.offline_args import configure_common


def configure(parser: argparse.ArgumentParser) -> None:
    configure_common(parser)
    parser.add_argument(
        "--patch", action="store_true", help="print the JSON Patch instead of the pod"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from webhook.offline import run_mutate

    return run_mutate(args)
