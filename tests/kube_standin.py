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

What it does NOT cover: authentication and RBAC (tests assert the calls made instead, through
`requests`), watch, label and field selectors, pagination, strategic merge and server-side
apply, defaulting and schema validation beyond the above, admission, finalizers and
`deletionTimestamp`, `generation`, subresources, `dryRun`, protobuf, and TLS.

Extending it (e.g. nodes list/watch with bookmarks and 410 Gone) means adding a `Resource` and
handlers over the same store: every write is already numbered by `resource_version`.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import jsonpatch

Key = tuple[str, str, str, str]  # (group/version, resource, namespace, name)
Object = dict[str, Any]


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


RESOURCES: dict[tuple[str, str], Resource] = {
    (r.group_version, r.resource): r
    for r in (
        Resource("v1", "secrets", "Secret", True, _validate_secret),
        Resource("v1", "configmaps", "ConfigMap", True),
        Resource("v1", "nodes", "Node", False),
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


@dataclass
class Store:
    """Objects and the resourceVersion counter; every method is atomic under one lock."""

    objects: dict[Key, Object] = field(default_factory=dict)
    resource_version: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock)

    def _next(self) -> str:
        self.resource_version += 1
        return str(self.resource_version)

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
            self.objects[key] = obj
            return copy.deepcopy(obj)

    def delete(self, key: Key) -> Object:
        with self.lock:
            old = self.get(key)
            del self.objects[key]
            self._next()
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
        return obj


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
        self._server: ThreadingHTTPServer | None = None

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

    @contextmanager
    def running(self) -> Iterator[StandIn]:
        stand_in = self

        class Handler(_Handler):
            owner = stand_in

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        thread = threading.Thread(target=self._server.serve_forever, name="kube-standin")
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join(timeout=10)


class _Handler(BaseHTTPRequestHandler):
    owner: StandIn
    protocol_version = "HTTP/1.1"

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
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        key: Key = ("", "", "", "")
        try:
            key = self._route(path)
            if self.owner.before is not None:
                self.owner.before(method, key)
            status, answer = self._serve(method, key, content_type, body)
        except ApiError as error:
            status, answer = error.code, _status(error, key)
        self.owner.requests.append(
            Request(method, path, content_type, key[1], key[2], key[3], status)
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
        namespace = match["namespace"] or ""
        misplaced = namespace and not spec.namespaced if spec else False
        unscoped = spec is not None and spec.namespaced and not namespace and match["name"]
        if spec is None or misplaced or unscoped:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return (group_version, resource, namespace, match["name"] or "")

    def _serve(self, method: str, key: Key, content_type: str, body: bytes) -> tuple[int, Any]:
        store = self.owner.store
        gv, resource, namespace, name = key
        if not name:
            if method == "GET":
                items, rv = store.list(gv, resource, namespace)
                kind = RESOURCES[(gv, resource)].kind + "List"
                return 200, {
                    "apiVersion": gv,
                    "kind": kind,
                    "metadata": {"resourceVersion": rv},
                    "items": items,
                }
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
