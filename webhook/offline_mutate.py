"""Show what /mutate does to Pods or AdmissionReviews in a file, without a cluster.

FILE is one object, a multi-document YAML stream or a `v1 List`, or - for standard input. Prints
the mutated pod (in the input's format), or with --patch the JSON Patch /mutate would return;
several objects are printed as a YAML stream. Warnings go to stderr. Exit 0 allowed, 2 bad
input. Examples:
  virtdev mutate --patch tests/fixtures/v1-launcher-2018-privileged.json
  kubectl get pods -l kubevirt.io=virt-launcher -o yaml | virtdev mutate - > mutated.yaml
"""

from __future__ import annotations

import argparse

from webhook.offline_args import configure_common


def configure(parser: argparse.ArgumentParser) -> None:
    configure_common(parser)
    parser.add_argument(
        "--patch",
        action="store_true",
        help="print the JSON Patch instead of the pod (a single object only)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from webhook.offline import run_mutate

    return run_mutate(args)
