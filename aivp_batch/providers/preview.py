"""The offline preview provider: a real MP4 animatic from a job, for free.

It lets a whole batch run end to end (payloads, files, logs, plan) before anything is paid for.
This module is the Provider side: the endpoint, the OpenAPI input schema it publishes (so the
runner validates preview payloads exactly like a hosted model's), and `PreviewProvider`, which
turns a payload into render settings and renders them locally in worker threads, with
submit/wait/download/cancel and crash resume like a hosted queue. What a clip looks like
(keyframe camera moves, crossfades, title cards, the slate, multi-shot cuts, encoding) is the
renderer's business: `preview_render`.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

from ..errors import InputError, RequestFailed
from .base import ClipSink, Download, Outcome, Provider, StatusCallback, StatusUpdate, Submission
from .preview_render import ASPECT_RATIOS, CAMERA_MOVES, RESOLUTIONS, camera_move, render_preview, size_for

PREVIEW_ENDPOINT = "aivp/preview"

# ---------------------------------------------------------------------------------------------
# The published schema
# ---------------------------------------------------------------------------------------------


def _image_field(title: str) -> dict[str, Any]:
    return {
        "title": title,
        "anyOf": [{"type": "string"}, {"type": "null"}],
        "default": None,
        "description": "URL (or file:// URI) of the image.",
        # Same limits block fal publishes on its image inputs, so the runner checks them alike.
        "x-fal": {
            "min_width": 64,
            "min_height": 64,
            "min_aspect_ratio": 0.2,
            "max_aspect_ratio": 5.0,
            "max_file_size": 52428800,
        },
    }


def preview_openapi() -> dict[str, Any]:
    """The preview endpoint's OpenAPI 3.0 document, shaped like the ones fal publishes."""
    properties: dict[str, Any] = {
        "prompt": {"title": "Prompt", "type": "string", "minLength": 1},
        "image_url": _image_field("Start image"),
        "end_image_url": _image_field("End image"),
        "duration": {"title": "Duration (s)", "type": "integer", "minimum": 1, "maximum": 60},
        "aspect_ratio": {
            "title": "Aspect ratio",
            "type": "string",
            "enum": list(ASPECT_RATIOS),
            "default": "16:9",
        },
        "resolution": {"title": "Resolution", "type": "string", "enum": list(RESOLUTIONS), "default": "720p"},
        "fps": {"title": "Frames per second", "type": "integer", "minimum": 8, "maximum": 60, "default": 24},
        "seed": {"title": "Seed", "anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
        "title": {"title": "Title", "type": "string", "default": ""},
        # Text for the T2V card when the prompt is in a script the built-in font can't draw.
        "caption": {"title": "Caption", "anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
        "dialogue": {
            "title": "Dialogue",
            "anyOf": [{"type": "string"}, {"type": "null"}],
            "default": None,
            "description": "The shot's spoken line, burned in at the bottom of every frame.",
        },
        "camera_move": {
            "title": "Camera move",
            "anyOf": [{"type": "string", "enum": list(CAMERA_MOVES)}, {"type": "null"}],
            "default": None,
            "description": "When null the move is read from the prompt.",
        },
        "multi_prompt": {
            "title": "Shots",
            "anyOf": [
                {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/PreviewShot"}},
                {"type": "null"},
            ],
            "default": None,
            "description": "A multi-shot group: one clip, each shot its own card (the first starts from "
            "image_url) with its own slate, for its duration; `duration` is their sum.",
        },
    }
    shot_properties: dict[str, Any] = {
        "prompt": {"title": "Prompt", "type": "string", "minLength": 1},
        "duration": {"title": "Duration (s)", "type": "integer", "minimum": 1, "maximum": 60},
        "title": {"title": "Title", "type": "string", "default": ""},
        "caption": {"title": "Caption", "anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
        "dialogue": {"title": "Dialogue", "anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
        "camera_move": properties["camera_move"],
    }
    schema_ref = {"$ref": "#/components/schemas/PreviewInput"}
    return {
        "openapi": "3.0.4",
        "info": {
            "title": "aivp preview",
            "version": "1.0.0",
            "x-fal-metadata": {"endpointId": PREVIEW_ENDPOINT},
        },
        "components": {
            "schemas": {
                "PreviewInput": {
                    "title": "PreviewInput",
                    "type": "object",
                    "properties": properties,
                    "x-fal-order-properties": list(properties),
                    "required": ["prompt", "duration"],
                },
                "PreviewShot": {
                    "title": "PreviewShot",
                    "type": "object",
                    "properties": shot_properties,
                    "x-fal-order-properties": list(shot_properties),
                    "required": ["prompt", "duration"],
                },
                "PreviewOutput": {
                    "title": "PreviewOutput",
                    "type": "object",
                    "properties": {
                        "video": {"$ref": "#/components/schemas/File"},
                        "seed": {"type": "integer"},
                    },
                    "required": ["video", "seed"],
                },
                "File": {
                    "title": "File",
                    "type": "object",
                    "properties": {"url": {"type": "string"}, "content_type": {"type": "string"}},
                    "required": ["url"],
                },
            }
        },
        "paths": {
            f"/{PREVIEW_ENDPOINT}": {
                "post": {
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": schema_ref}},
                    },
                    "responses": {
                        "200": {
                            "description": "The rendered preview.",
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/PreviewOutput"}}
                            },
                        }
                    },
                }
            }
        },
    }


# ---------------------------------------------------------------------------------------------
# The provider
# ---------------------------------------------------------------------------------------------


def _local_path(value: str | Path) -> Path:
    """A payload image field (file:// URI or plain path) as a local path."""
    text = str(value)
    parsed = urlparse(text)
    if parsed.scheme == "file":
        return Path(url2pathname(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:  # one letter is a Windows drive, not a scheme
        raise RequestFailed(f"preview provider reads local files only, got a {parsed.scheme}: URL")
    return Path(text)


class PreviewProvider(Provider):
    """Renders previews locally in worker threads; no key, no network, no cost."""

    name = "preview"

    def __init__(self, work_dir: Path, latency_s: float = 0.0) -> None:
        self.work_dir = Path(work_dir)
        self.latency_s = latency_s
        self._tasks: dict[str, asyncio.Task[int]] = {}
        self._stops: dict[str, threading.Event] = {}

    async def upload(self, path: Path) -> str:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: file not found")
        return path.resolve().as_uri()

    async def submit(self, endpoint: str, payload: dict[str, Any]) -> Submission:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        request_id = uuid.uuid4().hex
        settings = self._settings(payload)
        stop = threading.Event()
        self._stops[request_id] = stop
        self._tasks[request_id] = asyncio.create_task(self._run(request_id, settings, stop))
        return Submission(
            request_id=request_id, endpoint=endpoint, response_url=self._output(request_id).as_uri()
        )

    async def wait(self, submission: Submission, on_status: StatusCallback | None = None) -> Outcome:
        emit: Callable[[StatusUpdate], None] = on_status or (lambda _update: None)
        rid = submission.request_id
        task = self._tasks.get(rid)
        emit(StatusUpdate("IN_PROGRESS", logs=(f"rendering preview {rid}",)))
        if task is None:
            seed = self._resume(rid)
        else:
            # asyncio.wait, not `await task`: a cancelled render must not look like our own cancellation.
            await asyncio.wait({task})
            if task.cancelled():
                raise RequestFailed(f"preview {rid} was cancelled", request_id=rid)
            if (exc := task.exception()) is not None:
                raise RequestFailed(f"preview render failed: {_one_line(exc)}", request_id=rid) from exc
            seed = task.result()
        emit(StatusUpdate("COMPLETED"))
        url = self._output(rid).as_uri()
        return Outcome(
            output={"video": {"url": url, "content_type": "video/mp4"}, "seed": seed},
            video_url=url,
            seed=seed,
        )

    async def download(self, url: str, dest: Path) -> Download:
        source = _local_path(url)
        if not source.is_file():
            raise RequestFailed(f"preview output {source.name} is missing")
        async with ClipSink(Path(dest)) as sink:
            with source.open("rb") as f:
                while block := await asyncio.to_thread(f.read, ClipSink.BLOCK):
                    await sink.write(block)
        return sink.result()

    async def cancel(self, submission: Submission) -> None:
        task = self._tasks.get(submission.request_id)
        if task is not None and not task.done():
            self._stops[submission.request_id].set()  # the worker thread stops at the next frame
            task.cancel()

    async def aclose(self) -> None:
        for stop in self._stops.values():
            stop.set()

    # --- internals ---

    def _output(self, request_id: str) -> Path:
        return self.work_dir / f"{request_id}.mp4"

    @staticmethod
    def _settings(payload: dict[str, Any]) -> dict[str, Any]:
        prompt = str(payload.get("prompt") or "")
        width, height = size_for(
            str(payload.get("resolution") or "720p"), str(payload.get("aspect_ratio") or "16:9")
        )
        seed = payload.get("seed")
        image, end = payload.get("image_url"), payload.get("end_image_url")
        return {
            "width": width,
            "height": height,
            "fps": int(payload.get("fps") or 24),
            "duration_s": float(payload.get("duration") or 5),
            # Like hosted models: no seed asked → pick one and report it, so the take can be redone.
            "seed": int(seed) if seed is not None else secrets.randbelow(2**31),
            "prompt": str(payload.get("caption") or prompt),
            "title": str(payload.get("title") or ""),
            "start_image": _local_path(image) if image else None,
            "end_image": _local_path(end) if end else None,
            "camera": payload.get("camera_move") or camera_move(prompt),
            "dialogue": str(payload.get("dialogue") or "") or None,
            "shots": _shot_settings(payload.get("multi_prompt")),
        }

    async def _run(self, request_id: str, settings: dict[str, Any], stop: threading.Event) -> int:
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)  # lets tests and demos see a queue
        await asyncio.to_thread(_render_job, self._output(request_id), stop, settings)
        return settings["seed"]

    def _resume(self, request_id: str) -> int | None:
        final = self._output(request_id)
        if not final.is_file():
            raise RequestFailed(
                f"preview {request_id} is unknown to this renderer; submit it again", request_id=request_id
            )
        sidecar = final.with_suffix(".json")
        try:
            return int(json.loads(sidecar.read_text(encoding="utf-8"))["seed"])
        except (OSError, ValueError, KeyError, TypeError):
            return None


def _shot_settings(items: Any) -> list[dict[str, Any]] | None:
    """A multi-shot payload's `multi_prompt` items as what each shot's part of the clip shows."""
    if not items:
        return None
    shots = []
    for item in items:
        prompt = str(item.get("prompt") or "")
        shots.append(
            {
                "duration_s": float(item.get("duration") or 5),
                "prompt": str(item.get("caption") or prompt),
                "title": str(item.get("title") or ""),
                "camera": item.get("camera_move") or camera_move(prompt),
                "dialogue": str(item.get("dialogue") or "") or None,
            }
        )
    return shots


def _render_job(final: Path, stop: threading.Event, settings: dict[str, Any]) -> None:
    """Render into `<final>.part` and rename; runs in the worker thread, so it cleans up after
    itself even when the awaiting task was cancelled long before the thread noticed."""
    part = final.with_name(final.name + ".part")
    try:
        render_preview(part, stop=stop, **settings)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    # A sidecar lets a restarted provider answer `wait` for a finished request (crash resume);
    # written first, so a clip that exists always has its seed beside it.
    final.with_suffix(".json").write_text(json.dumps({"seed": settings["seed"]}), encoding="utf-8")
    part.replace(final)


def _one_line(exc: BaseException) -> str:
    return " ".join((str(exc) or type(exc).__name__).split())
