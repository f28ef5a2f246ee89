"""The preview's frames as yuv420p planes, and the H.264/AAC MP4 they are encoded into.

The preview renderer (`preview_render`) makes every frame directly as yuv420p planes (three PIL
"L" images, `Planes`): a camera move scales the planes (1.5 bytes a pixel instead of RGB's 4)
and no frame needs its own RGB→YUV conversion; only what is drawn in RGB once (a keyframe, a
title card, a slate label) goes through `to_planes`. `encode_frames` makes the frames on a helper
thread (`_prefetch`) while x264 encodes them, beside a silent AAC track of the same length:
together that renders a 720p preview faster than real time on two cores.

The encoder settings (`_x264_options`) give the same bitstream for the same frames, which the
preview's deterministic clips (same seed, same bytes) rely on. This module knows nothing of
shots, cards or camera moves; the renderer and its drawing (`preview_cards`) build on it.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image

_AUDIO_RATE = 48_000
_BT601 = 6  # AVCOL_SPC/PRI/TRC_SMPTE170M
_MPEG_RANGE = 1  # AVCOL_RANGE_MPEG (limited)

# --- yuv420p pictures -----------------------------------------------------------------------


class Planes(NamedTuple):
    """One yuv420p picture: full-size luma, half-size chroma."""

    y: Image.Image
    u: Image.Image
    v: Image.Image

    @property
    def size(self) -> tuple[int, int]:
        return self.y.size

    def frame(self) -> av.VideoFrame:
        w, h = self.size
        flat = np.concatenate([np.asarray(p).reshape(-1) for p in self])
        return av.VideoFrame.from_ndarray(flat.reshape(h * 3 // 2, w), format="yuv420p")


def to_planes(image: Image.Image, reformatter: VideoReformatter | None = None) -> Planes:
    """RGB → yuv420p (swscale: BT.601, limited range, as tagged on the stream).

    Pass one `reformatter` for repeated conversions: it keeps its swscale context, whose set-up
    costs several times more than converting a strip of pixels.
    """
    w, h = image.size
    frame = av.VideoFrame.from_image(image)
    yuv = (reformatter or VideoReformatter()).reformat(frame, format="yuv420p")
    flat = yuv.to_ndarray().reshape(-1)
    luma, chroma = w * h, (w // 2) * (h // 2)
    y = flat[:luma].reshape(h, w)
    u = flat[luma : luma + chroma].reshape(h // 2, w // 2)
    v = flat[luma + chroma : luma + 2 * chroma].reshape(h // 2, w // 2)
    return Planes(*(Image.fromarray(np.ascontiguousarray(p), "L") for p in (y, u, v)))


def frame_progress(i: int, n: int) -> float:
    """How far frame `i` of `n` is through its shot: 0 at the first frame, 1 at the last."""
    return i / (n - 1) if n > 1 else 1.0


# --- encoding -------------------------------------------------------------------------------


class _Stopped(Exception):
    """The render was cancelled between frames."""


def encode_frames(
    dest: Path, frames: Iterator[Planes], size: tuple[int, int], fps: int, stop: threading.Event | None
) -> None:
    """Mux H.264 video and a silent AAC track of the same length into `dest` (an MP4)."""
    # format= is explicit: the caller writes to a `.part` name, which says nothing about the format.
    with av.open(str(dest), "w", format="mp4", container_options={"movflags": "+faststart"}) as out:
        video = out.add_stream("libx264", rate=fps, options=_x264_options(size[0]))
        video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
        # swscale converts RGB with BT.601 limited-range matrices; say so, or HD players assume BT.709.
        cc = video.codec_context
        cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = _BT601, _BT601, _BT601, _MPEG_RANGE
        audio = out.add_stream("aac", rate=_AUDIO_RATE, layout="mono")
        video_tb, audio_tb = Fraction(1, fps), Fraction(1, _AUDIO_RATE)
        samples_done = 0
        # closing(): an early exit (cancel, error) stops the frame-making thread right away.
        with contextlib.closing(_prefetch(planes.frame() for planes in frames)) as yuv_frames:
            for i, frame in enumerate(yuv_frames):
                if stop is not None and stop.is_set():
                    raise _Stopped
                frame.pts, frame.time_base = i, video_tb
                out.mux(video.encode(frame))
                # Audio follows the video frame by frame so the two tracks end together.
                target = round((i + 1) * _AUDIO_RATE / fps)
                out.mux(audio.encode(_silence(samples_done, target - samples_done, audio_tb)))
                samples_done = target
        out.mux(video.encode(None))
        out.mux(audio.encode(None))


def _x264_options(width: int) -> dict[str, str]:
    """x264 settings for a clip `width` pixels wide that give the same output for the same frames.

    The macroblock-tree rate control (mbtree) is turned off unless the width is a whole number
    of 8-macroblock (128-pixel) groups. On AVX-512 CPUs x264 propagates each macroblock row's
    costs 8 macroblocks at a time (`mbtree_propagate_list_avx512`) and does not mask the lanes
    past the end of the row. In a part-filled last group those lanes read whatever follows the
    row in memory, at the bottom row old heap contents, and can add it to real macroblocks.
    When that happens, the same frames encode to different bitstreams from one run to the next,
    and more often on a busy machine. The 16:9 widths (640, 1280, 1920) keep mbtree and its
    smaller files.
    """
    options = {"preset": "veryfast", "crf": "23"}
    if -(-width // 16) % 8:
        options["mbtree"] = "0"
    return options


_T = TypeVar("_T")


def _prefetch(items: Iterator[_T], depth: int = 8) -> Iterator[_T]:
    """Produce `items` in a helper thread while the caller consumes them.

    Pillow's scaling and drawing release the GIL, so frames are made on one core while x264
    encodes on the other.
    """
    box: queue.Queue[tuple[str, Any]] = queue.Queue(depth)
    quit_ = threading.Event()

    def put(kind: str, value: Any) -> bool:
        while not quit_.is_set():
            try:
                box.put((kind, value), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put("item", item):
                    return
            put("end", None)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put("error", exc)

    worker = threading.Thread(target=work, name="preview-frames", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = box.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        quit_.set()  # a consumer that stops early (error, cancel) must not strand the producer
        worker.join()


def _silence(pts: int, samples: int, time_base: Fraction) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(np.zeros((1, samples), np.float32), format="fltp", layout="mono")
    frame.sample_rate, frame.pts, frame.time_base = _AUDIO_RATE, pts, time_base
    return frame
