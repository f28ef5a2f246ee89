"""Splitting a multi-shot group's clip into its shots' clips, frame-accurately, in process (PyAV).

A group's clip holds its shots back to back, each for its whole seconds (`Job.shot_durations_s`).
Part i gets the decoded frames whose presentation time, from the clip's first frame, falls in
[cut_i, cut_{i+1}) with cut_i the sum of the durations before shot i (a time is taken to its
nearest frame slot first, so a timestamp rounded by the container cannot move a frame across a
cut); frames after the last cut are left out. The audio is cut at the same times,
sample-accurately. Stream copy could only cut at keyframes, so every part is
re-encoded: H.264 (libx264) and, where the clip has sound, AAC.

A part whose decoded length is more than one frame off its shot's length is a `MediaError` (a clip
shorter than the group asked for, or cut wrong): the shot clip would not be what was planned.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from .errors import MediaError
from .media import probe, sha256_file

_AUDIO_FORMAT = "fltp"  # what FFmpeg's AAC encoder takes


@dataclass(frozen=True)
class PartInfo:
    """One shot's clip, as written and decoded again."""

    path: Path
    start_s: float  # where it was cut from the group's clip
    expected_s: float  # its shot's duration
    frames: int
    duration_s: float  # decoded (media.probe: every frame decoded)
    has_audio: bool
    sha256: str
    bytes: int


def cut_points(durations_s: Sequence[float]) -> list[Fraction]:
    """0, d0, d0+d1, …, Σd: where each part starts, and where the last ends (exact fractions)."""
    out = [Fraction(0)]
    for d in durations_s:
        if not math.isfinite(d) or d <= 0:
            raise ValueError(f"a part's duration must be a positive number of seconds, not {d!r}")
        out.append(out[-1] + Fraction(d).limit_denominator(1_000_000))
    return out


def split_clip(
    src: Path,
    dest_parts: Sequence[Path],
    durations_s: Sequence[float],
    *,
    crf: int = 18,
    preset: str = "veryfast",
    tolerance_frames: float = 1.0,
) -> list[PartInfo]:
    """Cut `src` into `dest_parts` (one per duration, in order), re-encoded so each cut falls on
    the exact frame: part i holds the frames whose time from the first frame is in
    [Σd[:i], Σd[:i+1]), the audio likewise. Each part is written to `<dest>.part` and renamed;
    returned with its decoded frame count and length and its sha256. MediaError when the clip
    cannot be read or a part's length is more than `tolerance_frames` frames off its duration."""
    src = Path(src)
    dests = [Path(d) for d in dest_parts]
    if len(dests) != len(durations_s) or not dests:
        raise ValueError(f"{len(dests)} part paths for {len(durations_s)} durations")
    cuts = cut_points(durations_s)
    temps = [d.with_name(d.name + ".part") for d in dests]
    try:
        fps = _write_parts(src, temps, cuts, crf=crf, preset=preset)
        out = [
            _checked(src, temp, dest, k, cuts, fps, tolerance_frames)
            for k, (temp, dest) in enumerate(zip(temps, dests, strict=True))
        ]
        for temp, dest in zip(temps, dests, strict=True):  # only once every part is right
            temp.replace(dest)
    except BaseException:
        for temp in temps:
            temp.unlink(missing_ok=True)
        raise
    return out


def _checked(
    src: Path, temp: Path, dest: Path, k: int, cuts: list[Fraction], fps: float, tolerance_frames: float
) -> PartInfo:
    """Part k decoded again (media.probe: every frame) and held to its shot's length."""
    info = probe(temp)
    expected = float(cuts[k + 1] - cuts[k])
    if abs(info.duration_s - expected) > tolerance_frames / fps + 1e-6:
        cut = f"{float(cuts[k]):g}–{float(cuts[k + 1]):g} s"
        raise MediaError(
            f"{src.name}: part {k + 1} ({dest.name}) is {info.duration_s:.3f} s ({info.frames} frames), "
            f"expected {expected:.3f} s at {fps:g} fps (its cut: {cut} of the group's clip)"
        )
    return PartInfo(
        path=dest,
        start_s=float(cuts[k]),
        expected_s=expected,
        frames=info.frames,
        duration_s=info.duration_s,
        has_audio=info.has_audio,
        sha256=sha256_file(temp),
        bytes=info.bytes,
    )


# --------------------------------------------------------------------------- the cutting


def _write_parts(src: Path, temps: list[Path], cuts: list[Fraction], *, crf: int, preset: str) -> float:
    """Decode `src` once; each frame (and audio sample) goes to the part its time falls in.
    Returns the video's frame rate."""
    try:
        container = av.open(str(src))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(f"{src.name}: not a decodable video ({_reason(exc)})") from exc
    with container:
        if not container.streams.video:
            raise MediaError(f"{src.name}: not a decodable video (no video stream)")
        vin = container.streams.video[0]
        ain = container.streams.audio[0] if container.streams.audio else None
        rate = vin.average_rate or vin.guessed_rate or vin.base_rate
        if not rate:
            raise MediaError(f"{src.name}: its frame rate cannot be read")
        rate = Fraction(rate)
        half = Fraction(1, 2) / rate  # a frame's time is snapped to the nearest frame slot
        outs = [_Part(t, vin, ain, rate, crf, preset) for t in temps]
        try:
            video_start: Fraction | None = None
            audio_frames: list[av.AudioFrame] = []
            streams = [vin] + ([ain] if ain is not None else [])
            for frame in container.decode(*streams):
                if isinstance(frame, av.AudioFrame):
                    audio_frames.append(frame)
                    continue
                t = _time(frame)
                if video_start is None:
                    video_start = t
                k = _part_of(t - video_start + half, cuts)
                if k is not None:
                    outs[k].video(frame, t - video_start - cuts[k])
            if video_start is None:
                raise MediaError(f"{src.name}: the video stream has no decodable frames")
            if ain is not None:
                _cut_audio(audio_frames, outs, cuts, video_start)
        except (av.FFmpegError, ValueError, EOFError) as exc:
            raise MediaError(f"{src.name}: cannot be cut ({_reason(exc)})") from exc
        finally:
            for out in outs:
                out.close()
        return float(rate)


def _time(frame: av.frame.Frame) -> Fraction:
    if frame.pts is None or frame.time_base is None:
        raise MediaError("a frame has no timestamp; the clip cannot be cut by time")
    return frame.pts * Fraction(frame.time_base)


def _part_of(t: Fraction, cuts: list[Fraction]) -> int | None:
    """The part whose [cut_k, cut_k+1) holds t; None before the first or after the last."""
    if t < cuts[0] or t >= cuts[-1]:
        return None
    lo, hi = 0, len(cuts) - 2
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if cuts[mid] <= t:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _cut_audio(
    frames: list[av.AudioFrame], outs: list[_Part], cuts: list[Fraction], video_start: Fraction
) -> None:
    """All the audio as one planar array, sliced at the cuts (timed from the first video frame)."""
    if not frames:
        return
    rate = frames[0].sample_rate
    layout = frames[0].layout.name
    resampler = av.AudioResampler(format=_AUDIO_FORMAT, layout=layout, rate=rate)
    chunks = [f.to_ndarray() for frame in frames for f in resampler.resample(frame)]
    chunks += [f.to_ndarray() for f in resampler.resample(None)]
    samples = np.concatenate(chunks, axis=1) if chunks else np.zeros((1, 0), np.float32)
    # Where the audio starts, in samples from the first video frame (negative: it starts before).
    offset = round((_time(frames[0]) - video_start) * rate)
    for k, out in enumerate(outs):
        lo = round(cuts[k] * rate) - offset
        hi = round(cuts[k + 1] * rate) - offset
        part = samples[:, max(0, lo) : max(0, hi)]
        if lo < 0:  # the audio starts after the cut: pad the gap with silence
            part = np.concatenate([np.zeros((samples.shape[0], min(-lo, hi - lo)), samples.dtype), part], 1)
        if part.shape[1] < hi - lo:  # the audio ends early: silence to the cut
            pad = np.zeros((samples.shape[0], hi - lo - part.shape[1]), samples.dtype)
            part = np.concatenate([part, pad], 1)
        out.audio(np.ascontiguousarray(part, dtype=np.float32), rate, layout)


class _Part:
    """One part's output file: H.264 video timed like the source, AAC audio where it has sound."""

    def __init__(
        self,
        path: Path,
        vin: av.video.stream.VideoStream,
        ain: av.audio.stream.AudioStream | None,
        rate: Fraction,
        crf: int,
        preset: str,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)  # the part's folder, for its rename too
        self.path = path
        self.out = av.open(str(path), "w", format="mp4", container_options={"movflags": "+faststart"})
        cc_in = vin.codec_context
        self.vout = self.out.add_stream("libx264", rate=rate, options={"preset": preset, "crf": str(crf)})
        self.vout.width, self.vout.height = cc_in.width, cc_in.height
        self.vout.pix_fmt = "yuv420p"
        cc = self.vout.codec_context
        for attr in ("colorspace", "color_primaries", "color_trc", "color_range"):
            value = getattr(cc_in, attr, None)
            if value:  # keep the source's colour tags (a player would guess otherwise)
                setattr(cc, attr, value)
        self.tb = 1 / rate  # frames are timed in frame slots from the part's start
        self.last_pts = -1
        self.ain = ain
        self.aout = None
        if ain is not None:
            self.aout = self.out.add_stream("aac", rate=ain.codec_context.sample_rate or 48000)
            self.aout.layout = ain.codec_context.layout.name
        self.frames = 0
        self.closed = False

    def video(self, frame: av.VideoFrame, t: Fraction) -> None:
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        # Its frame slot from the part's start (strictly increasing, for a variable frame rate too).
        pts = max(self.last_pts + 1, round(t / self.tb))
        frame.pts, frame.time_base = pts, self.tb
        frame.pict_type = av.video.frame.PictureType.NONE  # the encoder picks its own keyframes
        self.out.mux(self.vout.encode(frame))
        self.last_pts = pts
        self.frames += 1

    def audio(self, samples: np.ndarray, rate: int, layout: str) -> None:
        if self.aout is None or samples.shape[1] == 0:
            return
        for start, chunk in _chunks(samples, 1024):
            frame = av.AudioFrame.from_ndarray(chunk, format=_AUDIO_FORMAT, layout=layout)
            frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
            self.out.mux(self.aout.encode(frame))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.out.mux(self.vout.encode(None))
            if self.aout is not None:
                self.out.mux(self.aout.encode(None))
        finally:
            self.out.close()


def _chunks(samples: np.ndarray, size: int) -> Iterator[tuple[int, np.ndarray]]:
    for start in range(0, samples.shape[1], size):
        yield start, np.ascontiguousarray(samples[:, start : start + size])


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())
