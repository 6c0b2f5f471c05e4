"""Show, per node, whether it can take a VM: Ready, schedulable, and for devices.kubevirt.io/kvm
and /tun the capacity, allocatable and requested by running pods (as "Allocated resources" in
`kubectl describe node`), with a one-line verdict on why a node cannot take a VM.

Reads the cluster as kubectl does: --kubeconfig, else $KUBECONFIG, else ~/.kube/config, else
the in-cluster service account; --context picks a context. Needs nodes list and pods list
(cluster-wide).
See docs/scheduling.md for what the verdicts mean.
"""

from __future__ import annotations

import argparse
import sys

from virtdev.config import add_config_flag
from virtdev.kube import add_flags


def configure(parser: argparse.ArgumentParser) -> None:
    add_config_flag(parser)
    add_flags(parser)
    parser.add_argument(
        "-o",
        "--output",
        choices=("table", "json"),
        default="table",
        help="a table for people or JSON for scripts (default: table)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    from virtdev import kube
    from webhook.capacity import collect, render_json, render_table, rows

    try:
        api = kube.cli_client(args.kubeconfig, args.context)
    except kube.KubeConfigError as error:
        print(f"virtdev capacity: {error}", file=sys.stderr)
        return 2
    with api as api_client:
        try:
            nodes, pods = collect(client.CoreV1Api(api_client))
        except ApiException as error:
            print(
                f"virtdev capacity: the API server refused: {error.status} {error.reason}",
                file=sys.stderr,
            )
            return 1
        except (HTTPError, OSError) as error:
            print(f"virtdev capacity: cannot reach the API server: {error}", file=sys.stderr)
            return 1
    table = rows(nodes, pods)
    sys.stdout.write(render_json(table) if args.output == "json" else render_table(table))
    return 0
