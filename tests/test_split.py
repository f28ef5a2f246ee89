"""A multi-shot group's clip cut into its shots' clips: re-encoded so each cut falls on the exact
frame (a stream copy could only cut at keyframes), the sound cut at the same times."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from aivp_batch.errors import MediaError
from aivp_batch.media import probe, sha256_file
from aivp_batch.split import cut_points, split_clip

RATE = 48_000
RED, GREEN, BLUE = (230, 20, 20), (20, 230, 20), (20, 20, 230)
TONES = {RED: 440.0, GREEN: 1000.0, BLUE: 2500.0}  # each segment's sound, to check the audio cuts


def make_clip(
    path: Path,
    segments: list[tuple[float, tuple[int, int, int]]],
    fps: int = 24,
    size: tuple[int, int] = (96, 64),
    audio: bool = True,
) -> Path:
    """A clip of flat-coloured segments (and a tone per segment), with few keyframes: a cut inside a
    GOP must still land on its frame."""
    with av.open(str(path), "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "g": "250"})
        video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
        sound = out.add_stream("aac", rate=RATE, layout="mono") if audio else None
        i = done = 0
        for seconds, colour in segments:
            picture = np.empty((size[1], size[0], 3), np.uint8)
            picture[:] = colour
            for _ in range(round(seconds * fps)):
                frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
                frame.pts, frame.time_base = i, Fraction(1, fps)
                out.mux(video.encode(frame))
                i += 1
                if sound is not None:
                    end = round(i * RATE / fps)
                    t = np.arange(done, end) / RATE
                    tone = (0.5 * np.sin(2 * np.pi * TONES[colour] * t)).astype(np.float32)[None, :]
                    chunk = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
                    chunk.sample_rate, chunk.pts, chunk.time_base = RATE, done, Fraction(1, RATE)
                    out.mux(sound.encode(chunk))
                    done = end
        out.mux(video.encode(None))
        if sound is not None:
            out.mux(sound.encode(None))
    return path


def colours(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24")[10, 10].astype(int) for f in container.decode(video=0)]


def near(pixel: np.ndarray, colour: tuple[int, int, int]) -> bool:
    return bool(np.abs(pixel - np.array(colour)).max() < 30)


def dominant_hz(path: Path) -> float:
    """The loudest frequency of the part's middle (away from the AAC edges)."""
    with av.open(str(path)) as container:
        samples = np.concatenate([f.to_ndarray()[0] for f in container.decode(audio=0)])
    middle = samples[len(samples) // 4 : 3 * len(samples) // 4]
    spectrum = np.abs(np.fft.rfft(middle * np.hanning(len(middle))))
    return float(np.fft.rfftfreq(len(middle), 1 / RATE)[spectrum.argmax()])


@pytest.mark.parametrize("fps", [24, 30])
def test_parts_are_cut_on_the_exact_frames(tmp_path: Path, fps: int) -> None:
    segments = [(2.0, RED), (3.0, GREEN), (1.5, BLUE)]
    src = make_clip(tmp_path / "group-01.mp4", segments, fps=fps)
    dests = [tmp_path / "clips" / f"shot-0{k}.mp4" for k in (1, 2, 3)]
    parts = split_clip(src, dests, [d for d, _ in segments])
    assert [p.path for p in parts] == dests and not list((tmp_path / "clips").glob("*.part"))
    for part, (seconds, colour), start in zip(parts, segments, (0.0, 2.0, 5.0), strict=True):
        assert part.frames == round(seconds * fps)
        assert part.expected_s == seconds and part.start_s == start
        assert abs(part.duration_s - seconds) <= 1 / fps
        assert part.sha256 == sha256_file(part.path) and part.bytes == part.path.stat().st_size
        assert part.has_audio
        decoded = colours(part.path)
        assert len(decoded) == part.frames
        # Its first and last frames are its own segment's: no frame of a neighbour crossed the cut.
        assert near(decoded[0], colour) and near(decoded[-1], colour)
        assert all(near(c, colour) for c in decoded)
        info = probe(part.path)
        assert info.video_codec == "h264" and info.fps == pytest.approx(fps)
        assert dominant_hz(part.path) == pytest.approx(TONES[colour], rel=0.02)


def test_a_silent_clip_gives_silent_parts(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "g.mp4", [(1.0, RED), (2.0, BLUE)], audio=False)
    parts = split_clip(src, [tmp_path / "a.mp4", tmp_path / "b.mp4"], [1, 2])
    assert [p.frames for p in parts] == [24, 48] and not any(p.has_audio for p in parts)
    assert near(colours(parts[1].path)[0], BLUE)


def test_frames_past_the_last_cut_are_left_out(tmp_path: Path) -> None:
    # fal's clip may run a little long: the parts still hold their shots' frames exactly.
    src = make_clip(tmp_path / "g.mp4", [(1.0, RED), (1.0, GREEN), (0.25, BLUE)])
    parts = split_clip(src, [tmp_path / "a.mp4", tmp_path / "b.mp4"], [1, 1])
    assert [p.frames for p in parts] == [24, 24]
    assert near(colours(parts[1].path)[-1], GREEN)


def test_a_clip_shorter_than_its_shots_is_refused(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "g.mp4", [(1.0, RED), (1.0, GREEN)])
    dests = [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    with pytest.raises(MediaError, match=r"part 2 \(b.mp4\) is 1.000 s \(24 frames\), expected 2.000 s"):
        split_clip(src, dests, [1, 2])
    assert not list(tmp_path.glob("[ab].mp4*"))  # no part is delivered when one is wrong


def test_bad_arguments_and_unreadable_clips(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "g.mp4", [(1.0, RED)], audio=False)
    with pytest.raises(ValueError, match="2 part paths for 1 durations"):
        split_clip(src, [tmp_path / "a.mp4", tmp_path / "b.mp4"], [1])
    with pytest.raises(ValueError, match="positive number of seconds"):
        split_clip(src, [tmp_path / "a.mp4"], [0])
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video")
    with pytest.raises(MediaError, match="junk.mp4: not a decodable video"):
        split_clip(junk, [tmp_path / "a.mp4"], [1])
    assert not (tmp_path / "a.mp4").exists() and not (tmp_path / "a.mp4.part").exists()


def test_cut_points_are_exact() -> None:
    assert cut_points([2, 3, 1.5]) == [0, 2, 5, Fraction(13, 2)]


def test_a_preview_group_splits_into_its_shots(tmp_path: Path) -> None:
    from aivp_batch.providers.preview_render import render_preview

    shots = [
        {"duration_s": 2, "prompt": "a", "title": "shot-01"},
        {"duration_s": 1, "prompt": "b", "title": "shot-02"},
        {"duration_s": 3, "prompt": "c", "title": "shot-03"},
    ]
    group = tmp_path / "group-01.mp4"
    render_preview(
        group, width=160, height=90, fps=12, duration_s=6, seed=5, prompt="", title="", shots=shots
    )
    whole = colours(group)
    parts = split_clip(group, [tmp_path / f"{s['title']}.mp4" for s in shots], [2, 1, 3])
    assert [p.frames for p in parts] == [24, 12, 36] and all(p.has_audio for p in parts)
    starts = [0, 24, 36]
    for part, start in zip(parts, starts, strict=True):
        mine = colours(part.path)
        # the part's first and last frames are the group's frames at its cut (up to x264's noise)
        assert np.abs(mine[0] - whole[start]).max() < 12
        assert np.abs(mine[-1] - whole[start + part.frames - 1]).max() < 12
