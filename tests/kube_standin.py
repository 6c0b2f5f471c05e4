"""A small stand-in for the Kubernetes API server, for tests that run the real `kubernetes` client.

No API server can run on the test machines, so in-cluster code is tested against this: a plain
HTTP server over a generic object store keyed by (group/version, resource, namespace, name),
with one resourceVersion counter for the whole store, as etcd's revision is for a real cluster.

What it does as the API server does, for the resources registered in `RESOURCES`:
- `GET` an object or a collection (the list carries the store's resourceVersion);
- `POST` to a collection creates (409 AlreadyExists when the name is taken);
- `PUT` replaces: 404 NotFound when absent, 409 Conflict when the body's resourceVersion is not
  the stored one (an empty one means "unconditional", as for the API server);
- `PATCH` with `application/json-patch+json` (RFC 6902) or `application/merge-patch+json`
  (RFC 7386); a patch that sets `metadata.resourceVersion` is a precondition (409 when stale);
  a JSON Patch that cannot apply (failed `test`, missing path) is 422; other patch types 415;
- `DELETE` an object;
- errors are `Status` objects with the API server's `reason` and `code`;
- every write sets a new `metadata.resourceVersion`, create sets `uid` and
  `creationTimestamp`; Secrets: `stringData` is folded into `data`, a `kubernetes.io/tls`
  Secret must have `tls.crt` and `tls.key` keys (422), and a Secret's `type` is immutable.

List and watch, as the API server does them (for the node view and `virtdev capacity`):
- every write is also an event (ADDED / MODIFIED / DELETED, the object at its new
  resourceVersion) in the store's event history;
- `GET` a collection with `watch=true` streams events as JSON lines over chunked HTTP:
  from `resourceVersion` on (all later events), or, with none or "0", synthetic ADDED events for
  what exists and then every change; `allowWatchBookmarks=true` adds BOOKMARK events carrying the
  current resourceVersion every `bookmark_seconds`; `timeoutSeconds` ends the stream cleanly;
- `compact()` forgets the history up to now, as etcd compaction does: a watch from an older
  resourceVersion gets HTTP 200 and one ERROR event with a `Status` of code 410 (Expired, "too
  old resource version"), as a real API server sends it, or HTTP 410 on the request itself when
  `gone_as_http` is set;
- `drop_watches()` cuts every open watch connection without ending the chunked body, as a
  crashed API server or a broken network would; `open_watches` counts the streams being served;
- `labelSelector` (`k=v`, `k!=v`, `k`) and `fieldSelector` (`a.b=v`, `a.b!=v` over the object's
  dotted fields) filter lists and watches; in a watch, an object that stops matching is a
  DELETED event (with its previous content) and one that starts matching an ADDED, as the API
  server's watch cache sends them;
- `limit` and `continue` page a list: a page carries `metadata.continue` while objects remain,
  every page the first page's resourceVersion, and a token older than the last `compact()` is
  410 Expired, as kube-apiserver answers them.

Server-side apply (`PATCH` with `application/apply-patch+yaml`, `fieldManager` required,
`force`), minimal but honest, as `virtdev audit --report` uses it: an absent object is created
(201); else the fields the body sets are set, the fields the same manager applied before and no
longer sets are taken away (unless another manager applied them too; maps left empty go with
them), and the object is written, with a new resourceVersion and a MODIFIED event, only when
that changes it. Each manager's fields are kept beside the object (not as `managedFields`); a
field another manager applied with another value is a 409 Conflict unless `force`, which takes
it over. Lists are atomic, maps are walked, as for a CRD whose schema names no list or map type
(PolicyReport's); fields created by POST or PUT belong to no manager. An object larger than
etcd's default request limit (1.5 MiB of JSON) is refused with 500 `etcdserver: request is too
large`, as the API server relays etcd's refusal.

PolicyReports (`wgpolicyk8s.io/v1alpha2`, namespaced) are checked as their CRD's schema checks
what virtdev writes: each result names a `policy`, `result` and `severity` are of their enums,
`properties` are strings, `summary` holds counts.

KubeVirt's VirtualMachineInstances (`kubevirt.io/v1`, namespaced) are served as any other
resource (get, list in a namespace or in all of them, paged, watch); the objects are stored as
given, status included (what virt-controller wrote), without KubeVirt's webhooks. `missing`
takes a group/version away, as a cluster without the CRD answers: 404 NotFound.

Lists page with `limit` and `continue` (410 Expired for a token older than the last
`compact()`); a later page is cut from the store as it is then, not from a snapshot at the
first page's resourceVersion as etcd serves it.

What it does NOT cover: authentication and RBAC (tests assert the calls made instead, through
`requests`), pages served from one snapshot (later pages read the current store, so an object
changed between pages shows its newer state: the watch from the list's resourceVersion then
replays the change), set-based label selectors, strategic merge, server-side apply beyond the
above (`managedFields`, list and map merge keys, ownership shared by managers that applied the
same value), defaulting and schema validation beyond the above, admission, finalizers and
`deletionTimestamp`, `generation`, subresources, `dryRun`, protobuf, and TLS.
"""

from __future__ import annotations

import base64
import bisect
import builtins
import copy
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonpatch
import yaml

Key = tuple[str, str, str, str]  # (group/version, resource, namespace, name)
Object = dict[str, Any]
Path = tuple[str, ...]  # a field, as server-side apply tracks it


@dataclass(frozen=True)
class Resource:
    group_version: str  # "v1" for the core group
    resource: str
    kind: str
    namespaced: bool
    validate: Callable[[Object, Object | None], str | None] = lambda new, old: None


def _validate_secret(new: Object, old: Object | None) -> str | None:
    if old is not None and new.get("type", "Opaque") != old.get("type", "Opaque"):
        return "type: Invalid value: field is immutable"
    if new.get("type") == "kubernetes.io/tls":
        for key in ("tls.crt", "tls.key"):
            if key not in (new.get("data") or {}):
                return f"data[{key}]: Required value"
    return None


_RESULTS = ("pass", "fail", "warn", "error", "skip")
_SEVERITIES = ("critical", "high", "low", "medium", "info")


def _validate_policy_report(new: Object, old: Object | None) -> str | None:
    """What the PolicyReport CRD's schema (wgpolicyk8s.io/v1alpha2, as Kyverno ships it) checks
    of the fields virtdev writes."""
    results = new.get("results")
    if results is not None and not isinstance(results, list):
        return "results: Invalid value: must be an array"
    for index, result in enumerate(results or ()):
        where = f"results[{index}]"
        if not isinstance(result, dict):
            return f"{where}: Invalid value: must be an object"
        if not isinstance(result.get("policy"), str):
            return f"{where}.policy: Required value"
        if "result" in result and result["result"] not in _RESULTS:
            return f"{where}.result: Unsupported value: {result['result']!r}"
        if "severity" in result and result["severity"] not in _SEVERITIES:
            return f"{where}.severity: Unsupported value: {result['severity']!r}"
        properties = result.get("properties") or {}
        if not all(isinstance(v, str) for v in properties.values()):
            return f"{where}.properties: Invalid value: values must be strings"
    for key, count in (new.get("summary") or {}).items():
        if key not in _RESULTS or not isinstance(count, int):
            return f"summary.{key}: Invalid value: {count!r}"
    return None


RESOURCES: dict[tuple[str, str], Resource] = {
    (r.group_version, r.resource): r
    for r in (
        Resource("v1", "secrets", "Secret", True, _validate_secret),
        Resource("v1", "configmaps", "ConfigMap", True),
        Resource("v1", "nodes", "Node", False),
        Resource("v1", "namespaces", "Namespace", False),
        Resource("v1", "pods", "Pod", True),
        # KubeVirt's CRD (`virtdev audit` lists them); `StandIn.missing` takes it away.
        Resource("kubevirt.io/v1", "virtualmachineinstances", "VirtualMachineInstance", True),
        # The Policy WG's CRD (`virtdev audit --report` applies them); `missing` takes it away.
        Resource(
            "wgpolicyk8s.io/v1alpha2",
            "policyreports",
            "PolicyReport",
            True,
            _validate_policy_report,
        ),
        Resource(
            "admissionregistration.k8s.io/v1",
            "mutatingwebhookconfigurations",
            "MutatingWebhookConfiguration",
            False,
        ),
        Resource(
            "admissionregistration.k8s.io/v1",
            "validatingwebhookconfigurations",
            "ValidatingWebhookConfiguration",
            False,
        ),
    )
}

_PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<namespace>[^/]+))?/(?P<resource>[^/]+)(?:/(?P<name>[^/]+))?/?$"
)


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


@dataclass(frozen=True)
class Request:
    """One call the stand-in answered (for tests that check what a client did)."""

    method: str
    path: str
    content_type: str
    resource: str
    namespace: str
    name: str
    status: int
    #: The query string (`watch=true&resourceVersion=5...`), to tell lists from watches.
    query: str = ""


@dataclass(frozen=True)
class Event:
    """One write as a watch streams it: the type and the object at its new resourceVersion."""

    resource_version: int
    type: str  # ADDED, MODIFIED, DELETED
    key: Key
    object: Object
    #: What a MODIFIED object was before: a selecting watch needs it (stopped matching?).
    old: Object | None = None


class Gone(Exception):
    """A watch asked for history the store has compacted away."""


@dataclass
class Store:
    """Objects and the resourceVersion counter; every method is atomic under one lock."""

    objects: dict[Key, Object] = field(default_factory=dict)
    resource_version: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock)
    #: Every write since the last `compact()`, oldest first.
    events: list[Event] = field(default_factory=list)
    #: History at or below this resourceVersion is gone (410 for watches older than it).
    compacted: int = 0
    #: The keys in order, for paging; None when an object was created or deleted since.
    _sorted: builtins.list[Key] | None = None
    #: Server-side apply: the field paths each field manager applied, per object.
    managed: dict[Key, dict[str, set[Path]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        #: Notified on every write, so watches wake up at once.
        self.changed = threading.Condition(self.lock)

    def _next(self) -> str:
        self.resource_version += 1
        return str(self.resource_version)

    def _record(self, kind: str, key: Key, obj: Object, old: Object | None = None) -> None:
        # Stored objects are replaced on every write, never changed in place: no copy needed.
        self.events.append(Event(self.resource_version, kind, key, obj, old))
        self.changed.notify_all()

    def compact(self) -> int:
        """Forget the event history up to the current resourceVersion, as etcd compaction does."""
        with self.lock:
            self.compacted = self.resource_version
            self.events.clear()
            return self.compacted

    def events_after(self, since: int, group_version: str, resource: str) -> list[Event]:
        """The events of one resource after `since`; raises Gone when they were compacted."""
        with self.lock:
            if since < self.compacted:
                raise Gone(f"too old resource version: {since} ({self.compacted})")
            # Events are in resourceVersion order: start after `since` without a scan.
            start = bisect.bisect_right(self.events, since, key=lambda e: e.resource_version)
            return [e for e in self.events[start:] if e.key[:2] == (group_version, resource)]

    def get(self, key: Key) -> Object:
        with self.lock:
            if key not in self.objects:
                raise _not_found(key)
            return copy.deepcopy(self.objects[key])

    def list(self, group_version: str, resource: str, namespace: str) -> tuple[list[Object], str]:
        with self.lock:
            items = [
                copy.deepcopy(obj)
                for (gv, res, ns, _), obj in sorted(self.objects.items())
                if gv == group_version and res == resource and (not namespace or ns == namespace)
            ]
            return items, str(self.resource_version)

    def page(
        self,
        group_version: str,
        resource: str,
        namespace: str,
        *,
        limit: int,
        token: str,
        keep: Callable[[Object], bool],
        count_remaining: bool = False,
    ) -> tuple[builtins.list[Object], str, str, int]:
        """One page of a list: (items, the list's resourceVersion, the next continue token, how
        many items remain after this page: `remainingItemCount`, which the API server gives only
        for a list without selectors, as here: `count_remaining`)."""
        with self.lock:
            since, after = str(self.resource_version), None
            if token:
                try:
                    decoded = json.loads(base64.urlsafe_b64decode(token.encode()))
                    since, after = str(int(decoded["rv"])), tuple(decoded["start"])
                except (ValueError, KeyError, TypeError):
                    raise ApiError(400, "BadRequest", "invalid continue token") from None
                if int(since) < self.compacted:
                    raise ApiError(410, "Expired", _EXPIRED_CONTINUE)
            if self._sorted is None:
                self._sorted = sorted(self.objects)
            start = bisect.bisect_right(self._sorted, after) if after is not None else 0
            items: builtins.list[Object] = []
            next_token = ""
            remaining = 0
            for index in range(start, len(self._sorted)):
                key = self._sorted[index]
                gv, res, ns, _ = key
                if gv != group_version or res != resource or (namespace and ns != namespace):
                    continue
                if not keep(self.objects[key]):
                    continue
                if limit and len(items) == limit:
                    state = {"rv": int(since), "start": list(self._sorted[index - 1])}
                    next_token = base64.urlsafe_b64encode(json.dumps(state).encode()).decode()
                    if count_remaining:  # the keys of one resource (and namespace) are adjacent
                        end = (group_version, resource, namespace or "\U0010ffff", "\U0010ffff")
                        remaining = bisect.bisect_right(self._sorted, end) - index
                    break
                items.append(self.objects[key])  # replaced on write, never changed: no copy
            return items, since, next_token, remaining

    def create(self, key: Key, obj: Object) -> Object:
        with self.lock:
            if key in self.objects:
                raise ApiError(409, "AlreadyExists", f'{key[1]} "{key[3]}" already exists')
            obj = self._admit(key, obj, None)
            meta = obj["metadata"]
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            meta["resourceVersion"] = self._next()
            self.objects[key] = obj
            self._sorted = None
            self._record("ADDED", key, obj)
            return copy.deepcopy(obj)

    def update(self, key: Key, obj: Object) -> Object:
        """Replace; a non-empty metadata.resourceVersion must be the stored one."""
        with self.lock:
            old = self.get(key)
            wanted = (obj.get("metadata") or {}).get("resourceVersion")
            if wanted and wanted != old["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {key[1]} "{key[3]}": the object has been '
                    "modified; please apply your changes to the latest version and try again",
                )
            obj = self._admit(key, obj, old)
            meta = obj["metadata"]
            for kept in ("uid", "creationTimestamp"):
                meta[kept] = old["metadata"][kept]
            meta["resourceVersion"] = self._next()
            previous = self.objects[key]
            self.objects[key] = obj
            self._record("MODIFIED", key, obj, previous)
            return copy.deepcopy(obj)

    def apply(self, key: Key, body: Object, manager: str, *, force: bool) -> tuple[int, Object]:
        """Server-side apply: create the object if absent; else set the fields `body` sets, take
        away those `manager` applied before and no longer does (unless another manager owns
        them), and write only when that changes the object. A field another manager applied
        with another value is a 409 Conflict unless `force`, which takes it over."""
        with self.lock:
            wanted = (body.get("metadata") or {}).get("resourceVersion")
            fields = {p: v for p, v in _leaves(body).items() if p not in _SYSTEM_FIELDS}
            current = self.objects.get(key)
            if current is None:
                if wanted:
                    raise _not_found(key)
                created = self.create(key, body)
                self.managed[key] = {manager: set(fields)}
                return 201, created
            if wanted and wanted != current["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'the object "{key[3]}" has been modified')
            owners = self.managed.setdefault(key, {})
            others = {
                path: name for name, owned in owners.items() if name != manager for path in owned
            }
            clashes = [
                (others[p], p) for p, v in fields.items() if p in others and _at(current, p) != v
            ]
            if clashes and not force:
                said = ", ".join(f'conflict with "{name}": .{".".join(p)}' for name, p in clashes)
                raise ApiError(
                    409, "Conflict", f"Apply failed with {len(clashes)} conflict(s): {said}"
                )
            new = copy.deepcopy(current)
            for path in owners.get(manager, set()) - set(fields):
                if path not in others:
                    _remove(new, path)
            for path, value in fields.items():
                _put(new, path, copy.deepcopy(value))
            if force:  # the fields applied are this manager's alone now
                for name, owned in owners.items():
                    if name != manager:
                        owned -= set(fields)
            owners[manager] = set(fields)
            if new == current:  # nothing changed: no write, the same resourceVersion
                return 200, copy.deepcopy(current)
            return 200, self.update(key, new)

    def delete(self, key: Key) -> Object:
        with self.lock:
            old = self.get(key)
            self.managed.pop(key, None)
            del self.objects[key]
            self._sorted = None
            old["metadata"]["resourceVersion"] = self._next()
            self._record("DELETED", key, old)
            return old

    def _admit(self, key: Key, obj: Object, old: Object | None) -> Object:
        gv, resource, namespace, name = key
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if meta.get("name", name) != name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the URL")
        if meta.get("namespace", namespace) != namespace:
            raise ApiError(400, "BadRequest", "the namespace of the object does not match the URL")
        meta["name"] = name
        if namespace:
            meta["namespace"] = namespace
        spec = RESOURCES[(gv, resource)]
        obj["apiVersion"], obj["kind"] = gv, spec.kind
        if resource == "secrets" and "stringData" in obj:
            data = obj.setdefault("data", {}) or {}
            for k, v in (obj.pop("stringData") or {}).items():
                data[k] = base64.b64encode(str(v).encode()).decode()
            obj["data"] = data
        problem = spec.validate(obj, old)
        if problem:
            raise ApiError(422, "Invalid", f'{spec.kind} "{name}" is invalid: {problem}')
        if len(json.dumps(obj)) > MAX_OBJECT_BYTES:  # as etcd refuses it
            raise ApiError(500, "InternalError", "etcdserver: request is too large")
        return obj


#: etcd's default `--max-request-bytes`: a larger object is never stored.
MAX_OBJECT_BYTES = 1536 * 1024
#: What server-side apply never takes from the body (the server's, or the object's identity).
_SYSTEM_FIELDS = {
    ("apiVersion",),
    ("kind",),
    ("metadata", "name"),
    ("metadata", "namespace"),
    ("metadata", "resourceVersion"),
    ("metadata", "uid"),
    ("metadata", "creationTimestamp"),
    ("metadata", "managedFields"),
}


def _leaves(obj: Object, prefix: Path = ()) -> dict[Path, Any]:
    """The fields an applied object sets: maps are walked, lists and scalars are leaves (lists
    are atomic, as for a CRD whose schema names no list type)."""
    found: dict[Path, Any] = {}
    for name, value in obj.items():
        path = (*prefix, name)
        if isinstance(value, dict) and value:
            found.update(_leaves(value, path))
        else:
            found[path] = value
    return found


def _at(obj: Any, path: Path) -> Any:
    for name in path:
        obj = obj.get(name) if isinstance(obj, dict) else None
    return obj


def _put(obj: Object, path: Path, value: Any) -> None:
    for name in path[:-1]:
        if not isinstance(obj.get(name), dict):
            obj[name] = {}
        obj = obj[name]
    obj[path[-1]] = value


def _remove(obj: Object, path: Path) -> None:
    """Take the field away, and the maps it leaves empty."""
    parents = [obj]
    for name in path[:-1]:
        child = parents[-1].get(name)
        if not isinstance(child, dict):
            return
        parents.append(child)
    parents[-1].pop(path[-1], None)
    for depth in range(len(path) - 1, 0, -1):
        if parents[depth]:
            break
        parents[depth - 1].pop(path[depth - 1], None)


def _not_found(key: Key) -> ApiError:
    group = key[0].rpartition("/")[0]
    what = f"{key[1]}.{group}" if group else key[1]
    return ApiError(404, "NotFound", f'{what} "{key[3]}" not found')


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class StandIn:
    """The HTTP server over a `Store`. Use `running()`; `url` is what the client's host is."""

    def __init__(self) -> None:
        self.store = Store()
        self.requests: list[Request] = []
        #: Called with (method, key) before each request is handled, under no lock: a test can
        #: write to the store here to make a client's next write stale.
        self.before: Callable[[str, Key], None] | None = None
        #: How often an idle watch with allowWatchBookmarks=true gets a BOOKMARK event.
        self.bookmark_seconds = 0.5
        #: Answer a watch from a compacted resourceVersion with HTTP 410 instead of an ERROR event.
        self.gone_as_http = False
        #: A watch without timeoutSeconds ends after this long (the API server picks 30-60 min).
        self.max_watch_seconds = 300.0
        #: Group/versions the cluster does not serve (a CRD not installed, e.g. "kubevirt.io/v1"):
        #: every path under them is 404 NotFound, as the API server answers an unknown resource.
        self.missing: set[str] = set()
        self._server: ThreadingHTTPServer | None = None
        self._watches: set[_Handler] = set()
        self._closing = False

    @property
    def url(self) -> str:
        assert self._server is not None, "not running"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def put_object(self, obj: Object) -> Object:
        """Create an object directly in the store (test set-up), from its apiVersion and kind."""
        spec = next(s for s in RESOURCES.values() if s.kind == obj["kind"])
        meta = obj["metadata"]
        key = (spec.group_version, spec.resource, meta.get("namespace", ""), meta["name"])
        return self.store.create(key, obj)

    def get_object(self, group_version: str, resource: str, namespace: str, name: str) -> Object:
        return self.store.get((group_version, resource, namespace, name))

    def replace_object(self, obj: Object) -> Object:
        """Replace an object unconditionally (test set-up): a MODIFIED event for watches."""
        obj = copy.deepcopy(obj)
        meta = obj["metadata"]
        meta.pop("resourceVersion", None)
        return self.store.update(_key_of(obj), obj)

    def delete_object(self, obj: Object) -> Object:
        return self.store.delete(_key_of(obj))

    def compact(self) -> int:
        """Compact the history: watches from an older resourceVersion now get 410 Gone."""
        return self.store.compact()

    @property
    def open_watches(self) -> int:
        with self.store.lock:
            return len(self._watches)

    def drop_watches(self) -> int:
        """Cut every open watch connection mid-stream; returns how many were cut."""
        with self.store.changed:
            dropped = len(self._watches)
            for handler in self._watches:
                handler.dropped = True
            self.store.changed.notify_all()
            return dropped

    @contextmanager
    def running(self) -> Iterator[StandIn]:
        stand_in = self

        class Handler(_Handler):
            owner = stand_in

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="kube-standin"
        )
        thread.start()
        try:
            yield self
        finally:
            with self.store.changed:
                self._closing = True
                self.store.changed.notify_all()
            self._server.shutdown()
            self._server.server_close()
            thread.join(timeout=10)


def write_kubeconfig(path: Any, url: str) -> str:
    """A kubeconfig for the stand-in (plain http, a dummy token), as `--kubeconfig` takes it."""
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "stand-in", "cluster": {"server": url}}],
        "users": [{"name": "test", "user": {"token": "stand-in"}}],
        "contexts": [{"name": "stand-in", "context": {"cluster": "stand-in", "user": "test"}}],
        "current-context": "stand-in",
    }
    with open(path, "w", encoding="utf-8") as file:
        json.dump(document, file)  # JSON is YAML
    return str(path)


def node_object(
    name: str,
    *,
    ready: str = "True",
    kvm: str | None = "110",
    tun: str | None = "110",
    kvm_allocatable: str | None = None,
    labels: dict[str, str] | None = None,
    taints: list[Object] | None = None,
    unschedulable: bool = False,
) -> Object:
    """A Node as the kubelet reports it, with virtdev's devices (None: not advertised)."""
    capacity: dict[str, str] = {"cpu": "4", "memory": "8Gi", "pods": "110"}
    allocatable = dict(capacity)
    for device, amount in (("kvm", kvm), ("tun", tun)):
        if amount is not None:
            capacity[f"devices.kubevirt.io/{device}"] = amount
            allocatable[f"devices.kubevirt.io/{device}"] = amount
    if kvm_allocatable is not None:
        allocatable["devices.kubevirt.io/kvm"] = kvm_allocatable
    spec: Object = {"taints": taints or []}
    if unschedulable:
        spec["unschedulable"] = True
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            # virt-handler labels the nodes it runs on; every KubeVirt launcher selects them.
            "labels": {
                "kubernetes.io/hostname": name,
                "kubevirt.io/schedulable": "true",
                **(labels or {}),
            },
        },
        "spec": spec,
        "status": {
            "capacity": capacity,
            "allocatable": allocatable,
            "conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": ready, "reason": "KubeletReady"},
            ],
        },
    }


_EXPIRED_CONTINUE = (
    "The provided continue parameter is too old to display a consistent list result. You can "
    "start a new list without the continue parameter."
)


def _as_selected(event: Event, labels: str, fields: str) -> Event | None:
    """The event a selecting watch sends, as the API server's watch cache does: an object that
    starts matching is ADDED, one that stops matching DELETED (its previous content at the
    event's resourceVersion), one that never matched nothing."""
    passes = selected(event.object, labels, fields)
    if event.type != "MODIFIED" or event.old is None:
        return event if passes else None
    passed = selected(event.old, labels, fields)
    if passes:
        return event if passed else Event(event.resource_version, "ADDED", event.key, event.object)
    if not passed:
        return None
    old = copy.deepcopy(event.old)
    old["metadata"]["resourceVersion"] = str(event.resource_version)
    return Event(event.resource_version, "DELETED", event.key, old)


def _key_of(obj: Object) -> Key:
    spec = next(s for s in RESOURCES.values() if s.kind == obj["kind"])
    meta = obj["metadata"]
    return (spec.group_version, spec.resource, meta.get("namespace", ""), meta["name"])


def _field(obj: Any, dotted: str) -> str:
    for part in dotted.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return "" if obj is None else str(obj)


def selected(obj: Object, label_selector: str, field_selector: str) -> bool:
    """Equality-based selectors: `k=v`, `k==v`, `k!=v`, and for labels a bare `k` (exists)."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in filter(None, (t.strip() for t in label_selector.split(","))):
        key, op, value = re.split(r"(!=|==|=)", term, maxsplit=1) if "=" in term else (term, "", "")
        if op == "" and key not in labels:
            return False
        if op in ("=", "==") and labels.get(key) != value:
            return False
        if op == "!=" and labels.get(key) == value:
            return False
    for term in filter(None, (t.strip() for t in field_selector.split(","))):
        key, op, value = re.split(r"(!=|==|=)", term, maxsplit=1)
        if (op == "!=") == (_field(obj, key) == value):
            return False
    return True


class _Handler(BaseHTTPRequestHandler):
    owner: StandIn
    protocol_version = "HTTP/1.1"
    dropped = False

    def log_message(self, format: str, *args: Any) -> None:  # quiet: pytest shows failures
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        path = urlsplit(self.path).path
        query = urlsplit(self.path).query
        params = {k: v[-1] for k, v in parse_qs(query).items()}
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        key: Key = ("", "", "", "")
        try:
            key = self._route(path)
            if self.owner.before is not None:
                self.owner.before(method, key)
            if method == "GET" and not key[3] and params.get("watch", "").lower() in ("true", "1"):
                self.owner.requests.append(
                    Request(method, path, content_type, key[1], key[2], key[3], 200, query)
                )
                self._watch(key, params)
                return
            status, answer = self._serve(method, key, content_type, body, params)
        except ApiError as error:
            status, answer = error.code, _status(error, key)
        self.owner.requests.append(
            Request(method, path, content_type, key[1], key[2], key[3], status, query)
        )
        payload = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _route(self, path: str) -> Key:
        match = _PATH.match(path)
        if not match:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        group_version = match["core"] or f"{match['group']}/{match['version']}"
        resource = match["resource"]
        spec = RESOURCES.get((group_version, resource))
        if group_version in self.owner.missing:
            spec = None
        namespace = match["namespace"] or ""
        misplaced = namespace and not spec.namespaced if spec else False
        unscoped = spec is not None and spec.namespaced and not namespace and match["name"]
        if spec is None or misplaced or unscoped:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return (group_version, resource, namespace, match["name"] or "")

    def _serve(
        self,
        method: str,
        key: Key,
        content_type: str,
        body: bytes,
        params: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        store = self.owner.store
        gv, resource, namespace, name = key
        params = params or {}
        if not name:
            if method == "GET":
                labels, fields = params.get("labelSelector", ""), params.get("fieldSelector", "")
                try:
                    limit = max(int(params.get("limit") or 0), 0)
                except ValueError:
                    raise ApiError(400, "BadRequest", "limit: not a number") from None
                items, rv, token, remaining = store.page(
                    gv,
                    resource,
                    namespace,
                    limit=limit,
                    token=params.get("continue", ""),
                    keep=lambda obj: selected(obj, labels, fields),
                    count_remaining=not labels and not fields,
                )
                kind = RESOURCES[(gv, resource)].kind + "List"
                metadata: Object = {"resourceVersion": rv}
                if token:
                    metadata["continue"] = token
                if token and remaining:
                    metadata["remainingItemCount"] = remaining
                return 200, {"apiVersion": gv, "kind": kind, "metadata": metadata, "items": items}
            if method == "POST":
                obj = _json(body)
                name = (obj.get("metadata") or {}).get("name") or ""
                if not name:
                    raise ApiError(422, "Invalid", "metadata.name: Required value")
                return 201, store.create((gv, resource, namespace, name), obj)
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on a collection")
        if method == "GET":
            return 200, store.get(key)
        if method == "PUT":
            return 200, store.update(key, _json(body))
        if method == "DELETE":
            store.delete(key)
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        if method == "PATCH" and content_type == APPLY_PATCH:
            manager = params.get("fieldManager", "")
            if not manager:
                raise ApiError(400, "BadRequest", "fieldManager is required for apply patch")
            force = params.get("force", "").lower() in ("true", "1")
            applied = _yaml(body)
            if not isinstance(applied, dict):
                raise ApiError(400, "BadRequest", "an apply patch must be an object")
            kind = RESOURCES[(gv, resource)].kind
            if applied.get("apiVersion") != gv or applied.get("kind") != kind:
                raise ApiError(400, "BadRequest", f"apiVersion and kind must be {gv} {kind}")
            return store.apply(key, applied, manager, force=force)
        if method == "PATCH":
            with store.lock:  # read, patch and write as one step, as the API server retries
                current = store.get(key)
                patched = _apply_patch(current, content_type, body)
                precondition = (patched.get("metadata") or {}).get("resourceVersion")
                if precondition == current["metadata"]["resourceVersion"]:
                    precondition = None  # unchanged by the patch: no precondition
                meta = patched.setdefault("metadata", {})
                meta["resourceVersion"] = precondition or current["metadata"]["resourceVersion"]
                return 200, store.update(key, patched)
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported")

    # --- watch ----------------------------------------------------------------------------

    def _chunk(self, event: Object) -> None:
        data = json.dumps(event).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _watch(self, key: Key, params: dict[str, str]) -> None:
        """Stream events as chunked JSON lines until timeout, drop, shutdown or a gone client."""
        owner, store = self.owner, self.owner.store
        gv, resource, namespace, _ = key
        spec = RESOURCES[(gv, resource)]
        labels, fields = params.get("labelSelector", ""), params.get("fieldSelector", "")
        bookmarks = params.get("allowWatchBookmarks", "").lower() in ("true", "1")
        timeout = float(params.get("timeoutSeconds") or owner.max_watch_seconds)
        since_text = params.get("resourceVersion") or "0"
        self.close_connection = True
        with store.lock:
            initial: list[Object] = []
            if since_text == "0":
                items, listed_at = store.list(gv, resource, namespace)
                since = int(listed_at)
                initial = [{"type": "ADDED", "object": o} for o in items]
            else:
                since = int(since_text)
                try:
                    store.events_after(since, gv, resource)
                except Gone as gone:
                    if owner.gone_as_http:
                        error = ApiError(410, "Expired", str(gone))
                        payload = json.dumps(_status(error, key)).encode()
                        self.send_response(410)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(payload)))
                        self.end_headers()
                        self.wfile.write(payload)
                        return
                    error = ApiError(410, "Expired", str(gone))
                    initial = [{"type": "ERROR", "object": _status(error, key)}]
                    since = -1  # end after the error, as the API server does
            owner._watches.add(self)
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Connection", "close")
            self.end_headers()
            for event in initial:
                if event["type"] != "ADDED" or selected(event["object"], labels, fields):
                    self._chunk(event)
            if since < 0:
                self._end()
                return
            deadline = time.monotonic() + timeout
            next_bookmark = time.monotonic() + owner.bookmark_seconds
            while True:
                with store.changed:
                    while True:
                        if self.dropped or owner._closing:
                            break
                        try:
                            pending = store.events_after(since, gv, resource)
                        except Gone:
                            pending = []
                            since = store.resource_version  # compacted under a live watch: go on
                        sent = (_as_selected(e, labels, fields) for e in pending)
                        pending = [
                            e
                            for e in sent
                            if e is not None and (not namespace or e.key[2] == namespace)
                        ]
                        now = time.monotonic()
                        if pending or now >= deadline or (bookmarks and now >= next_bookmark):
                            break
                        wake = min(deadline, next_bookmark if bookmarks else deadline)
                        store.changed.wait(timeout=max(0.01, min(wake - now, 0.5)))
                    current = store.resource_version
                if self.dropped:
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if owner._closing:
                    self._end()
                    return
                for change in pending:
                    self._chunk({"type": change.type, "object": change.object})
                    since = change.resource_version
                now = time.monotonic()
                if now >= deadline:
                    self._end()
                    return
                if bookmarks and now >= next_bookmark and not pending:
                    since = max(since, current)
                    meta = {"resourceVersion": str(since)}
                    self._chunk(
                        {
                            "type": "BOOKMARK",
                            "object": {"apiVersion": gv, "kind": spec.kind, "metadata": meta},
                        }
                    )
                    next_bookmark = now + owner.bookmark_seconds
        except OSError:  # the client went away
            return
        finally:
            with store.lock:
                owner._watches.discard(self)

    def _end(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def _apply_patch(current: Object, content_type: str, body: bytes) -> Object:
    document = _json(body)
    if content_type == "application/merge-patch+json":
        if not isinstance(document, dict):
            raise ApiError(400, "BadRequest", "a merge patch must be a JSON object")
        result = merge_patch(current, document)
        assert isinstance(result, dict)
        return result
    if content_type == "application/json-patch+json":
        if not isinstance(document, list):
            raise ApiError(400, "BadRequest", "a JSON patch must be a JSON array")
        try:
            result = jsonpatch.apply_patch(current, document)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as error:
            raise ApiError(422, "Invalid", f"the JSON patch cannot be applied: {error}") from None
        assert isinstance(result, dict)
        return result
    raise ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format: {content_type}",
    )


APPLY_PATCH = "application/apply-patch+yaml"


def _yaml(body: bytes) -> Any:
    """An apply patch: YAML, of which JSON is a part (the `kubernetes` client sends JSON)."""
    try:
        return json.loads(body or b"null")
    except ValueError:
        pass
    try:
        return yaml.safe_load(body)
    except yaml.YAMLError as error:
        raise ApiError(400, "BadRequest", f"the request body is not YAML: {error}") from None


def _json(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError as error:
        raise ApiError(400, "BadRequest", f"the request body is not JSON: {error}") from None


def _status(error: ApiError, key: Key) -> Object:
    details: Object = {"name": key[3], "kind": key[1]}
    group = key[0].rpartition("/")[0]
    if group:
        details["group"] = group
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": error.message,
        "reason": error.reason,
        "details": details,
        "code": error.code,
    }
