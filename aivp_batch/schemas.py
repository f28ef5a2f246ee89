"""fal/OpenAPI endpoint input schemas: fetch, cache, validate payloads and local files.

Where a document comes from is the store's `source` (aivp_batch.schema_sources: fal's, the
default, or Replicate's); caching, the ttl, offline use and validation are the same for all.
fal publishes one OpenAPI 3.0.4 document per endpoint at
`{schema_url}/api/openapi/queue/openapi.json?endpoint_id=<id>` (no auth). The documents mix
3.0 and 3.1 styles (`anyOf [X, {type: null}]`, `examples` arrays), so they are validated with
JSON Schema 2020-12. Three things JSON Schema alone does not give us, and fal does not enforce
loudly, are added here: unknown keys (fal ignores them silently), readable enum/anyOf messages,
and the non-standard `x-fal` file limits checked against local files before any upload.

Cache layout (under `cache_dir`, in the source's `cache_namespace` sub-folder where it has one:
`replicate/` for Replicate's): `<safe endpoint>/<sha256>.json` holds the canonical document
bytes (so the file name verifies its content) and `<safe endpoint>/index.json` holds
`{endpoint_id, url, sha256, fetched_at}` for the current copy.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import mimetypes
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from aivp_batch.errors import SchemaUnavailable
from aivp_batch.files import atomic_write_bytes, atomic_write_json
from aivp_batch.media import sniff_content_type
from aivp_batch.models import DEFAULT_MIN_IMAGE_PX
from aivp_batch.schema_sources import FAL_MODELS_PATH, FAL_SCHEMA_PATH, FalSchemaSource, SchemaSource
from aivp_batch.schema_sources import SourceUnavailable as _Unavailable
from aivp_batch.snapshot import Snapshot

BUNDLED = Snapshot()

SCHEMA_PATH = FAL_SCHEMA_PATH
MODELS_PATH = FAL_MODELS_PATH
_SCHEMAS_PREFIX = "#/components/schemas/"
_VIDEO_KEYS = {"min_duration", "max_duration", "min_fps", "max_fps"}
_GEOMETRY_KEYS = {
    "min_width",
    "min_height",
    "max_width",
    "max_height",
    "min_aspect_ratio",
    "max_aspect_ratio",
}
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

    def file_limits(self, field: str) -> dict:
        """The `x-fal` limits of a file-URL field (or of its array items), `{}` when it has none."""
        schema = self.field_schema(field)
        return self._find_x_fal(schema) if schema is not None else {}

    def _find_x_fal(self, node: Any) -> dict:
        for branch in self._branches(node):
            if isinstance(branch.get("x-fal"), dict):
                return dict(branch["x-fal"])
            if isinstance(branch.get("items"), dict):
                found = self._find_x_fal(branch["items"])
                if found:
                    return found
        return {}

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

    # -- local files

    def check_local_file(
        self, field: str, path: Path, *, min_image_px: int = DEFAULT_MIN_IMAGE_PX
    ) -> list[SchemaIssue]:
        """Check a local file before it is uploaded: a readable file within the field's `x-fal`
        limits; for an image field, on every endpoint, also an image that decodes in full, whose
        bytes match its extension and whose sides reach the `x-fal` minimum (else `min_image_px`)."""
        path = Path(path)
        where = f"{self.endpoint_id} {field}"
        problem = _not_readable(path)
        if problem is not None:
            return [SchemaIssue(field, f"{problem} (for {where})")]
        limits = self.file_limits(field)
        issues = _size_issues(path, limits, where, field)
        kind = _media_kind(field, limits)
        if kind == "video" and limits.keys() & (_VIDEO_KEYS | _GEOMETRY_KEYS):
            issues += _video_issues(path, limits, where, field)
        elif kind == "image":
            issues += _image_issues(path, limits, where, field, min_image_px)
        return issues


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


# ---------------------------------------------------------------- local file checks


def _media_kind(field: str, limits: dict) -> str:
    # x-fal does not say the media type; fps/duration limits or the field name do.
    last = field.rsplit(".", 1)[-1]
    if limits.keys() & _VIDEO_KEYS or "video" in last:
        return "video"
    return "audio" if "audio" in last else "image"


def _mb(n: float) -> str:
    if n >= 1048576:
        return f"{n / 1048576:.1f} MB"
    return f"{n / 1024:.1f} KB" if n >= 1024 else f"{n:g} bytes"


def _size_issues(path: Path, limits: dict, where: str, field: str) -> list[SchemaIssue]:
    size, cap = path.stat().st_size, limits.get("max_file_size")
    if cap is not None and size > cap:
        message = f"{path.name} is {_mb(size)} ({size} bytes); {where} allows at most {_mb(cap)}"
        return [SchemaIssue(field, message)]
    return []


def _not_readable(path: Path) -> str | None:
    """Why `path` is no file that can be read (missing, a directory, no permission), or None."""
    try:
        if path.is_dir():
            return f"{path.name}: a directory, not a file"
        if not path.is_file():
            return f"{path.name}: file not found" if not path.exists() else f"{path.name}: not a regular file"
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        return f"{path.name} cannot be read ({exc.strerror or _one_line(exc)})"
    return None


def _image_issues(path: Path, limits: dict, where: str, field: str, min_px: int) -> list[SchemaIssue]:
    try:
        stat = path.stat()
        width, height = _decoded_size(str(path), (stat.st_ino, stat.st_size, stat.st_mtime_ns))
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad files; all mean "unreadable"
        return [_unreadable(path, "an image", exc, where, field)]
    issues = [SchemaIssue(field, m) for m in (_extension_mismatch(path),) if m]
    issues += _geometry_issues(path.name, width, height, limits, where, field)
    # Where the endpoint publishes no minimum side, the model's floor (a few pixels are no keyframe).
    if (width < min_px and "min_width" not in limits) or (height < min_px and "min_height" not in limits):
        message = f"{path.name} is {width}x{height}; images for {where} must be at least {min_px}x{min_px}"
        issues.append(SchemaIssue(field, message + " (the model's min_image_px)"))
    return issues


@functools.lru_cache(maxsize=256)
def _decoded_size(path: str, version: tuple[int, int, int]) -> tuple[int, int]:
    """(width, height) of an image decoded in full (a truncated file fails here, not at fal);
    memoised by path and `version` (inode, size, mtime), since one portrait serves many shots."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        return image.size


_SAME_TYPE = {"image/jpg": "image/jpeg", "image/heic": "image/heif", "image/x-ms-bmp": "image/bmp"}


def _extension_mismatch(path: Path) -> str | None:
    """A line when the file's bytes say one format and its extension another (fal and the model
    go by the name or the declared type, and may refuse or misread it)."""
    named = mimetypes.guess_type(path.name)[0]
    sniffed = sniff_content_type(path)
    if named is None or sniffed is None or _SAME_TYPE.get(named, named) == _SAME_TYPE.get(sniffed, sniffed):
        return None
    return (
        f"{path.name}: its bytes are {_format_name(sniffed)} but its extension says "
        f"{_format_name(named)}; rename or convert it"
    )


def _format_name(content_type: str) -> str:
    return content_type.split("/")[-1].removeprefix("x-").upper()


def _video_issues(path: Path, limits: dict, where: str, field: str) -> list[SchemaIssue]:
    try:
        width, height, fps, duration = _probe_video(path)
    except Exception as exc:  # noqa: BLE001 - PyAV raises many types for bad files; all mean "unreadable"
        return [_unreadable(path, "a video", exc, where, field)]
    issues = _geometry_issues(path.name, width, height, limits, where, field)
    for key, value, shown, unit in (
        ("duration", duration, f"{path.name} is {duration or 0:g} s long", " s"),
        ("fps", fps, f"{path.name} runs at {fps or 0:g} fps", " fps"),
    ):
        low, high = limits.get(f"min_{key}"), limits.get(f"max_{key}")
        if low is None and high is None:
            continue
        if value is None:
            issues.append(SchemaIssue(field, f"{path.name}: its {key} cannot be read; {where} limits it"))
        elif low is not None and value < low:
            issues.append(SchemaIssue(field, f"{shown}; {where} needs at least {low:g}{unit}"))
        elif high is not None and value > high:
            issues.append(SchemaIssue(field, f"{shown}; {where} allows at most {high:g}{unit}"))
    return issues


def _probe_video(path: Path) -> tuple[int, int, float | None, float | None]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        else:
            duration = container.duration / av.time_base if container.duration else None
        width, height = stream.codec_context.width, stream.codec_context.height
        return width, height, float(rate) if rate else None, duration


def _dims(width: int | None, height: int | None) -> str:
    if width is not None and height is not None:
        return f"{width}x{height}"
    return f"{width} px wide" if width is not None else f"{height} px high"


def _geometry_issues(
    name: str, width: int, height: int, limits: dict, where: str, field: str
) -> list[SchemaIssue]:
    issues = []
    size = f"{name} is {width}x{height}"
    low_w, low_h = limits.get("min_width"), limits.get("min_height")
    if width < (low_w or 0) or height < (low_h or 0):
        issues.append(SchemaIssue(field, f"{size}; {where} needs at least {_dims(low_w, low_h)}"))
    high_w, high_h = limits.get("max_width"), limits.get("max_height")
    if width > (high_w or width) or height > (high_h or height):
        issues.append(SchemaIssue(field, f"{size}; {where} allows at most {_dims(high_w, high_h)}"))
    ratio = width / height if height else 0.0
    low_r, high_r = limits.get("min_aspect_ratio"), limits.get("max_aspect_ratio")
    if ratio < (low_r or 0) or (high_r is not None and ratio > high_r):
        bounds = f"between {low_r or 0:g} and {high_r:g}" if high_r is not None else f"at least {low_r:g}"
        issues.append(SchemaIssue(field, f"{size} (aspect {ratio:.2f}); {where} needs width/height {bounds}"))
    return issues


def _unreadable(path: Path, kind: str, exc: BaseException, where: str, field: str) -> SchemaIssue:
    reason = _one_line(exc)
    return SchemaIssue(field, f"{path.name} cannot be read as {kind} ({reason}); {where} needs {kind}")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


# ---------------------------------------------------------------- SchemaStore


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "aivp-batch" / "fal-schemas"


def safe_name(endpoint_id: str) -> str:
    """A file name for an endpoint id: `/` → `__` (as fal's ids read), anything odd %-escaped."""
    name = re.sub(
        r"[^A-Za-z0-9._-]", lambda m: "__" if m.group() == "/" else f"%{ord(m.group()):02X}", endpoint_id
    )
    # No hidden names and no `.`/`..`: the id must never climb out of cache_dir.
    return "%2E" + name[1:] if name.startswith(".") else name or "%00"


class SchemaStore:
    """Endpoint schemas from a `source` (fal's by default), cached on disk (ttl), memoised in
    memory, or registered locally. `schema_url`, `api_url`, `timeout_s` and `transport` configure
    the default fal source; a `source` given brings its own."""

    def __init__(
        self,
        schema_url: str = "https://fal.ai",
        cache_dir: Path | str | None = None,
        ttl_s: float = 86400,
        offline: bool = False,
        timeout_s: float = 30,
        transport: httpx.BaseTransport | None = None,
        *,
        api_url: str | None = None,
        clock: Callable[[], float] = time.time,
        bundled: Snapshot | None = BUNDLED,
        source: SchemaSource | None = None,
    ) -> None:
        self.schema_url = schema_url.rstrip("/")
        self.api_url = api_url.rstrip("/") if api_url else None
        self.source: SchemaSource = source or FalSchemaSource(
            self.schema_url, self.api_url, timeout_s=timeout_s, transport=transport
        )
        self.cache_dir = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
        self.ttl_s = ttl_s
        self.offline = offline
        self.timeout_s = timeout_s
        self.transport = transport
        self.clock = clock
        self.bundled = bundled
        self.warnings: list[str] = []
        self._memo: dict[str, EndpointSchema] = {}
        self._registered: dict[str, EndpointSchema] = {}
        self._lock = threading.Lock()

    def url_for(self, endpoint_id: str) -> str:
        return self.source.url_for(endpoint_id)

    def register(self, endpoint_id: str, document: dict) -> EndpointSchema:
        """Add a local document (e.g. the preview provider's own); it wins over any fetch."""
        try:
            schema = EndpointSchema(endpoint_id, document)
        except ValueError as exc:
            message = f"{endpoint_id}: the registered OpenAPI document is unusable ({exc})"
            raise SchemaUnavailable(message) from None
        with self._lock:
            self._registered[endpoint_id] = schema
            self._memo[endpoint_id] = schema
        return schema

    def get(self, endpoint_id: str) -> EndpointSchema:
        with self._lock:
            if endpoint_id in self._registered:
                return self._registered[endpoint_id]
            if endpoint_id not in self._memo:
                self._memo[endpoint_id] = self._load(endpoint_id)
            return self._memo[endpoint_id]

    def _load(self, endpoint_id: str) -> EndpointSchema:
        """Live fetch (a disk copy younger than the ttl counts as one) → older disk copy → the
        bundled snapshot. Offline, the disk cache and then the snapshot, without trying the network."""
        cached = self._read_cache(endpoint_id)
        if cached is not None and (self.offline or self.clock() - cached[1] < self.ttl_s):
            return cached[0]
        reason = "offline, and it is in neither the schema cache nor the bundled snapshot"
        if not self.offline:
            try:
                return self._fetch(endpoint_id)
            except _Unavailable as exc:
                reason = str(exc)
        if cached is not None:
            self.warnings.append(
                f"{endpoint_id}: could not refresh its OpenAPI schema ({reason}); "
                f"using the {cached[0].source}"
            )
            return cached[0]
        bundled = self._read_bundled(endpoint_id)
        if bundled is not None:
            if not self.offline:
                self.warnings.append(
                    f"{endpoint_id}: could not fetch its OpenAPI schema ({reason}); "
                    f"validating against the {bundled.source}"
                )
            return bundled
        raise self._unavailable(endpoint_id, reason)

    def _read_bundled(self, endpoint_id: str) -> EndpointSchema | None:
        entry = self.bundled.get(endpoint_id) if self.bundled is not None else None
        if entry is None:
            return None
        try:
            return EndpointSchema(endpoint_id, entry.document, source=entry.label)
        except ValueError as exc:
            self.warnings.append(f"{endpoint_id}: the bundled snapshot's document is unusable ({exc})")
            return None

    def _unavailable(self, endpoint_id: str, reason: str) -> SchemaUnavailable:
        return SchemaUnavailable(
            f"{endpoint_id}: could not fetch its OpenAPI schema from {self.url_for(endpoint_id)} ({reason}); "
            "run once online or check the endpoint id"
        )

    # -- network

    def _fetch(self, endpoint_id: str) -> EndpointSchema:
        document = self.fetch_document(endpoint_id)
        try:
            schema = EndpointSchema(endpoint_id, document, source=self.source.label(endpoint_id))
        except ValueError as exc:
            raise _Unavailable(str(exc)) from None
        self._write_cache(endpoint_id, schema)
        return schema

    def fetch_document(self, endpoint_id: str) -> dict:
        """The source's document for `endpoint_id` (raises the source's one-line reason)."""
        return self.source.fetch(endpoint_id)

    # -- disk cache

    def _dir(self, endpoint_id: str) -> Path:
        namespace = getattr(self.source, "cache_namespace", None)
        root = self.cache_dir / safe_name(namespace) if namespace else self.cache_dir
        return root / safe_name(endpoint_id)

    def _read_cache(self, endpoint_id: str) -> tuple[EndpointSchema, float] | None:
        folder = self._dir(endpoint_id)
        try:
            index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
            if index.get("endpoint_id") != endpoint_id:  # a safe_name collision, not ours
                return None
            sha = index["sha256"]
            raw = (folder / f"{sha}.json").read_bytes()
            if hashlib.sha256(raw).hexdigest() != sha:
                raise ValueError("content does not match its sha256")
            fetched_at = float(index["fetched_at"])
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(fetched_at))
            schema = EndpointSchema(endpoint_id, json.loads(raw), sha, source=f"cached copy (fetched {when})")
            return schema, fetched_at
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.warnings.append(f"{endpoint_id}: ignoring damaged schema cache {folder} ({_one_line(exc)})")
            return None

    def _write_cache(self, endpoint_id: str, schema: EndpointSchema) -> None:
        folder = self._dir(endpoint_id)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(
                folder / f"{schema.sha256}.json", canonical_bytes(schema.document), durable=False
            )
            index = {
                "endpoint_id": endpoint_id,
                "url": self.url_for(endpoint_id),
                "sha256": schema.sha256,
                "fetched_at": self.clock(),
            }
            atomic_write_json(folder / "index.json", index, durable=False)
        except OSError as exc:
            # A read-only cache must not stop a run that has the schema in hand.
            self.warnings.append(f"{endpoint_id}: could not write schema cache {folder} ({_one_line(exc)})")
