"""The shape of the parts of a Pod that virtdev reads, checked before any rule runs.

The rules in `mutation` and `validation` assume the types below; this module makes that true or
answers with a `BadInput` that names the JSON path of the first wrong value. Fields virtdev does
not read are not checked (the API server has already validated the object; this guards against
hand-made reviews, curl, fuzzers and version skew). A JSON `null` counts as an absent field,
as it does for the API server.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class BadInput(ValueError):
    """Input that is not what the protocol says; answered with HTTP 400 naming `path`."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


@dataclass(frozen=True, slots=True)
class ListOf:
    item: Shape


@dataclass(frozen=True, slots=True)
class MapOf:
    value: Shape


#: A shape is a Python type for a scalar, a `dict` of field shapes for an object, or a collection.
Shape = type | tuple[type, ...] | Mapping[str, "Shape"] | ListOf | MapOf

#: Extended-resource quantities arrive as strings from the API server; numbers from hand-made input.
QUANTITY = (str, int, float)

CAPABILITIES: Mapping[str, Shape] = {"add": ListOf(str), "drop": ListOf(str)}
SELINUX_OPTIONS: Mapping[str, Shape] = {"type": str, "user": str, "role": str}
#: What Pod Security baseline reads in both the pod's and a container's securityContext.
_PROFILES: Mapping[str, Shape] = {
    "seLinuxOptions": SELINUX_OPTIONS,
    "seccompProfile": {"type": str},
    "appArmorProfile": {"type": str},
    "windowsOptions": {"hostProcess": bool},
}
SECURITY_CONTEXT: Mapping[str, Shape] = {
    "privileged": bool,
    "capabilities": CAPABILITIES,
    "procMount": str,
    **_PROFILES,
}
POD_SECURITY_CONTEXT: Mapping[str, Shape] = {**_PROFILES, "sysctls": ListOf({"name": str})}
RESOURCES: Mapping[str, Shape] = {"limits": MapOf(QUANTITY), "requests": MapOf(QUANTITY)}
#: Probe and lifecycle handlers: only their `host` is read (Pod Security baseline, 1.34+).
HANDLER: Mapping[str, Shape] = {"httpGet": {"host": str}, "tcpSocket": {"host": str}}
CONTAINER: Mapping[str, Shape] = {
    "name": str,
    "image": str,
    "command": ListOf(str),
    "args": ListOf(str),
    "resources": RESOURCES,
    "securityContext": SECURITY_CONTEXT,
    "ports": ListOf({"hostPort": int}),
    "livenessProbe": HANDLER,
    "readinessProbe": HANDLER,
    "startupProbe": HANDLER,
    "lifecycle": {"postStart": HANDLER, "preStop": HANDLER},
}
#: A container's `volumeMounts` and `volumeDevices`, read only for the containers another
#: requester adds or re-images (checked there: on every admission it would cost 2.5% more).
MOUNTS = ListOf({"name": str})
#: Also the pre-1.22 form of an ephemeral-containers update: the list at top level, no spec.
CONTAINERS = ListOf(CONTAINER)
METADATA: Mapping[str, Shape] = {
    "name": str,
    "namespace": str,
    "generateName": str,
    "labels": MapOf(str),
    "annotations": MapOf(str),
}
POD_SPEC: Mapping[str, Shape] = {
    "containers": CONTAINERS,
    "initContainers": CONTAINERS,
    "ephemeralContainers": CONTAINERS,
    "hostPID": bool,
    "hostIPC": bool,
    "hostNetwork": bool,
    "hostUsers": bool,
    "securityContext": POD_SECURITY_CONTEXT,
    "volumes": ListOf({"name": str, "hostPath": {"path": str}}),
}
#: What the feasibility check reads, only when a node view is configured (`--kubeconfig`).
NODE_SELECTOR_REQUIREMENT: Mapping[str, Shape] = {
    "key": str,
    "operator": str,
    "values": ListOf(str),
}
NODE_SELECTOR_TERM: Mapping[str, Shape] = {
    "matchExpressions": ListOf(NODE_SELECTOR_REQUIREMENT),
    "matchFields": ListOf(NODE_SELECTOR_REQUIREMENT),
}
TOLERATION: Mapping[str, Shape] = {"key": str, "operator": str, "value": str, "effect": str}
SCHEDULING: Mapping[str, Shape] = {
    "spec": {
        "nodeName": str,
        "nodeSelector": MapOf(str),
        "tolerations": ListOf(TOLERATION),
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": ListOf(NODE_SELECTOR_TERM)
                }
            }
        },
    },
}
_TYPE_NAMES = {str: "a string", bool: "a boolean", int: "a number", float: "a number"}


def _describe(shape: Shape) -> str:
    if isinstance(shape, ListOf):
        return "a list"
    if isinstance(shape, (MapOf, Mapping)):
        return "an object"
    if isinstance(shape, tuple):
        return " or ".join(dict.fromkeys(_TYPE_NAMES.get(t, t.__name__) for t in shape))
    return _TYPE_NAMES.get(shape, shape.__name__)


def _is(value: Any, types: type | tuple[type, ...]) -> bool:
    # JSON true is not a number: bool is a subclass of int in Python, not in JSON.
    if isinstance(value, bool):
        return bool in (types if isinstance(types, tuple) else (types,))
    return isinstance(value, types)


Valid = Callable[[Any], bool]
_compiled: dict[int, tuple[Shape, Valid]] = {}


def _compile(shape: Shape) -> Valid:
    """A fast yes/no test for a non-null value of `shape`: exact JSON types, no paths built.

    Callers skip `None` themselves (null = absent), which saves a call per absent field.
    """
    if isinstance(shape, ListOf):
        item = _compile(shape.item)

        def valid_list(value: Any) -> bool:
            if type(value) is not list:
                return False
            for element in value:
                if element is None or not item(element):
                    return False
            return True

        return valid_list
    if isinstance(shape, MapOf):
        entry = _compile(shape.value)

        def valid_map(value: Any) -> bool:
            if type(value) is not dict:
                return False
            for element in value.values():
                if element is None or not entry(element):
                    return False
            return True

        return valid_map
    if isinstance(shape, Mapping):
        fields = [(key, _compile(field_shape)) for key, field_shape in shape.items()]

        def valid_object(value: Any) -> bool:
            if type(value) is not dict:
                return False
            get = value.get
            for key, valid in fields:
                field = get(key)
                if field is not None and not valid(field):
                    return False
            return True

        return valid_object
    types = frozenset(shape if isinstance(shape, tuple) else (shape,))

    def valid_scalar(value: Any) -> bool:
        return type(value) in types

    return valid_scalar


def check(value: Any, shape: Shape, path: str) -> None:
    """Raise BadInput at the first value that does not match `shape`; `None` is always fine.

    Every admission request passes here, so the common case (valid input) runs a compiled
    yes/no test; only a failure walks again, slowly, to name the path.
    """
    entry = _compiled.get(id(shape))
    if entry is None:
        entry = _compiled[id(shape)] = (shape, _compile(shape))
    if value is not None and not entry[1](value):
        # Finds and raises the first bad path. Should it find none (a dict or str subclass,
        # which only Python callers can pass), the value is usable as it is.
        _locate(value, shape, path)


def _locate(value: Any, shape: Shape, path: str) -> None:
    if value is None:
        return
    if isinstance(shape, ListOf):
        if not isinstance(value, list):
            raise BadInput(path, f"expected a list, got {type_name(value)}")
        for index, item in enumerate(value):
            if item is None:  # null is "absent" for a field, but a list has no absent items
                raise BadInput(f"{path}[{index}]", f"expected {_describe(shape.item)}, got null")
            _locate(item, shape.item, f"{path}[{index}]")
    elif isinstance(shape, MapOf):
        if not isinstance(value, dict):
            raise BadInput(path, f"expected an object, got {type_name(value)}")
        for key, item in value.items():
            if item is None:
                raise BadInput(f"{path}[{key!r}]", f"expected {_describe(shape.value)}, got null")
            _locate(item, shape.value, f"{path}[{key!r}]")
    elif isinstance(shape, Mapping):
        if not isinstance(value, dict):
            raise BadInput(path, f"expected an object, got {type_name(value)}")
        for key, field_shape in shape.items():
            _locate(value.get(key), field_shape, f"{path}.{key}")
    elif not _is(value, shape):
        raise BadInput(path, f"expected {_describe(shape)}, got {type_name(value)}")


def type_name(value: Any) -> str:
    """How JSON would call the type of a decoded value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"
