"""Renders that cannot work are never paid for: the command, in a subprocess against the fake fal
server, refuses a bad input image (not an image, truncated, a few pixels, bytes that are not what
the name says, /etc/passwd) or an oversized prompt with exit 2 and one line, before any upload or
submit. And what is uploaded is labelled by its bytes, not its name."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAL_SCHEMAS
from PIL import Image

from aivp_batch.providers.fal import FalProvider
from aivp_batch.testing.fal_server import FakeFal

KEY = "fal-test-key-bad-inputs-1234"


@pytest.fixture(scope="module")
def fal():
    with FakeFal(schemas_dir=FAL_SCHEMAS, key=KEY, latency_s=0.05) as server:
        yield server


def _png_bytes(size: tuple[int, int], noise: bool = False) -> bytes:
    image = Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)) if noise else None
    image = image or Image.new("RGB", size, (120, 90, 60))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _jpeg_bytes(size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (120, 90, 60)).save(out, format="JPEG")
    return out.getvalue()


def _bad_image(kind: str, folder: Path) -> Path:
    if kind == "passwd":
        return Path("/etc/passwd")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ("frame.jpg" if kind == "png_named_jpg" else "frame.png")
    if kind == "text":
        path.write_bytes(b"this is not a png\n")  # 18 bytes
    elif kind == "truncated":
        whole = _png_bytes((320, 240), noise=True)
        path.write_bytes(whole[: len(whole) // 2])
    elif kind == "tiny":
        path.write_bytes(_png_bytes((5, 5)))
    elif kind == "jpeg_named_png":
        path.write_bytes(_jpeg_bytes((320, 240)))
    elif kind == "png_named_jpg":
        path.write_bytes(_png_bytes((320, 240)))
    return path


def run_cli(fal: FakeFal, tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "FAL_KEY": KEY,
        "HOME": str(tmp_path),
        "AIVP_HOME": str(tmp_path / "aivp-home"),
        "AIVP_CACHE_DIR": str(tmp_path / "cache"),
    }
    env.pop("AIVP_CONFIG_DIR", None)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "aivp_batch",
            "manifest=prompt",
            f"output_dir={tmp_path / 'out'}",
            *(
                f"provider.{name}={fal.url}"
                for name in ("queue_url", "rest_url", "cdn_url", "schema_url", "api_url")
            ),
            "provider.poll_interval=0.05",
            f"schema_cache_dir={tmp_path / 'schemas'}",
            f"hydra.run.dir={tmp_path / 'run'}",
            *overrides,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("aivp-batch: error:")]


@pytest.mark.parametrize(
    "kind, says",
    [
        ("text", "cannot be read as an image"),
        ("truncated", "truncated"),
        ("tiny", "is 5x5"),
        ("jpeg_named_png", "its bytes are JPEG but its extension says PNG"),
        ("passwd", "cannot be read as an image"),
    ],
)
def test_a_bad_image_is_one_line_exit_2_and_nothing_is_uploaded(fal, tmp_path, kind, says) -> None:
    image = _bad_image(kind, tmp_path / "frames")
    before = dict(fal.stats.calls)
    proc = run_cli(fal, tmp_path, "manifest.prompt=A slow pan over a harbour", f"manifest.image={image}")
    assert proc.returncode == 2, proc.stderr + proc.stdout
    [line] = _error_lines(proc)
    assert image.name in line and says in line, line
    assert "Traceback" not in proc.stderr
    calls = {k: v - before.get(k, 0) for k, v in fal.stats.calls.items()}
    assert calls.get("upload", 0) == 0 and calls.get("submit", 0) == 0, calls


def test_an_image_that_is_a_directory_is_one_line_exit_2(fal, tmp_path) -> None:
    (tmp_path / "frames").mkdir()
    proc = run_cli(fal, tmp_path, "manifest.prompt=A slow pan", f"manifest.image={tmp_path / 'frames'}")
    assert proc.returncode == 2, proc.stderr + proc.stdout
    [line] = _error_lines(proc)
    assert "is a directory" in line and "frames" in line
    assert not [x for x in proc.stderr.splitlines() if x.startswith("error:")]


def test_an_oversized_prompt_is_one_line_exit_2_and_nothing_is_submitted(fal, tmp_path) -> None:
    before = dict(fal.stats.calls)
    proc = run_cli(fal, tmp_path, "manifest.prompt=" + "a" * 120, "max_prompt_chars=100")
    assert proc.returncode == 2, proc.stderr + proc.stdout
    [line] = _error_lines(proc)
    assert "clip-01: prompt is 120 characters; the limit is max_prompt_chars=100" in line
    calls = {k: v - before.get(k, 0) for k, v in fal.stats.calls.items()}
    assert calls.get("upload", 0) == 0 and calls.get("submit", 0) == 0, calls


@pytest.mark.parametrize(
    "name, data, content_type",
    [
        ("frame.png", _jpeg_bytes((32, 32)), "image/jpeg"),  # the bytes win over the name
        ("keyframe", _png_bytes((32, 32)), "image/png"),  # no extension: the bytes still say PNG
        ("notes.txt", b"plain text", "text/plain"),  # bytes of no media format: the name's guess
        ("blob", b"plain text", "application/octet-stream"),  # neither
    ],
)
def test_uploads_carry_the_content_type_of_their_bytes(
    fal, tmp_path, monkeypatch, name, data, content_type
) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    sent: list[str] = []
    call = FalProvider._call

    async def spy(self, kind, method, url, **kwargs):
        if kind == "upload":
            sent.append(kwargs["headers"]["Content-Type"])
        return await call(self, kind, method, url, **kwargs)

    monkeypatch.setattr(FalProvider, "_call", spy)

    async def upload() -> str:
        async with FalProvider(KEY, queue_url=fal.url, rest_url=fal.url, cdn_url=fal.url) as provider:
            return await provider.upload(path)

    asyncio.run(upload())
    assert sent == [content_type]


def test_a_payload_override_is_what_is_priced_and_verified(fal, tmp_path) -> None:
    """`payload_extra` asks for 12 s at 1080p: planned, budgeted and checked as 12 s at 1080p."""
    proc = run_cli(
        fal,
        tmp_path,
        "manifest.prompt=A slow pan over a harbour",
        "+payload_extra.duration='12'",
        "+payload_extra.resolution=1080p",
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    log = json.loads((tmp_path / "out/log/clip-01.json").read_text())
    assert log["status"] == "done" and log["duration"] == "12"  # the 12 s clip verified against 12 s
    assert log["payload"]["duration"] == "12" and log["cost_usd"] == pytest.approx(1.3997)


def test_a_bad_provider_knob_is_one_line_naming_it_and_nothing_is_sent(fal: FakeFal, tmp_path: Path) -> None:
    before = dict(fal.stats.calls)
    proc = run_cli(fal, tmp_path, "manifest.prompt=a fox at dawn", "+provider.retry.kinds.status.retries=2")
    assert proc.returncode == 2, proc.stderr
    assert _error_lines(proc) == [
        "aivp-batch: error: provider=fal: retry.kinds.status: unknown keys ['retries']; known: ['attempts', "
        "'base_s', 'connect_only', 'jitter', 'max_retry_after_s', 'max_s', 'retry_on', 'transport']"
    ]
    assert "Traceback" not in proc.stderr and "Error executing job" not in proc.stderr
    sent = {k: n - before.get(k, 0) for k, n in fal.stats.calls.items() if n != before.get(k, 0)}
    assert set(sent) <= {"schema"}  # the payload was validated; nothing was uploaded, priced or submitted
