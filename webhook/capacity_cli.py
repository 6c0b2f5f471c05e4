"""Show, per node, whether it can take a VM: Ready, schedulable, and for devices.kubevirt.io/kvm
and /tun the capacity, allocatable and requested by running pods (as "Allocated resources" in
`kubectl describe node`), with a one-line verdict on why a node cannot take a VM.

Uses --kubeconfig, else the in-cluster service account when running in a pod, else $KUBECONFIG
or ~/.kube/config, as kubectl does. Needs nodes list and pods list (cluster-wide).
See docs/scheduling.md for what the verdicts mean.
"""

from __future__ import annotations

import argparse
import sys

from virtdev.config import add_config_flag


def configure(parser: argparse.ArgumentParser) -> None:
    add_config_flag(parser)
    parser.add_argument(
        "--kubeconfig",
        metavar="FILE",
        help="kubeconfig to use (default: in-cluster in a pod, else $KUBECONFIG or ~/.kube/config)",
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=("table", "json"),
        default="table",
        help="a table for people or JSON for scripts (default: table)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import os
    from typing import Any

    from webhook.capacity import collect, render_json, render_table, rows

    try:
        from kubernetes import client, config
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        load_kube_config: Any = config.load_kube_config
        load_incluster_config: Any = config.load_incluster_config
        configuration = client.Configuration()
        if args.kubeconfig:
            load_kube_config(config_file=args.kubeconfig, client_configuration=configuration)
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            load_incluster_config(client_configuration=configuration)
        else:
            load_kube_config(client_configuration=configuration)
    except (config.ConfigException, OSError) as error:
        print(f"virtdev capacity: no usable Kubernetes configuration: {error}", file=sys.stderr)
        return 2
    with client.ApiClient(configuration) as api_client:
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
