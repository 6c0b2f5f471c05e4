"""Walk rendered Kubernetes objects: pod templates, containers, lookups by kind and name."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

Object = dict[str, Any]

#: Kinds that carry a pod template, and where it is.
POD_TEMPLATE_KINDS = ("Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job", "CronJob")


def pod_spec(obj: Object) -> Object | None:
    """The pod spec a workload creates pods from (None for objects that create no pods)."""
    kind = obj.get("kind")
    if kind == "Pod":
        spec: Object = obj["spec"]
        return spec
    if kind == "CronJob":
        spec = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        return spec
    if kind in POD_TEMPLATE_KINDS:
        spec = obj["spec"]["template"]["spec"]
        return spec
    return None


def workloads(objects: list[Object]) -> Iterator[tuple[Object, Object]]:
    """(object, pod spec) for every object that creates pods."""
    for obj in objects:
        spec = pod_spec(obj)
        if spec is not None:
            yield obj, spec


def containers(spec: Object) -> Iterator[Object]:
    """Every container of a pod spec: init, regular and ephemeral."""
    for field in ("initContainers", "containers", "ephemeralContainers"):
        yield from spec.get(field) or []


def find(objects: list[Object], kind: str, name: str) -> Object:
    """The one object of that kind and name; a clear assertion error otherwise."""
    matches = [o for o in objects if o.get("kind") == kind and o["metadata"]["name"] == name]
    present = sorted(f"{o.get('kind')}/{o['metadata']['name']}" for o in objects)
    assert len(matches) == 1, f"expected exactly one {kind}/{name}, rendered objects: {present}"
    return matches[0]


def find_all(objects: list[Object], kind: str) -> list[Object]:
    return [o for o in objects if o.get("kind") == kind]


def ref(obj: Object) -> str:
    """kind/namespace/name, for messages."""
    meta = obj.get("metadata", {})
    return f"{obj.get('kind')}/{meta.get('namespace', '-')}/{meta.get('name')}"


def arg_value(args: list[str], flag: str) -> str | None:
    """The value of `--flag=value` or `--flag value` in a container's args (None if absent)."""
    for index, arg in enumerate(args):
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
        if arg == flag and index + 1 < len(args):
            return args[index + 1]
    return None


def container_port(container: Object, name: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in container.get("ports") or []}
    assert name in ports, f"container {container['name']} has no port named {name!r}: {ports}"
    return int(ports[name])
