"""The published description of the object under admission is made from `shapes.py`'s shapes,
so what schemathesis generates from it is what the webhook checks, field for field."""

from __future__ import annotations

from typing import Any

from webhook.rules import shapes
from webhook.serving.openapi import admission_paths, from_shape


def published_object(path: str) -> dict[str, Any]:
    body = admission_paths()[path]["post"]["requestBody"]["content"]["application/json"]
    return body["schema"]["properties"]["request"]["properties"]["object"]  # type: ignore[no-any-return]


def test_scalars_lists_maps_and_objects_are_described_as_schema_checks_them() -> None:
    assert from_shape(str) == {"type": "string"}
    assert from_shape(int) == {"type": "integer"}
    # A quantity is a string or any number: "integer" would make oneOf match twice.
    assert from_shape(shapes.QUANTITY) == {"oneOf": [{"type": "string"}, {"type": "number"}]}
    assert from_shape(shapes.ListOf(str)) == {"type": "array", "items": {"type": "string"}}
    assert from_shape(shapes.MapOf(bool)) == {
        "type": "object",
        "additionalProperties": {"type": "boolean"},
    }
    # Null is an absent field, never a list item or a map value.
    assert from_shape({"a": shapes.ListOf(str)}) == {
        "type": "object",
        "properties": {"a": {"type": "array", "items": {"type": "string"}, "nullable": True}},
    }


def test_every_field_schema_checks_is_published_with_its_type() -> None:
    obj = published_object("/mutate")
    assert obj["type"] == ["object", "null"]
    spec = obj["properties"]["spec"]["properties"]
    assert set(spec) == set(shapes.POD_SPEC)
    container = spec["containers"]["items"]["properties"]
    assert set(container) == set(shapes.CONTAINER)
    assert container["ports"]["items"]["properties"]["hostPort"] == {"type": ["integer", "null"]}
    assert set(obj["properties"]["metadata"]["properties"]) == set(shapes.METADATA)
    assert published_object("/validate") == published_object("/guard") == obj
