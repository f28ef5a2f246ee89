"""Small but real MP4s for the fake servers: H.264 + silent AAC, optionally padded to a size."""

from __future__ import annotations

import atexit
import shutil
import struct
import tempfile
import threading
from pathlib import Path

_CHUNK = 64 * 1024


def make_mp4(path: Path, duration_s: float, size: int = 64, fps: int = 24) -> None:
    """A small but real H.264 + silent AAC MP4 of `duration_s` seconds."""
    import av
    import numpy as np

    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width = video.height = size
        video.pix_fmt = "yuv420p"
        video.options = {"preset": "ultrafast"}
        audio = out.add_stream("aac", rate=48000)
        audio.layout = "stereo"
        ramp = np.linspace(0, 255, size, dtype=np.uint8)
        for i in range(max(1, round(duration_s * fps))):
            img = np.stack(
                [
                    np.tile(ramp, (size, 1)),
                    np.full((size, size), (i * 7) % 256, np.uint8),
                    np.tile(ramp[:, None], (1, size)),
                ],
                axis=-1,
            )
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        frame_size = audio.codec_context.frame_size or 1024
        total = round(duration_s * 48000)
        for start in range(0, total, frame_size):
            n = min(frame_size, total - start)
            aframe = av.AudioFrame.from_ndarray(np.zeros((2, n), np.float32), format="fltp", layout="stereo")
            aframe.sample_rate = 48000
            aframe.pts = start
            out.mux(audio.encode(aframe))
        out.mux(audio.encode(None))


def pad_mp4(src: Path, dest: Path, target_bytes: int) -> None:
    """Copy `src` and append a top-level `free` box so the file reaches `target_bytes`.

    Players skip `free` boxes, so the padded file still decodes identically.
    """
    shutil.copyfile(src, dest)
    pad = target_bytes - src.stat().st_size
    if pad < 16:
        return
    with dest.open("ab") as f:
        if pad < 2**32:
            f.write(struct.pack(">I4s", pad, b"free"))
            left = pad - 8
        else:  # 64-bit "largesize" box header
            f.write(struct.pack(">I4sQ", 1, b"free", pad))
            left = pad - 16
        zeros = bytes(_CHUNK)
        while left > 0:
            f.write(zeros[: min(left, _CHUNK)])
            left -= _CHUNK


_clip_lock = threading.Lock()
_clip_dir: Path | None = None
_clips: dict[tuple[float, int | None], Path] = {}


def clip_for(duration_s: float, size_bytes: int | None = None) -> Path:
    """A generated clip per (duration, padded size), cached for the whole process.

    Encoding takes ~0.5 s per clip, and a test suite starts many servers: generate each once.
    """
    global _clip_dir
    key = (duration_s, size_bytes)
    with _clip_lock:
        if key not in _clips:
            if _clip_dir is None:
                _clip_dir = Path(tempfile.mkdtemp(prefix="fakefal-clips-"))
                atexit.register(shutil.rmtree, _clip_dir, True)
            plain = _clips.get((duration_s, None))
            if plain is None:
                plain = _clip_dir / f"clip-{duration_s:g}s.mp4"
                make_mp4(plain, duration_s)
                _clips[(duration_s, None)] = plain
            if size_bytes:
                padded = _clip_dir / f"clip-{duration_s:g}s-{size_bytes}.mp4"
                pad_mp4(plain, padded, size_bytes)
                _clips[key] = padded
        return _clips[key]
