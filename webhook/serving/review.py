"""AdmissionReview on the wire: read a request body, write the response the API server expects.

Both `admission.k8s.io/v1` and `v1beta1` are read, and the answer is written in the version of
the request with its `uid` echoed: a wrong uid, apiVersion or kind is a call failure for the API
server. Anything that is not a well-formed review raises `BadInput` with the JSON path at fault.

What is rendered is bounded whatever the rules found: the status message, each audit annotation
and the warnings are cut to fixed sizes (ending in `…`, or "and N more"), so a denial of a pod
with a million violations is a few KiB like any other (was: 1.13 MB for 10,000 capabilities).
Only a patch grows with the pod, as it must to be applied.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

from virtdev import catalogue
from webhook.admission import Request
from webhook.rules.answer import MAX_WARNING, Answer, fit_warning
from webhook.rules.shapes import BadInput, type_name

API_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")
#: Warnings in one answer at most, the last of them saying how many more there were.
MAX_WARNINGS = 16
#: A denial's message (what kubectl prints), and a 400's message and path.
MAX_MESSAGE_BYTES = 4096
#: Each audit annotation's value, and how many annotations one answer carries.
MAX_AUDIT_VALUE_BYTES = 1024
MAX_AUDIT_ANNOTATIONS = 8
OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT")


def fit_text(text: str, limit: int) -> str:
    """`text` within `limit` UTF-8 bytes: longer ones are cut (never inside a character),
    ending in `…`."""
    if len(text) * 4 <= limit:  # the common case, without encoding: at most 4 bytes a char
        return text
    encoded = text.encode("utf-8", "surrogatepass")
    if len(encoded) <= limit:
        return text
    return encoded[: limit - 3].decode("utf-8", "ignore") + "…"


def fit_warnings(warnings: list[str]) -> list[str]:
    """At most `MAX_WARNINGS`, each within the API server's limit; the last one says how many
    were left out."""
    if len(warnings) <= MAX_WARNINGS:
        return [fit_warning(text) for text in warnings]
    kept = [fit_warning(text) for text in warnings[: MAX_WARNINGS - 1]]
    return [*kept, f"and {len(warnings) - len(kept)} more warnings"]


def fit_annotations(annotations: dict[str, str]) -> dict[str, str]:
    """At most `MAX_AUDIT_ANNOTATIONS` annotations, each value cut to `MAX_AUDIT_VALUE_BYTES`."""
    items = list(annotations.items())[:MAX_AUDIT_ANNOTATIONS]
    return {key[:MAX_WARNING]: fit_text(value, MAX_AUDIT_VALUE_BYTES) for key, value in items}


def _field(mapping: dict[str, Any], key: str, path: str, kind: type, *, required: bool) -> Any:
    value = mapping.get(key)
    if type(value) is kind:  # the common case at once: orjson gives exact types, never subclasses
        return value
    if value is None:
        if required:
            raise BadInput(f"{path}.{key}", "required field is missing")
        return None
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        expected = "an object" if kind is dict else "a string"
        raise BadInput(f"{path}.{key}", f"expected {expected}, got {type_name(value)}")
    return value


def decode(body: bytes) -> Any:
    if not body or body.isspace():
        raise BadInput("$", "empty body: expected an AdmissionReview JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise BadInput("$", f"malformed JSON: {error}") from None


def parse(body: bytes) -> Request:
    """Read an AdmissionReview request; raise BadInput naming the path of what is wrong."""
    review = decode(body)
    if not isinstance(review, dict):
        raise BadInput("$", f"expected an AdmissionReview object, got {type_name(review)}")
    api_version = _field(review, "apiVersion", "$", str, required=True)
    if api_version not in API_VERSIONS:
        raise BadInput(
            "$.apiVersion", f"{api_version[:64]!r} is not one of {', '.join(API_VERSIONS)}"
        )
    kind = _field(review, "kind", "$", str, required=True)
    if kind != "AdmissionReview":
        raise BadInput("$.kind", f"expected 'AdmissionReview', got {kind[:64]!r}")
    request = _field(review, "request", "$", dict, required=True)
    path = "$.request"
    uid = _field(request, "uid", path, str, required=True)
    if not uid:
        raise BadInput(f"{path}.uid", "must not be empty")
    operation = _field(request, "operation", path, str, required=True)
    if operation not in OPERATIONS:
        raise BadInput(
            f"{path}.operation", f"{operation[:32]!r} is not one of {', '.join(OPERATIONS)}"
        )
    object_kind = _field(request, "kind", path, dict, required=True)
    resource = _field(request, "resource", path, dict, required=False) or {}
    user_info = _field(request, "userInfo", path, dict, required=False) or {}
    return Request(
        api_version=api_version,
        uid=uid,
        kind=_field(object_kind, "kind", f"{path}.kind", str, required=True),
        resource=_field(resource, "resource", f"{path}.resource", str, required=False) or "",
        sub_resource=_field(request, "subResource", path, str, required=False) or "",
        operation=operation,
        namespace=_field(request, "namespace", path, str, required=False) or "",
        name=_field(request, "name", path, str, required=False) or "",
        object=_field(request, "object", path, dict, required=False),
        old_object=_field(request, "oldObject", path, dict, required=False),
        username=_field(user_info, "username", f"{path}.userInfo", str, required=False) or "",
    )


def render(request: Request, answer: Answer) -> dict[str, Any]:
    """The AdmissionReview reply; a patch only when there is one, a status only on denial; all
    but the patch bounded in size."""
    response: dict[str, Any] = {"uid": request.uid, "allowed": answer.allowed}
    if answer.patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(orjson.dumps(answer.patch)).decode()
    if answer.warnings:
        response["warnings"] = fit_warnings(answer.warnings)
    if answer.status_code is not None:
        reason = "Forbidden" if answer.status_code == 403 else "BadRequest"
        response["status"] = {
            "code": answer.status_code,
            "reason": reason,
            "message": fit_text(answer.message, MAX_MESSAGE_BYTES),
        }
    if answer.audit_annotations:
        response["auditAnnotations"] = fit_annotations(answer.audit_annotations)
    return {"apiVersion": request.api_version, "kind": "AdmissionReview", "response": response}


# --- a Pod as the API server would send it (`virtdev mutate`, `validate`, `audit`) ------------


def _as_json(document: Any) -> bytes:
    """YAML allows what JSON does not (`1: x`, dates); the webhook only ever sees JSON."""
    try:
        return orjson.dumps(document)
    except TypeError as error:
        raise BadInput("$", f"not representable as JSON: {error}") from None


def as_request(document: Any, username: str = catalogue.KUBEVIRT_CONTROLLERS[0]) -> Request:
    """A Pod becomes the CREATE review the API server would send when `username` creates it
    (KubeVirt's controller by default: "what does KubeVirt's pod get"); a review is read as is,
    its requester included."""
    if isinstance(document, dict) and document.get("kind") == "AdmissionReview":
        return parse(_as_json(document))
    return parse(_as_json(create_review(document, username)))


def create_review(pod: Any, username: str = catalogue.KUBEVIRT_CONTROLLERS[0]) -> dict[str, Any]:
    """The AdmissionReview the API server sends /validate and /mutate when `username` creates
    `pod`."""
    if not isinstance(pod, dict) or pod.get("kind", "Pod") != "Pod":
        raise BadInput("$.kind", "expected a Pod or an AdmissionReview")
    metadata = pod.get("metadata") if isinstance(pod.get("metadata"), dict) else {}
    namespace = (metadata or {}).get("namespace")
    return {
        "apiVersion": API_VERSIONS[0],
        "kind": "AdmissionReview",
        "request": {
            "uid": "offline",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE",
            "userInfo": {"username": username},
            "namespace": namespace if isinstance(namespace, str) else "",
            "object": pod,
        },
    }
