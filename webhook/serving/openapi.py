"""The OpenAPI description of /mutate, /validate and /guard.

The endpoints are plain ASGI (see `webhook.serving.endpoint`) and read the raw body, so FastAPI can
neither route nor infer them; without this the published spec would say nothing and API tools
(schemathesis, client generators) would have nothing to work from. The object under admission
is described from `webhook.rules.shapes`' shapes, so the two cannot drift; the envelope
mirrors `webhook.serving.review`'s reading of it. Fields virtdev does not read are free-form.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from virtdev import catalogue
from webhook.rules import shapes
from webhook.serving.review import API_VERSIONS, OPERATIONS

#: How JSON calls the Python types of `shapes`' shapes.
_JSON_TYPES = {str: "string", bool: "boolean", int: "integer", float: "number"}


def from_shape(shape: shapes.Shape) -> dict[str, Any]:
    """The OpenAPI schema of the non-null values `shapes.check` accepts for `shape`.

    An object's fields may be null (null counts as absent) and others than those named may be
    present (virtdev does not read them); a list's items and a map's values may not be null.
    """
    if isinstance(shape, shapes.ListOf):
        return {"type": "array", "items": from_shape(shape.item)}
    if isinstance(shape, shapes.MapOf):
        return {"type": "object", "additionalProperties": from_shape(shape.value)}
    if isinstance(shape, Mapping):
        fields = {key: {**from_shape(field), "nullable": True} for key, field in shape.items()}
        return {"type": "object", "properties": fields}
    names = dict.fromkeys(
        _JSON_TYPES[kind] for kind in (shape if isinstance(shape, tuple) else (shape,))
    )
    if "number" in names:  # a number may be an integer: say it once, so oneOf stays exclusive
        names.pop("integer", None)
    if len(names) == 1:
        return {"type": next(iter(names))}
    return {"oneOf": [{"type": name} for name in names]}


#: The object under admission, as `webhook.admission` checks it before any rule runs.
_OBJECT = {
    **from_shape(
        {
            "metadata": shapes.METADATA,
            "spec": shapes.POD_SPEC,
            "ephemeralContainers": shapes.CONTAINERS,
        }
    ),
    "nullable": True,
    "description": "The Pod (or, before Kubernetes 1.22, EphemeralContainers) under admission.",
}
_GROUP_VERSION_KIND = {
    "type": "object",
    "required": ["kind"],
    "properties": {
        "group": {"type": "string"},
        "version": {"type": "string"},
        "kind": {"type": "string"},
    },
}
ADMISSION_REVIEW_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "request"],
    "properties": {
        "apiVersion": {"type": "string", "enum": list(API_VERSIONS)},
        "kind": {"type": "string", "enum": ["AdmissionReview"]},
        "request": {
            "type": "object",
            "required": ["uid", "kind", "operation"],
            "properties": {
                "uid": {"type": "string", "minLength": 1},
                "kind": _GROUP_VERSION_KIND,
                "resource": {
                    "type": "object",
                    "nullable": True,
                    "properties": {"resource": {"type": "string"}},
                },
                "subResource": {"type": "string", "nullable": True},
                "name": {"type": "string", "nullable": True},
                "namespace": {"type": "string", "nullable": True},
                "operation": {"type": "string", "enum": list(OPERATIONS)},
                "object": _OBJECT,
                "oldObject": _OBJECT,
                "dryRun": {"type": "boolean", "nullable": True},
            },
        },
    },
}
ADMISSION_REVIEW_RESPONSE: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "response"],
    "properties": {
        "apiVersion": {"type": "string", "enum": list(API_VERSIONS)},
        "kind": {"type": "string", "enum": ["AdmissionReview"]},
        "response": {
            "type": "object",
            "required": ["uid", "allowed"],
            "properties": {
                "uid": {"type": "string"},
                "allowed": {"type": "boolean"},
                "patchType": {"type": "string", "enum": ["JSONPatch"]},
                "patch": {"type": "string", "format": "byte"},
                "warnings": {"type": "array", "items": {"type": "string", "maxLength": 120}},
                "auditAnnotations": {"type": "object", "additionalProperties": {"type": "string"}},
                "status": {
                    "type": "object",
                    "properties": {
                        "code": {"type": "integer"},
                        "reason": {"type": "string"},
                        "message": {"type": "string"},
                    },
                },
            },
        },
    },
}
STATUS: dict[str, Any] = {
    "type": "object",
    "required": ["kind", "code", "message"],
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string", "enum": ["Status"]},
        "status": {"type": "string"},
        "code": {"type": "integer"},
        "reason": {"type": "string"},
        "message": {"type": "string"},
        "details": {"type": "object"},
    },
}


def _openapi_31(schema: Any) -> Any:
    """Write `nullable: true` (readable above) as OpenAPI 3.1 says it: a `null` type."""
    if isinstance(schema, list):
        return [_openapi_31(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {key: _openapi_31(value) for key, value in schema.items() if key != "nullable"}
    if schema.get("nullable"):
        if "type" in converted:
            converted["type"] = [converted["type"], "null"]
        else:
            converted = {"anyOf": [converted, {"type": "null"}]}
    return converted


def _status(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": STATUS}}}


def admission_paths() -> dict[str, Any]:
    """The `paths` entries of the admission endpoints (served outside FastAPI's routing)."""
    return {
        catalogue.MUTATE_PATH: {
            "post": {
                "summary": "Mutating admission: make launcher pods request their devices",
                "operationId": "mutate",
                **_endpoint_spec(),
            }
        },
        catalogue.VALIDATE_PATH: {
            "post": {
                "summary": "Validating admission: Pod Security baseline plus the launcher's "
                "KubeVirt release exceptions",
                "operationId": "validate",
                **_endpoint_spec(),
            }
        },
        catalogue.GUARD_PATH: {
            "post": {
                "summary": "Validating admission: Pod Security baseline for every pod of a "
                "guarded namespace (launchers as /validate judges them)",
                "operationId": "guard",
                **_endpoint_spec(),
            }
        },
    }


def _endpoint_spec() -> dict[str, Any]:
    spec = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ADMISSION_REVIEW_REQUEST}},
        },
        "responses": {
            "200": {
                "description": "The AdmissionReview answer, in the request's apiVersion",
                "content": {"application/json": {"schema": ADMISSION_REVIEW_RESPONSE}},
            },
            "400": _status("Bad input; details.causes[0].field is the JSON path at fault"),
            "413": _status("The body is larger than --max-body-bytes"),
            "500": _status("A bug in virtdev; see its logs"),
        },
    }
    return _openapi_31(spec)  # type: ignore[no-any-return]
