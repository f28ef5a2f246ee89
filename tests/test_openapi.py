"""Tests of aivp_batch.openapi against the 32 real fal OpenAPI documents of the bundled snapshot:
input lookup, payload validation and its messages, unknown keys, OpenAPI 3.0 quirks."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import fal_document

from aivp_batch.openapi import EndpointSchema, SchemaIssue
from aivp_batch.snapshot import Snapshot

ENDPOINTS = Snapshot().endpoints()

KLING_V3_I2V = "fal-ai/kling-video/v3/pro/image-to-video"
KLING_V3_T2V = "fal-ai/kling-video/v3/pro/text-to-video"
VEO = "fal-ai/veo3.1"
HAILUO_T2V = "fal-ai/minimax/hailuo-02/standard/text-to-video"  # prompt maxLength 2000


def schema_of(endpoint_id: str) -> EndpointSchema:
    """The endpoint's schema, from its bundled document."""
    return EndpointSchema(endpoint_id, fal_document(endpoint_id))


def _minimal_payload(schema: EndpointSchema) -> dict:
    """Required fields filled from their default, first choice, or a sample of their type (the
    snapshot carries no `examples`: they are prose)."""
    return {name: _sample(schema, name) for name in schema.required}


def _sample(schema: EndpointSchema, field: str) -> object:
    node = schema.field_schema(field) or {}
    if "default" in node:
        return node["default"]
    if schema.allowed_values(field):
        return schema.allowed_values(field)[0]
    kind = next((b.get("type") for b in schema._branches(node) if b.get("type") not in (None, "null")), None)
    if kind == "array":
        item = schema.field_schema(field + "[0]") or {}
        needed = list(item.get("required") or [])
        value = (
            {k: _sample(schema, f"{field}[0].{k}") for k in needed}
            if needed
            else _sample(schema, field + "[0]")
        )
        return [value] * max(1, int(node.get("minItems", 1)))
    if kind == "object":
        return {k: _sample(schema, f"{field}.{k}") for k in node.get("required") or []}
    if kind in ("integer", "number"):
        return node.get("minimum", 1)
    return (
        "https://example.com/a.png"
        if field.endswith("url") or "url" in field.rsplit(".", 1)[-1]
        else "a test"
    )


# ---------------------------------------------------------------- all 32 documents


def test_bundled_documents_are_all_there() -> None:
    assert len(ENDPOINTS) == 32


@pytest.mark.parametrize("endpoint_id", ENDPOINTS)
def test_every_document_loads_and_a_minimal_payload_validates(endpoint_id: str) -> None:
    schema = schema_of(endpoint_id)
    body = schema.document["paths"]["/" + endpoint_id]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["$ref"].endswith("/" + schema.input_name)
    assert schema.input_name.endswith("Input")
    assert schema.properties and "properties" in schema.input_schema
    payload = _minimal_payload(schema)
    assert schema.validate(payload) == []
    assert schema.unknown_keys(payload) == []
    assert schema.missing_refs == []


# ---------------------------------------------------------------- validation messages


def test_kling_duration_outside_its_enum_lists_the_allowed_values() -> None:
    schema = schema_of(KLING_V3_I2V)
    issues = schema.validate({"start_image_url": "https://x/a.png", "duration": "2"})
    assert len(issues) == 1
    issue = issues[0]
    assert issue.path == "duration"
    assert issue.allowed == [str(n) for n in range(3, 16)]
    assert issue.message.startswith("'2' is not one of '3', '4', '5'")
    assert str(issue).startswith("duration: '2' is not one of")


def test_kling_duration_as_integer_is_rejected() -> None:
    issues = schema_of(KLING_V3_I2V).validate({"start_image_url": "https://x/a.png", "duration": 5})
    assert issues and {i.path for i in issues} == {"duration"}
    assert any("not of type 'string'" in i.message for i in issues)
    assert all(i.allowed and "5" in i.allowed for i in issues)


def test_veo_duration_needs_its_unit() -> None:
    schema = schema_of(VEO)
    [issue] = schema.validate({"prompt": "a cat", "duration": "5s"})
    assert issue.path == "duration"
    assert issue.allowed == ["4s", "6s", "8s"]
    assert issue.message == "'5s' is not one of '4s', '6s', '8s'"
    assert schema.validate({"prompt": "a cat", "duration": "6s"}) == []


def test_null_is_accepted_where_the_schema_allows_it() -> None:
    assert schema_of(VEO).validate({"prompt": "a cat", "seed": None}) == []
    payload = {"start_image_url": "https://x/a.png", "end_image_url": None, "elements": None}
    assert schema_of(KLING_V3_I2V).validate(payload) == []


def test_anyof_failures_name_the_real_field_and_problem() -> None:
    [seed] = schema_of(VEO).validate({"prompt": "a cat", "seed": "abc"})
    assert seed.path == "seed" and seed.message == "'abc' is not of type 'integer'"
    shots = [{"prompt": "a", "duration": "5"}, {"prompt": "b", "duration": "20"}]
    payload = {"prompt": None, "multi_prompt": shots}
    [issue] = schema_of(KLING_V3_T2V).validate(payload)
    assert issue.path == "multi_prompt[1].duration"
    assert issue.allowed == [str(n) for n in range(1, 16)]
    assert "'20' is not one of '1', '2'" in issue.message
    assert "any of the given schemas" not in issue.message


def test_missing_required_field_is_named_by_its_path() -> None:
    issues = schema_of(KLING_V3_I2V).validate({"prompt": "a"})
    assert [i.path for i in issues] == ["start_image_url"]
    [nested] = schema_of(KLING_V3_T2V).validate({"multi_prompt": [{"duration": "5"}]})
    assert nested.path == "multi_prompt[0].prompt"


def test_paths_in_payload_validate_as_strings(tmp_path: Path) -> None:
    # Payloads are planned with local files before upload; a Path is sent as a string later.
    assert schema_of(KLING_V3_I2V).validate({"start_image_url": tmp_path / "a.png"}) == []


def test_lookups() -> None:
    schema = schema_of(KLING_V3_I2V)
    assert schema.required == ["start_image_url"]
    assert "multi_prompt" in schema.properties and "multi_shot_prompts" not in schema.properties
    assert schema.allowed_values("duration") == [str(n) for n in range(3, 16)]
    assert schema.allowed_values("shot_type") == ["customize", "intelligent"]
    assert schema.allowed_values("prompt") is None
    assert schema.allowed_values("no_such_field") is None
    assert schema_of("fal-ai/veo3.1/reference-to-video").allowed_values("duration") == ["8s"]  # a const
    assert schema_of("fal-ai/sora-2/text-to-video/pro").allowed_values("duration") == [4, 8, 12, 16, 20]


# ---------------------------------------------------------------- unknown keys


def test_upstream_wrong_kling_field_names_are_unknown_keys() -> None:
    schema = schema_of(KLING_V3_I2V)
    wrong = {
        "start_image_url": "https://x/a.png",
        "multi_shot_prompts": [{"prompt": "a", "duration": "5"}],
        "elements": [{"image_url": "https://x/c.png", "description": "the hero"}],
    }
    # JSON Schema alone accepts it (no additionalProperties: false): that is why unknown_keys exists.
    assert schema.validate(wrong) == []
    expected = ["multi_shot_prompts", "elements[0].image_url", "elements[0].description"]
    assert schema.unknown_keys(wrong) == expected
    right = {
        "start_image_url": "https://x/a.png",
        "multi_prompt": [{"prompt": "a", "duration": "5"}, {"prompt": "b", "foo": 1}],
        "elements": [{"frontal_image_url": "https://x/c.png", "reference_image_urls": ["https://x/d.png"]}],
    }
    assert schema.unknown_keys(right) == ["multi_prompt[1].foo"]


def test_unknown_keys_on_endpoints_without_the_field() -> None:
    # Hailuo-02 pro has no duration: fal would silently ignore it.
    schema = schema_of("fal-ai/minimax/hailuo-02/pro/text-to-video")
    assert schema.unknown_keys({"prompt": "a", "duration": "6"}) == ["duration"]


# ---------------------------------------------------------------- synthetic documents


def _synthetic() -> dict:
    schemas = {
        "DrawInput": {
            "type": "object",
            "required": ["prompt"],
            "properties": {
                "prompt": {"type": "string"},
                "points": {"type": "array", "items": {"$ref": "#/components/schemas/TrackPoint"}},
                "style": {"type": "string", "enum": ["a", "b"], "nullable": True},
            },
        },
        "DrawOutput": {"type": "object", "properties": {"video": {"$ref": "#/components/schemas/File"}}},
    }
    return {"openapi": "3.0.4", "paths": {}, "components": {"schemas": schemas}}


def test_missing_ref_target_is_tolerated() -> None:
    # No `paths` entry either: the input schema is found as the one unreferenced `*Input`.
    schema = EndpointSchema("acme/draw", _synthetic())
    assert schema.input_name == "DrawInput"
    assert sorted(schema.missing_refs) == ["#/components/schemas/File", "#/components/schemas/TrackPoint"]
    assert schema.validate({"prompt": "p", "points": [{"x": 1}, 2]}) == []
    assert schema.unknown_keys({"prompt": "p", "points": [{"x": 1}]}) == []
    points = schema.document["components"]["schemas"]["DrawInput"]["properties"]["points"]
    assert points["items"] == {"$ref": "#/components/schemas/TrackPoint"}  # the document is left alone


def test_openapi30_nullable_also_accepts_null() -> None:
    schema = EndpointSchema("acme/draw", _synthetic())
    assert schema.validate({"prompt": "p", "style": None}) == []
    [issue] = schema.validate({"prompt": "p", "style": "c"})
    assert issue == SchemaIssue("style", "'c' is not one of 'a', 'b'", ["a", "b"])
    assert schema.allowed_values("style") == ["a", "b"]
    # The published document itself is left as it was.
    assert schema.document["components"]["schemas"]["DrawInput"]["properties"]["style"]["nullable"] is True


# ---------------------------------------------------------------- long values


def test_a_huge_prompt_is_not_echoed_whole() -> None:
    schema = EndpointSchema(HAILUO_T2V, fal_document(HAILUO_T2V))
    [issue] = schema.validate({"prompt": "a" * 10_000_000})
    assert issue.path == "prompt" and len(issue.message) <= 300
    assert issue.message.startswith("'aaaa") and issue.message.endswith("... is too long")


@pytest.mark.parametrize(
    "payload",
    [
        {"prompt": "a cat", "duration": "9" * 100_000},  # enum
        {"prompt": ["a" * 100_000]},  # type
        {"prompt": "a cat", "seed": "x" * 100_000},  # anyOf [integer, null]
    ],
)
def test_every_validation_message_is_short(payload: dict) -> None:
    issues = EndpointSchema(VEO, fal_document(VEO)).validate(payload)
    assert issues and all(len(i.message) <= 300 for i in issues), [len(i.message) for i in issues]
