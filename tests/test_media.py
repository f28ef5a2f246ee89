from __future__ import annotations

import hashlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from aivp_batch.errors import MediaError
from aivp_batch.media import MediaInfo, probe, sha256_file, verify_clip
from aivp_batch.providers.preview import render_preview


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
