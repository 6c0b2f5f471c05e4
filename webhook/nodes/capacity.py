"""`virtdev capacity`: per node, can it take a VM, and if not, why.

What `kubectl describe node` shows under "Allocated resources", for virtdev's devices only:
capacity (every device the agent advertises), allocatable (the healthy ones) and requested by
the pods bound to the node that have not finished, summed by the scheduler's rule. Then one
verdict per node, checked in the order the scheduler's filters would rule a launcher pod out.

The table and the verdicts are pure (`rows`, `render_table`, `render_json`); `collect` does the
two list calls (nodes, and pods not Succeeded/Failed), with the admin's kubeconfig: unlike the
webhook, this command may read pods. Both are read in pages, each object reduced to what the
table reads before the next page is fetched: a cluster of 15,000 nodes and 100,000 pods is
listed in bounded memory.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from virtdev import catalogue
from webhook.nodes.feasibility import (
    _DEVICE_PREFIX,
    Node,
    Pod,
    allocatable,
    capacity,
    device_resources,
    is_ready,
    is_unschedulable,
    node_name,
    pod_requests,
    short_name,
    taints,
    untolerated_taint,
)
from webhook.options import DEFAULT_PAGE_SIZE

#: The devices a launcher gets by default: the table's columns.
SHOWN = tuple(catalogue.DEVICES[name].resource for name in catalogue.DEFAULT_DEVICES)
ACTIVE_PODS = "status.phase!=Succeeded,status.phase!=Failed"


@dataclass(frozen=True, slots=True)
class Amounts:
    capacity: int
    allocatable: int
    requested: int

    @property
    def free(self) -> int:
        return max(self.allocatable - self.requested, 0)


@dataclass(frozen=True, slots=True)
class Row:
    node: str
    ready: bool
    schedulable: bool
    devices: Mapping[str, Amounts]
    verdict: str
    #: How many more one-of-each launcher pods fit (0 when the node cannot take a VM).
    room: int


def verdict(node: Node, devices: Mapping[str, Amounts]) -> tuple[str, int]:
    """Why the node cannot take a VM, or how many more it can; with that number."""
    if not is_ready(node):
        return "NotReady: the kubelet does not report Ready", 0
    if is_unschedulable(node):
        return "cordoned (spec.unschedulable): kubectl uncordon to admit pods", 0
    taint = untolerated_taint(taints(node), ())
    if taint is not None:
        shown = f"{taint.get('key')}={taint.get('value') or ''}:{taint.get('effect')}"
        return f"taint {shown}: launcher pods need a toleration", 0
    advertised = device_resources(node)
    for resource in SHOWN:
        name, amounts = short_name(resource), devices[resource]
        if resource not in advertised:
            return f"no {resource}: virtdev's agent is not serving {name} on this node", 0
        if amounts.allocatable == 0:
            return f"{name} allocatable 0: device unhealthy or the agent's plugin stopped", 0
        if amounts.free == 0:
            return f"{name} fully requested ({amounts.requested}/{amounts.allocatable})", 0
    room = min(devices[resource].free for resource in SHOWN) if SHOWN else 0
    return f"can take {room} more VM{'s' if room != 1 else ''}", room


def rows(nodes: Iterable[Node], pods: Iterable[Pod]) -> list[Row]:
    """One row per node, by name; pods are grouped by `spec.nodeName` (unbound ones ignored)."""
    node_list = sorted(nodes, key=node_name)
    resources = set(SHOWN)
    for node in node_list:
        resources |= set(device_resources(node))
    requested: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(resources, 0))
    for pod in pods:
        phase = (pod.get("status") or {}).get("phase")
        bound = (pod.get("spec") or {}).get("nodeName")
        if not bound or phase in ("Succeeded", "Failed"):
            continue
        for resource, amount in pod_requests(pod, resources).items():
            requested[bound][resource] += amount
    result = []
    for node in node_list:
        name = node_name(node)
        devices = {
            resource: Amounts(
                capacity(node, resource),
                allocatable(node, resource),
                requested[name][resource] if name in requested else 0,
            )
            for resource in sorted(resources)
        }
        text, room = verdict(node, devices)
        result.append(Row(name, is_ready(node), not is_unschedulable(node), devices, text, room))
    return result


def render_table(table: Sequence[Row]) -> str:
    """A table as kubectl prints them: upper-case headers, columns padded with spaces."""
    header = ["NODE", "READY", "SCHEDULABLE"]
    header += [f"{short_name(r).upper()} CAP/ALLOC/REQ" for r in SHOWN]
    header.append("VERDICT")
    lines = [header]
    for row in table:
        cells = [row.node, "yes" if row.ready else "no", "yes" if row.schedulable else "no"]
        for resource in SHOWN:
            a = row.devices[resource]
            cells.append(f"{a.capacity}/{a.allocatable}/{a.requested}")
        cells.append(row.verdict)
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    out = []
    for line in lines:
        padded = [cell.ljust(width) for cell, width in zip(line[:-1], widths, strict=True)]
        out.append("   ".join([*padded, line[-1]]).rstrip())
    if not table:
        out.append("(no nodes)")
    total = sum(row.room for row in table)
    out.append(f"{total} more VM{'s' if total != 1 else ''} fit, by devices alone")
    return "\n".join(out) + "\n"


def render_json(table: Sequence[Row]) -> str:
    items = [
        {
            "node": row.node,
            "ready": row.ready,
            "schedulable": row.schedulable,
            "resources": {
                resource: {
                    "capacity": a.capacity,
                    "allocatable": a.allocatable,
                    "requested": a.requested,
                }
                for resource, a in row.devices.items()
            },
            "verdict": row.verdict,
            "room": row.room,
        }
        for row in table
    ]
    return json.dumps({"nodes": items}, indent=2) + "\n"


def collect(core: Any, *, page_size: int = DEFAULT_PAGE_SIZE) -> tuple[list[Node], list[Pod]]:
    """The nodes, and the pods that hold devices (bound, not finished), as plain dicts reduced
    to what `rows` reads."""
    from webhook.nodes.paging import pages

    nodes = [
        trim(item)
        for page in pages(core.list_node, limit=page_size)
        for item in page.get("items") or ()
    ]
    pods = [
        trim_pod(item)
        for page in pages(
            core.list_pod_for_all_namespaces, limit=page_size, field_selector=ACTIVE_PODS
        )
        for item in page.get("items") or ()
    ]
    return nodes, pods


def trim(node: Mapping[str, Any]) -> Node:
    """What the feasibility check reads of a Node, in its JSON shape (for this table and tests;
    the webhook's node view keeps less, `webhook.nodes.index.NodeFacts`)."""
    metadata = node.get("metadata") or {}
    spec = node.get("spec") or {}
    status = node.get("status") or {}
    ready = [c for c in status.get("conditions") or () if (c or {}).get("type") == "Ready"]
    return {
        "metadata": {
            "name": metadata.get("name") or "",
            "labels": dict(metadata.get("labels") or {}),
            "resourceVersion": metadata.get("resourceVersion") or "",
        },
        "spec": {
            "taints": list(spec.get("taints") or ()),
            "unschedulable": bool(spec.get("unschedulable")),
        },
        "status": {
            "conditions": [{"type": "Ready", "status": c.get("status")} for c in ready],
            "capacity": {
                k: v
                for k, v in (status.get("capacity") or {}).items()
                if k.startswith(_DEVICE_PREFIX)
            },
            "allocatable": {
                k: v
                for k, v in (status.get("allocatable") or {}).items()
                if k.startswith(_DEVICE_PREFIX)
            },
        },
    }


def trim_pod(pod: Pod) -> Pod:
    """What `rows` reads of a pod: where it is bound, its phase, its containers' resources."""

    def containers(field: str) -> list[dict[str, Any]]:
        return [
            {"resources": (c or {}).get("resources") or {}, "restartPolicy": c.get("restartPolicy")}
            if c
            else {}
            for c in (pod.get("spec") or {}).get(field) or ()
        ]

    return {
        "spec": {
            "nodeName": (pod.get("spec") or {}).get("nodeName"),
            "containers": containers("containers"),
            "initContainers": containers("initContainers"),
        },
        "status": {"phase": (pod.get("status") or {}).get("phase")},
    }


def run_capacity(args: argparse.Namespace) -> int:
    """`virtdev capacity`: the table (or JSON) of what each node can take."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    from virtdev import kube

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
