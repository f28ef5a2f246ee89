"""Every local input image is decoded before anything is uploaded, on every endpoint: a file that
is not an image, is truncated, has a few pixels, or whose bytes are not what its extension says is
one line naming the file and the problem."""

from __future__ import annotations

import builtins
import io
import os
from pathlib import Path

import pytest
from conftest import fal_document, has_fal_document, write_png
from omegaconf import OmegaConf
from PIL import Image

from aivp_batch.errors import PayloadInvalid
from aivp_batch.models import DEFAULT_MIN_IMAGE_PX, build_model_spec
from aivp_batch.planning import Job, plan_jobs
from aivp_batch.schema_store import SchemaStore
from aivp_batch.shots import Shot
from aivp_batch.validation import validate_jobs

SEEDANCE_I2V = "fal-ai/bytedance/seedance/v1.5/pro/image-to-video"  # no x-fal limits on its images


def spec_for(compose_cfg, model: str, tier: str = "standard"):
    cfg = OmegaConf.to_container(compose_cfg(f"model={model}", f"tier={tier}"), resolve=True)
    return build_model_spec(cfg["model"], cfg["provider"], tier)


def store_for(tmp_path: Path, jobs: list[Job]) -> SchemaStore:
    store = SchemaStore(cache_dir=tmp_path / "cache", offline=True)
    for endpoint in {j.endpoint for j in jobs}:
        if has_fal_document(endpoint):
            store.register(endpoint, fal_document(endpoint))
    return store


def i2v_jobs(compose_cfg, model: str, *frames: Path) -> list[Job]:
    shots = [
        Shot(id=f"shot-{n:02d}", number=n, prompts={"motion": "a slow pan"}, duration_s=5, start_frame=frame)
        for n, frame in enumerate(frames, start=1)
    ]
    plan = plan_jobs(shots, spec_for(compose_cfg, model), provider="fal", seed=1)
    assert not plan.errors
    return plan.jobs


def problems(compose_cfg, tmp_path: Path, model: str, *frames: Path) -> list[str]:
    jobs = i2v_jobs(compose_cfg, model, *frames)
    try:
        validate_jobs(jobs, store_for(tmp_path, jobs))
    except PayloadInvalid as exc:
        return str(exc).splitlines()
    return []


def _encoded(size: tuple[int, int], fmt: str, noise: bool = False) -> bytes:
    pixels = os.urandom(size[0] * size[1] * 3) if noise else None
    image = Image.frombytes("RGB", size, pixels) if pixels else Image.new("RGB", size, (90, 120, 150))
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def test_a_good_keyframe_passes_on_an_endpoint_without_limits(compose_cfg, tmp_path) -> None:
    frame = write_png(tmp_path / "shot-01-ff.png", (1280, 720))
    assert i2v_jobs(compose_cfg, "seedance_v15", frame)[0].endpoint == SEEDANCE_I2V
    assert problems(compose_cfg, tmp_path, "seedance_v15", frame) == []


@pytest.mark.parametrize(
    "name, data, says",
    [
        ("text.png", b"this is not a png\n", "text.png cannot be read as an image (cannot identify image"),
        ("cut.png", _encoded((320, 240), "PNG", noise=True)[:20000], "cut.png cannot be read as an image"),
        ("tiny.png", _encoded((5, 5), "PNG"), "tiny.png is 5x5; images for"),
        (
            "photo.png",
            _encoded((320, 240), "JPEG"),
            "photo.png: its bytes are JPEG but its extension says PNG",
        ),
        (
            "frame.jpg",
            _encoded((320, 240), "PNG"),
            "frame.jpg: its bytes are PNG but its extension says JPEG",
        ),
        ("passwd", b"root:x:0:0:root:/root:/bin/bash\n", "passwd cannot be read as an image"),
    ],
)
def test_a_bad_image_is_one_line_naming_the_file(compose_cfg, tmp_path, name, data, says) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    [line] = problems(compose_cfg, tmp_path, "seedance_v15", path)
    assert line.startswith(f"shot-01: model=seedance_v15 endpoint={SEEDANCE_I2V} field image_url: ")
    assert says in line, line


def test_a_truncated_png_fails_although_its_header_reads(compose_cfg, tmp_path) -> None:
    path = tmp_path / "cut.png"
    path.write_bytes(_encoded((320, 240), "PNG", noise=True)[:20000])
    with Image.open(path) as image:
        assert image.size == (320, 240)  # the header alone says nothing is wrong
    [line] = problems(compose_cfg, tmp_path, "seedance_v15", path)
    assert "truncated" in line


def test_the_size_floor_is_the_models_min_image_px_else_the_default(compose_cfg, tmp_path) -> None:
    assert spec_for(compose_cfg, "seedance_v15").min_image_px == DEFAULT_MIN_IMAGE_PX == 64
    assert spec_for(compose_cfg, "kling_v25_turbo").min_image_px == 300
    small = write_png(tmp_path / "small.png", (200, 150))
    assert problems(compose_cfg, tmp_path, "seedance_v15", small) == []  # above 64 px
    # Kling 2.5 Turbo's schema publishes no minimum: the model YAML's min_image_px applies.
    [line] = problems(compose_cfg, tmp_path, "kling_v25_turbo", small)
    assert (
        "small.png is 200x150; images for" in line and "at least 300x300 (the model's min_image_px)" in line
    )


def test_the_endpoints_own_minimum_wins_and_is_said_once(compose_cfg, tmp_path) -> None:
    tiny = write_png(tmp_path / "tiny.png", (5, 5))
    [line] = problems(compose_cfg, tmp_path, "kling_v3", tiny)
    assert line.endswith(
        "tiny.png is 5x5; fal-ai/kling-video/v3/pro/image-to-video start_image_url needs at least 300x300"
    )


def test_every_bad_file_of_a_run_is_listed(compose_cfg, tmp_path) -> None:
    good = write_png(tmp_path / "good.png", (640, 360))
    text = tmp_path / "notes.png"
    text.write_text("hello")
    tiny = write_png(tmp_path / "tiny.png", (8, 8))
    lines = problems(compose_cfg, tmp_path, "seedance_v15", good, text, tiny)
    assert [line.split(":")[0] for line in lines] == ["shot-02", "shot-03"]


def test_a_directory_and_an_unreadable_file_are_one_line_each(compose_cfg, tmp_path, monkeypatch) -> None:
    frame = write_png(tmp_path / "frame.png", (640, 360))
    folder = tmp_path / "folder.png"
    folder.mkdir()
    jobs = i2v_jobs(compose_cfg, "seedance_v15", frame, frame)
    # The file changes after planning: a directory in its place, or no permission to read it.
    jobs[0].files["image_url"] = folder
    locked = tmp_path / "locked.png"
    locked.write_bytes(frame.read_bytes())
    jobs[1].files["image_url"] = locked
    real_open = builtins.open

    def no_permission(file, *args, **kwargs):
        if Path(file) == locked:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_permission)
    with pytest.raises(PayloadInvalid) as err:
        validate_jobs(jobs, store_for(tmp_path, jobs))
    first, second = str(err.value).splitlines()
    assert first.endswith(f"folder.png: a directory, not a file (for {SEEDANCE_I2V} image_url)")
    assert second.endswith(f"locked.png cannot be read (Permission denied) (for {SEEDANCE_I2V} image_url)")


def test_portraits_and_end_frames_are_checked_too(compose_cfg, tmp_path) -> None:
    frame = write_png(tmp_path / "ff.png", (1280, 720))
    end = tmp_path / "lf.png"
    end.write_bytes(b"GIF89a but not really")
    portrait = write_png(tmp_path / "elena.png", (20, 30))
    shots = [
        Shot(
            id="shot-01", number=1, prompts={"seedance": "x"}, duration_s=5, start_frame=frame, end_frame=end
        ),
        Shot(
            id="shot-02",
            number=2,
            prompts={"seedance": "@图片1 x"},
            duration_s=5,
            characters=("Elena",),
            character_refs=(portrait,),
        ),
    ]
    plan = plan_jobs(shots, spec_for(compose_cfg, "seedance_v2"), provider="fal", seed=1)
    with pytest.raises(PayloadInvalid) as err:
        validate_jobs(plan.jobs, store_for(tmp_path, plan.jobs))
    first, second = str(err.value).splitlines()
    assert "field end_image_url: lf.png cannot be read as an image" in first
    assert "field image_urls[0]: elena.png is 20x30; images for" in second
