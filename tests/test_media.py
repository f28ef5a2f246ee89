from __future__ import annotations

import hashlib
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from aivp_batch.errors import MediaError
from aivp_batch.media import (
    MediaInfo,
    probe,
    probe_header,
    sha256_file,
    sniff_bytes,
    sniff_content_type,
    verify_clip,
)
from aivp_batch.providers.preview_render import render_preview


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    render_preview(
        path, width=160, height=90, fps=12, duration_s=2.0, seed=1, prompt="a test", title="shot-01"
    )
    return path


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=48000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 4800), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 48000, 0, Fraction(1, 48000)
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def test_probe_counts_decoded_frames(clip: Path) -> None:
    info = probe(clip)
    assert isinstance(info, MediaInfo)
    assert info.frames == 24
    assert info.duration_s == pytest.approx(2.0, abs=1e-6)
    assert (info.width, info.height) == (160, 90)
    assert info.fps == pytest.approx(12.0)
    assert info.has_audio
    assert info.video_codec == "h264"
    assert info.bytes == clip.stat().st_size


def test_probe_from_header_without_decoding(clip: Path) -> None:
    info = probe(clip, count_frames=False)
    assert info.frames == 24
    assert info.duration_s == pytest.approx(2.0, abs=0.1)


def test_probe_header_states_what_the_header_says(clip: Path, tmp_path: Path) -> None:
    # The local-file check's reading (aivp_batch.local_files): the same as probe's from the header.
    width, height, fps, duration = probe_header(clip)
    info = probe(clip, count_frames=False)
    assert (width, height) == (info.width, info.height) == (160, 90)
    assert fps == info.fps == pytest.approx(12.0)
    assert duration == pytest.approx(info.duration_s, abs=1e-6)
    bogus = tmp_path / "notes.mp4"
    bogus.write_text("this is not a video\n" * 50)
    with pytest.raises(av.FFmpegError):  # PyAV's own error: the caller words it
        probe_header(bogus)


def test_verify_clip_accepts_the_expected_duration(clip: Path) -> None:
    assert verify_clip(clip, 2.0).frames == 24
    assert verify_clip(clip, None).frames == 24
    assert verify_clip(clip, 2.2, tolerance_s=0.25).frames == 24


def test_verify_clip_rejects_a_wrong_duration(clip: Path) -> None:
    with pytest.raises(MediaError) as err:
        verify_clip(clip, 5.0)
    message = str(err.value)
    assert "clip.mp4" in message and "2.00" in message and "5.00" in message


def test_verify_clip_rejects_a_non_video(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.mp4"
    bogus.write_text("this is not a video\n" * 50)
    with pytest.raises(MediaError, match=r"notes\.mp4: not a decodable video"):
        verify_clip(bogus, 5.0)


def test_probe_rejects_missing_and_audio_only_files(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match=r"gone\.mp4: not a decodable video"):
        probe(tmp_path / "gone.mp4")
    with pytest.raises(MediaError, match=r"no video stream"):
        verify_clip(_audio_only(tmp_path / "sound.m4a"), None)


@pytest.mark.parametrize("keep", [0.05, 0.6])
def test_verify_clip_rejects_a_truncated_file(clip: Path, tmp_path: Path, keep: float) -> None:
    # A half-downloaded clip: the header promises 24 frames, the data is not there.
    cut = tmp_path / "cut.mp4"
    data = clip.read_bytes()
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(MediaError, match=r"cut\.mp4"):
        verify_clip(cut, 2.0)


def test_sha256_file_streams_large_files(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(0, 256, 5 * (1 << 20) // 2, dtype=np.uint8).tobytes()
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- content sniffing


@pytest.mark.parametrize(
    "fmt, content_type",
    [
        ("PNG", "image/png"),
        ("JPEG", "image/jpeg"),
        ("WEBP", "image/webp"),
        ("GIF", "image/gif"),
        ("BMP", "image/bmp"),
        ("TIFF", "image/tiff"),
        ("AVIF", "image/avif"),
    ],
)
def test_sniff_images_by_their_bytes_not_their_name(tmp_path: Path, fmt: str, content_type: str) -> None:
    path = tmp_path / "misnamed.txt"
    Image.new("RGB", (16, 16), (10, 200, 30)).save(path, format=fmt)
    assert sniff_content_type(path) == content_type


def _encode(path: Path, fmt: str, codec: str, audio: bool) -> Path:
    with av.open(str(path), "w", format=fmt) as out:
        if audio:
            stream = out.add_stream(codec, rate=44100, layout="mono")
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1152), np.float32 if codec != "flac" else np.int16),
                format="fltp" if codec != "flac" else "s16",
                layout="mono",
            )
            frame.sample_rate, frame.pts = 44100, 0
        else:
            stream = out.add_stream(codec, rate=12)
            stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


@pytest.mark.parametrize(
    "fmt, codec, audio, content_type",
    [
        ("mp4", "mpeg4", False, "video/mp4"),
        ("mov", "mpeg4", False, "video/quicktime"),
        ("webm", "libvpx", False, "video/webm"),
        ("matroska", "mpeg4", False, "video/x-matroska"),
        ("mp3", "mp3", True, "audio/mpeg"),
        ("ipod", "aac", True, "audio/mp4"),
        ("flac", "flac", True, "audio/flac"),
    ],
)
def test_sniff_video_and_audio(tmp_path: Path, fmt: str, codec: str, audio: bool, content_type: str) -> None:
    assert sniff_content_type(_encode(tmp_path / "media.bin", fmt, codec, audio)) == content_type


def test_sniff_wav_the_clip_and_unknown_bytes(clip: Path, tmp_path: Path) -> None:
    with wave.open(str(tmp_path / "a.wav"), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(bytes(1600))
    assert sniff_content_type(tmp_path / "a.wav") == "audio/wav"
    assert sniff_content_type(clip) == "video/mp4"
    assert sniff_bytes(b"this is not a png\n") is None
    assert sniff_bytes(b"root:x:0:0:root:/root:/bin/bash") is None
    assert sniff_bytes(b"") is None
    assert sniff_bytes(b"BM and some text, not a bitmap") is None  # a BMP's reserved bytes are 0
    assert sniff_bytes(b"\xff\xf1\x50\x80") == "audio/aac"  # ADTS
