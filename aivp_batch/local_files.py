"""Local input files checked against an endpoint before any upload: its `x-fal` limits.

fal's documents mark file-URL fields with a non-standard `x-fal` object (`max_file_size`,
`min_width`/`max_height`, `min_aspect_ratio`, `min_duration`/`max_fps`, …) that fal checks only
after the upload, so a file is read here first: readable, within its size, and, for an image, decoded
in full with bytes matching its extension and sides at least the minimum (else the model's
`min_image_px`); for a video, the geometry, length and frame rate its header states
(aivp_batch.media reads them).
"""

from __future__ import annotations

import functools
import mimetypes
from pathlib import Path
from typing import Any

from .media import probe_header, sniff_content_type
from .models import DEFAULT_MIN_IMAGE_PX
from .openapi import EndpointSchema, SchemaIssue

_VIDEO_KEYS = {"min_duration", "max_duration", "min_fps", "max_fps"}
_GEOMETRY_KEYS = {
    "min_width",
    "min_height",
    "max_width",
    "max_height",
    "min_aspect_ratio",
    "max_aspect_ratio",
}


def file_limits(schema: EndpointSchema, field: str) -> dict:
    """The `x-fal` limits of a file-URL field (or of its array items), `{}` when it has none."""
    node = schema.field_schema(field)
    return _find_x_fal(schema, node) if node is not None else {}


def _find_x_fal(schema: EndpointSchema, node: Any) -> dict:
    for branch in schema._branches(node):
        if isinstance(branch.get("x-fal"), dict):
            return dict(branch["x-fal"])
        if isinstance(branch.get("items"), dict):
            found = _find_x_fal(schema, branch["items"])
            if found:
                return found
    return {}


def check_local_file(
    schema: EndpointSchema, field: str, path: Path, *, min_image_px: int = DEFAULT_MIN_IMAGE_PX
) -> list[SchemaIssue]:
    """Check a local file before it is uploaded: a readable file within the field's `x-fal`
    limits; for an image field, on every endpoint, also an image that decodes in full, whose
    bytes match its extension and whose sides reach the `x-fal` minimum (else `min_image_px`)."""
    path = Path(path)
    where = f"{schema.endpoint_id} {field}"
    problem = _not_readable(path)
    if problem is not None:
        return [SchemaIssue(field, f"{problem} (for {where})")]
    limits = file_limits(schema, field)
    issues = _size_issues(path, limits, where, field)
    kind = _media_kind(field, limits)
    if kind == "video" and limits.keys() & (_VIDEO_KEYS | _GEOMETRY_KEYS):
        issues += _video_issues(path, limits, where, field)
    elif kind == "image":
        issues += _image_issues(path, limits, where, field, min_image_px)
    return issues


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
        width, height, fps, duration = probe_header(path)
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
