"""Tests of aivp_batch.local_files: local input files against the `x-fal` limits of the bundled fal
documents (size, geometry, aspect, a video's length and frame rate), every image decoded in full."""

from __future__ import annotations

import copy
from pathlib import Path

import av
from conftest import fal_document
from PIL import Image

from aivp_batch.local_files import check_local_file, file_limits
from aivp_batch.openapi import EndpointSchema

KLING_V3_I2V = "fal-ai/kling-video/v3/pro/image-to-video"
KLING_O3_REF = "fal-ai/kling-video/o3/pro/reference-to-video"
KLING_O3_EDIT = "fal-ai/kling-video/o3/pro/video-to-video/edit"
VEO = "fal-ai/veo3.1"


def schema_of(endpoint_id: str) -> EndpointSchema:
    """The endpoint's schema, from its bundled document."""
    return EndpointSchema(endpoint_id, fal_document(endpoint_id))


def _png(path: Path, width: int, height: int) -> Path:
    Image.new("RGB", (width, height), (90, 120, 150)).save(path)
    return path


def test_file_limits_come_from_x_fal() -> None:
    limits = file_limits(schema_of(KLING_V3_I2V), "start_image_url")
    assert limits["max_file_size"] == 10485760 and limits["min_width"] == 300
    assert limits["min_aspect_ratio"] == 0.4 and limits["max_aspect_ratio"] == 2.5
    assert file_limits(schema_of(KLING_V3_I2V), "end_image_url") == limits  # inside anyOf
    assert file_limits(schema_of(KLING_O3_REF), "image_urls")["min_height"] == 300  # array items
    assert file_limits(schema_of(KLING_V3_I2V), "elements[0].video_url")["min_fps"] == 24
    assert file_limits(schema_of(VEO), "prompt") == {}


def test_small_image_fails_with_file_name_and_limit(tmp_path: Path) -> None:
    image = _png(tmp_path / "shot-01-ff.png", 200, 150)
    [issue] = check_local_file(schema_of(KLING_V3_I2V), "start_image_url", image)
    assert issue.path == "start_image_url"
    expected = f"shot-01-ff.png is 200x150; {KLING_V3_I2V} start_image_url needs at least 300x300"
    assert issue.message == expected


def test_good_image_passes(tmp_path: Path) -> None:
    image = _png(tmp_path / "shot-01-ff.png", 1280, 720)
    assert check_local_file(schema_of(KLING_V3_I2V), "start_image_url", image) == []
    assert check_local_file(schema_of(KLING_O3_REF), "image_urls", image) == []


def test_extreme_aspect_ratio_fails(tmp_path: Path) -> None:
    image = _png(tmp_path / "wide.png", 1600, 400)
    [issue] = check_local_file(schema_of(KLING_V3_I2V), "start_image_url", image)
    assert "wide.png is 1600x400 (aspect 4.00)" in issue.message and "between 0.4 and 2.5" in issue.message


def test_oversize_file_fails_before_upload(tmp_path: Path) -> None:
    image = _png(tmp_path / "huge.png", 1280, 720)
    with image.open("r+b") as handle:  # sparse tail: the header still reads, the size is 10 MB + 1
        handle.truncate(10485760 + 1)
    [issue] = check_local_file(schema_of(KLING_V3_I2V), "start_image_url", image)
    assert issue.message.startswith("huge.png is 10.0 MB (10485761 bytes)")
    assert issue.message.endswith(f"{KLING_V3_I2V} start_image_url allows at most 10.0 MB")


def test_oversize_against_a_patched_limit(tmp_path: Path) -> None:
    document = copy.deepcopy(fal_document(KLING_V3_I2V))
    schemas = document["components"]["schemas"]
    prop = schemas["KlingVideoV3ProImageToVideoInput"]["properties"]["start_image_url"]
    prop["x-fal"]["max_file_size"] = 100
    image = _png(tmp_path / "shot-02-ff.png", 1280, 720)
    [issue] = check_local_file(EndpointSchema(KLING_V3_I2V, document), "start_image_url", image)
    assert "shot-02-ff.png" in issue.message and issue.message.endswith("allows at most 100 bytes")


def test_missing_and_unreadable_files_are_issues(tmp_path: Path) -> None:
    schema = schema_of(KLING_V3_I2V)
    [missing] = check_local_file(schema, "start_image_url", tmp_path / "nope.png")
    assert "nope.png: file not found" in missing.message
    junk = tmp_path / "junk.png"
    junk.write_text("not an image")
    [unreadable] = check_local_file(schema, "start_image_url", junk)
    assert unreadable.message.startswith("junk.png cannot be read as an image")


def test_video_limits_use_duration_fps_and_size(tmp_path: Path) -> None:
    clip = tmp_path / "tiny.mp4"
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for _ in range(10):
            frame = av.VideoFrame.from_image(Image.new("RGB", (64, 64), (200, 30, 30)))
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    messages = [i.message for i in check_local_file(schema_of(KLING_O3_EDIT), "video_url", clip)]
    assert len(messages) == 3, messages
    assert messages[0] == f"tiny.mp4 is 64x64; {KLING_O3_EDIT} video_url needs at least 720x720"
    assert messages[1].startswith("tiny.mp4 is 1 s long") and messages[1].endswith("needs at least 3 s")
    assert messages[2] == f"tiny.mp4 runs at 10 fps; {KLING_O3_EDIT} video_url needs at least 24 fps"


def test_an_image_is_decoded_on_an_endpoint_without_x_fal_limits(tmp_path: Path) -> None:
    schema = schema_of("fal-ai/veo3.1/image-to-video")
    assert file_limits(schema, "image_url") == {}
    assert check_local_file(schema, "image_url", _png(tmp_path / "ok.png", 640, 360)) == []
    [tiny] = check_local_file(schema, "image_url", _png(tmp_path / "tiny.png", 5, 5))
    assert tiny.message.startswith("tiny.png is 5x5; images for fal-ai/veo3.1/image-to-video image_url")
    assert tiny.message.endswith("must be at least 64x64 (the model's min_image_px)")
    assert check_local_file(schema, "image_url", tmp_path / "tiny.png", min_image_px=4) == []
    cut = tmp_path / "cut.png"
    whole = (tmp_path / "ok.png").read_bytes()
    cut.write_bytes(whole[: len(whole) // 2])  # the header reads, the pixel data ends early
    [truncated] = check_local_file(schema, "image_url", cut)
    assert truncated.message.startswith("cut.png cannot be read as an image")
    webp = tmp_path / "still.webp"
    Image.new("RGB", (640, 360)).save(webp, format="PNG")
    [named] = check_local_file(schema, "image_url", webp)
    assert named.message == "still.webp: its bytes are PNG but its extension says WEBP; rename or convert it"
    [folder] = check_local_file(schema, "image_url", tmp_path)
    assert folder.message.endswith("a directory, not a file (for fal-ai/veo3.1/image-to-video image_url)")


def test_an_unreadable_video_is_one_issue(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 64)
    [issue] = check_local_file(schema_of(KLING_O3_EDIT), "video_url", junk)
    assert issue.path == "video_url" and issue.message.startswith("junk.mp4 cannot be read as a video (")
    assert issue.message.endswith(f"); {KLING_O3_EDIT} video_url needs a video")
