"""Endpoint input schemas as OpenAPI documents: find the input, validate a payload, read a field.

fal publishes one OpenAPI 3.0.4 document per endpoint (Replicate's Cog documents are rooted the
same way, see aivp_batch.schema_sources). The documents mix 3.0 and 3.1 styles (`anyOf [X, {type:
null}]`, `examples` arrays), so they are validated with JSON Schema 2020-12. Two things JSON Schema
alone does not give us, and fal does not enforce loudly, are added here: unknown keys (fal ignores
them silently) and readable enum/anyOf messages. Where documents come from and how they are cached
is aivp_batch.schema_store; the `x-fal` limits of a file field, checked against a local file before
any upload, are aivp_batch.local_files.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

_SCHEMAS_PREFIX = "#/components/schemas/"
_MISSING = object()
MAX_MESSAGE_CHARS = 300  # a validation message quotes values shortened, and never runs longer


@dataclass(frozen=True)
class SchemaIssue:
    """One problem with a payload or a local file: where, what, and (for choices) what is allowed."""

    path: str
    message: str
    allowed: list | None = None

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


# ---------------------------------------------------------------- document helpers


def canonical_bytes(document: dict) -> bytes:
    """The bytes the sha256 is taken of: key order and whitespace do not change the hash."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def document_sha256(document: dict) -> str:
    return hashlib.sha256(canonical_bytes(document)).hexdigest()


def find_input_name(document: dict, endpoint_id: str) -> str | None:
    """The input component's name: from the POST request body, else the one unreferenced `*Input`."""
    schemas = _components(document)
    try:
        ref = document["paths"]["/" + endpoint_id]["post"]["requestBody"]["content"]["application/json"]
        name = ref["schema"]["$ref"].removeprefix(_SCHEMAS_PREFIX)
        if name in schemas:
            return name
    except (KeyError, TypeError, AttributeError):
        pass
    # Names are not derivable from the id (owners get dropped), so fall back to the shape:
    # sub-schemas like `KlingV3ComboElementInput` are referenced by the real input, it is not.
    referenced = {r.removeprefix(_SCHEMAS_PREFIX) for r in _iter_refs(schemas)}
    roots = [n for n in schemas if n.endswith("Input") and n not in referenced]
    return roots[0] if len(roots) == 1 else None


def _components(document: dict) -> dict:
    schemas = (document.get("components") or {}).get("schemas") if isinstance(document, dict) else None
    return schemas if isinstance(schemas, dict) else {}


def _iter_refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _iter_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _iter_refs(value)


def _openapi30_to_2020(node: Any) -> Any:
    """`nullable: true` (OpenAPI 3.0) becomes `anyOf [X, {type: null}]`, which 2020-12 understands."""
    if isinstance(node, list):
        return [_openapi30_to_2020(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _openapi30_to_2020(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") is True:
        return {"anyOf": [out, {"type": "null"}]}
    return out


def _drop_missing_refs(node: Any, root: dict, missing: list[str]) -> None:
    """A `$ref` to nothing would make every validation raise; treat it as `{}` (accept anything)."""
    if isinstance(node, list):
        for value in node:
            _drop_missing_refs(value, root, missing)
        return
    if not isinstance(node, dict):
        return
    ref = node.get("$ref")
    if isinstance(ref, str) and _pointer(root, ref) is _MISSING:
        missing.append(ref)
        del node["$ref"]
    for value in node.values():
        _drop_missing_refs(value, root, missing)


def _pointer(root: dict, ref: str) -> Any:
    """Resolve a local JSON pointer (`#/a/b`); anything else (remote refs) counts as missing."""
    if not ref.startswith("#"):
        return _MISSING
    node: Any = root
    for part in filter(None, ref[1:].split("/")):
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _jsonable(value: Any) -> Any:
    """Payloads planned before upload may hold Paths/tuples; validate them as the strings/lists sent."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _join(path: str, part: str | int) -> str:
    if isinstance(part, int):
        return f"{path}[{part}]"
    return f"{path}.{part}" if path else part


def _format_path(parts: Any) -> str:
    path = ""
    for part in parts:
        path = _join(path, part)
    return path


def _split_field(field: str) -> list[str | int]:
    """`elements[0].frontal_image_url` → ['elements', 0, 'frontal_image_url']."""
    parts: list[str | int] = []
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", field):
        parts.append(int(index) if index else name)
    return parts


# ---------------------------------------------------------------- EndpointSchema


class EndpointSchema:
    """One endpoint's OpenAPI document, its input schema, and a validator built once."""

    def __init__(
        self, endpoint_id: str, document: dict, sha256: str | None = None, source: str = "registered"
    ) -> None:
        self.endpoint_id = endpoint_id
        self.document = document
        self.sha256 = sha256 or document_sha256(document)
        self.source = source  # what the payloads were validated against: live, cache, bundled snapshot
        name = find_input_name(document, endpoint_id)
        if name is None:
            raise ValueError("no input schema found")
        self.input_name = name
        self.missing_refs: list[str] = []
        self._root = self._build_root(name)
        self.input_schema: dict = self._root["components"]["schemas"][name]
        self._validator = Draft202012Validator(self._root)

    def __repr__(self) -> str:
        return f"EndpointSchema({self.endpoint_id!r}, input={self.input_name!r}, sha256={self.sha256[:12]})"

    def _build_root(self, name: str) -> dict:
        # Work on a copy: `document` stays exactly what fal published (it is what sha256 names).
        schemas = _openapi30_to_2020(copy.deepcopy(_components(self.document)))
        root = {"$ref": _SCHEMAS_PREFIX + name, "components": {"schemas": schemas}}
        _drop_missing_refs(schemas, root, self.missing_refs)
        return root

    # -- lookups

    def _resolve(self, node: Any) -> dict:
        """Follow `$ref` chains (bounded, in case of a cycle)."""
        for _ in range(32):
            if not isinstance(node, dict) or "$ref" not in node:
                break
            target = _pointer(self._root, node["$ref"])
            node = {} if target is _MISSING else target
        return node if isinstance(node, dict) else {}

    def _branches(self, node: Any) -> list[dict]:
        """A schema and its anyOf/oneOf/allOf alternatives, flattened and resolved."""
        node = self._resolve(node)
        out = [node]
        for key in ("anyOf", "oneOf", "allOf"):
            for sub in node.get(key) or []:
                out.extend(self._branches(sub))
        return out

    @property
    def properties(self) -> list[str]:
        return list((self.input_schema.get("properties") or {}).keys())

    @property
    def required(self) -> list[str]:
        return list(self.input_schema.get("required") or [])

    def field_schema(self, field: str) -> dict | None:
        """The (resolved) schema of a field path like `duration` or `elements[0].video_url`."""
        node: dict | None = self.input_schema
        for part in _split_field(field):
            node = self._child(node, part)
            if node is None:
                return None
        return self._resolve(node)

    def _child(self, node: Any, part: str | int) -> dict | None:
        for branch in self._branches(node):
            if isinstance(part, int) and isinstance(branch.get("items"), dict):
                return branch["items"]
            if isinstance(part, str) and part in (branch.get("properties") or {}):
                return branch["properties"][part]
        # `image_urls.x` without an index: step through array items implicitly.
        for branch in self._branches(node):
            if isinstance(part, str) and isinstance(branch.get("items"), dict):
                return self._child(branch["items"], part)
        return None

    def allowed_values(self, field: str) -> list | None:
        """The enum/const choices of a field (through anyOf; null is not listed as a choice)."""
        schema = self.field_schema(field)
        if schema is None:
            return None
        values: list = []
        for branch in self._branches(schema):
            choices = branch["enum"] if "enum" in branch else [branch["const"]] if "const" in branch else []
            values.extend(v for v in choices if v is not None and v not in values)
        return values or None

    # -- payload checks

    def validate(self, payload: dict) -> list[SchemaIssue]:
        """Every schema violation of `payload`, one readable issue each."""
        errors = self._validator.iter_errors(_jsonable(payload))
        return [_issue(_dig(error)) for error in errors]

    def unknown_keys(self, payload: dict) -> list[str]:
        """Paths of keys the schema does not declare: fal would drop them without a word."""
        out: list[str] = []
        self._unknown(_jsonable(payload), self.input_schema, "", out)
        return out

    def _unknown(self, value: Any, schema: Any, path: str, out: list[str]) -> None:
        branches = self._branches(schema)
        if isinstance(value, dict):
            self._unknown_in_object(value, branches, path, out)
        elif isinstance(value, list):
            items = next((b["items"] for b in branches if isinstance(b.get("items"), dict)), None)
            for i, item in enumerate(value):
                if items is not None:
                    self._unknown(item, items, _join(path, i), out)

    def _unknown_in_object(self, value: dict, branches: list[dict], path: str, out: list[str]) -> None:
        props: dict = {}
        for branch in branches:
            props.update(branch.get("properties") or {})
        # An explicit open map (`additionalProperties: true` or a schema) declares any key.
        open_map = any(b.get("additionalProperties") not in (None, False) for b in branches)
        for key, item in value.items():
            if key in props:
                self._unknown(item, props[key], _join(path, key), out)
            elif props and not open_map:
                out.append(_join(path, key))


# ---------------------------------------------------------------- validation messages


def _is_null_branch(error: ValidationError) -> bool:
    return error.validator == "type" and error.validator_value == "null"


def _dig(error: ValidationError) -> ValidationError:
    """From an anyOf/oneOf error, walk down to the sub-error that names the real problem."""
    best = best_match([error])
    for _ in range(16):
        if not best.context:
            break
        # `X or null`: the null branch failing is never the interesting part.
        real = [e for e in best.context if not _is_null_branch(e)]
        nxt = best_match(real) if real else None
        if nxt is None or nxt is best:
            break
        best = nxt
    return best


def _issue(error: ValidationError) -> SchemaIssue:
    path = _format_path(error.absolute_path)
    if error.validator == "required":
        missing = _missing_property(error)
        return SchemaIssue(_join(path, missing), _clip(f"{missing!r} is required", None))
    allowed = _allowed_of(error)
    if error.validator in ("enum", "const") and allowed is not None:
        listed = ", ".join(repr(v) for v in allowed)
        return SchemaIssue(path, _clip(f"{_short(error.instance)} is not one of {listed}", None), allowed)
    if error.context:
        alternatives = "; ".join(dict.fromkeys(e.message for e in error.context if not _is_null_branch(e)))
        message = f"{_short(error.instance)} is not valid: {alternatives}"
        return SchemaIssue(path, _clip(message, error.instance), allowed)
    return SchemaIssue(path, _clip(error.message, error.instance), allowed)


def _missing_property(error: ValidationError) -> str:
    instance = error.instance if isinstance(error.instance, dict) else {}
    missing = [name for name in error.validator_value if name not in instance]
    return next((name for name in missing if repr(name) in error.message), missing[0] if missing else "?")


def _allowed_of(error: ValidationError) -> list | None:
    schema = error.schema if isinstance(error.schema, dict) else {}
    if "enum" in schema:
        return list(schema["enum"])
    if "const" in schema:
        return [schema["const"]]
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _clip(message: str, instance: Any) -> str:
    """A message that fits on a line: the offending value (jsonschema embeds its repr, a 10 MB
    prompt included) shortened, and the whole capped at MAX_MESSAGE_CHARS."""
    whole = repr(instance)
    if len(whole) > 80:
        message = message.replace(whole, _short(instance))
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 3] + "..."
    return message
