"""Probing and verifying video files, in process with PyAV; sniffing a file's media type.

A provider's word about a clip (its container duration, its `nb_frames`) is not proof: a
truncated download or a half-written file can carry a header that promises more than it holds.
So `probe` decodes and counts, and `verify_clip` checks what was decoded against what was asked.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from .errors import MediaError

_CHUNK = 1 << 20  # 1 MiB


@dataclass(frozen=True)
class MediaInfo:
    """What a video file really holds."""

    duration_s: float
    frames: int
    width: int
    height: int
    fps: float
    has_audio: bool
    video_codec: str
    bytes: int


def probe(path: Path, *, count_frames: bool = True, decode_all: bool = True) -> MediaInfo:
    """Describe the video at `path`. `count_frames` counts frames instead of trusting the header:
    by decoding every frame (`decode_all`, exact) or by counting packets and decoding only until the
    first frame (proves it decodes; several times faster)."""
    path = Path(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path.name}: not a decodable video (no video stream)")
            stream = container.streams.video[0]
            fps = _stream_fps(stream)
            if count_frames and decode_all:
                frames, duration = _count_decoded(container, stream, fps)
            elif count_frames:
                # One frame is decoded: FFmpeg's decoder threads would cost more to start than it.
                stream.codec_context.thread_count = 1
                frames, duration = _count_packets(container, stream, fps)
            else:
                frames, duration = _header_length(container, stream, fps)
            return MediaInfo(
                duration_s=duration,
                frames=frames,
                width=stream.codec_context.width,
                height=stream.codec_context.height,
                fps=float(fps) if fps else 0.0,
                has_audio=bool(container.streams.audio),
                video_codec=stream.codec_context.name,
                bytes=path.stat().st_size,
            )
    except MediaError:
        raise
    # PyAV raises FFmpegError (an OSError for missing files), ValueError/EOFError on garbage.
    except (av.FFmpegError, OSError, ValueError, EOFError) as exc:
        raise MediaError(f"{path.name}: not a decodable video ({_reason(exc)})") from exc


def probe_header(path: Path) -> tuple[int, int, float | None, float | None]:
    """(width, height, fps, duration_s) of the first video stream as its header states them, nothing
    decoded (read as `probe(count_frames=False)` reads them); fps or duration None where the file
    states none. PyAV's own exception when the file is no video: the caller words it."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = _stream_fps(stream)
        width, height = stream.codec_context.width, stream.codec_context.height
        return width, height, float(fps) if fps else None, _header_duration(container, stream)


def verify_clip(
    path: Path, expected_duration_s: float | None, tolerance_s: float = 0.25, *, decode_all: bool = False
) -> MediaInfo:
    """Raise MediaError unless the clip decodes, has frames and (if given) the expected length."""
    path = Path(path)
    info = probe(path, count_frames=True, decode_all=decode_all)
    if info.frames == 0:
        raise MediaError(f"{path.name}: the video stream has no decodable frames")
    if expected_duration_s is not None and abs(info.duration_s - expected_duration_s) > tolerance_s:
        raise MediaError(
            f"{path.name}: duration is {info.duration_s:.2f} s, expected {expected_duration_s:.2f} s "
            f"(tolerance {tolerance_s:.2f} s)"
        )
    return info


_NAMED_SHORT_SIDES = {"4k": 2160, "2k": 1440, "true_1080p": 1080}


def frame_size(resolution: str, aspect_ratio: str) -> tuple[int, int]:
    """(width, height) whose short side is the resolution's p number (`720p`, `768P`, `4k`…);
    both even, as yuv420p needs. ValueError for a name it does not know."""
    res = str(resolution).strip().lower()
    match_res = re.fullmatch(r"(\d+)p", res)
    short = int(match_res[1]) if match_res else _NAMED_SHORT_SIDES.get(res)
    match_ar = re.fullmatch(r"(\d+(?:\.\d+)?):(\d+(?:\.\d+)?)", str(aspect_ratio).strip())
    if short is None or not match_ar or float(match_ar[1]) <= 0 or float(match_ar[2]) <= 0:
        raise ValueError(f"unknown resolution/aspect ratio {resolution!r} {aspect_ratio!r}")
    short = even(short)
    a, b = float(match_ar[1]), float(match_ar[2])
    if a >= b:
        return even(short * a / b), short
    return short, even(short * b / a)


def even(x: float) -> int:
    """The nearest even number ≥ 2 (yuv420p needs even sizes)."""
    return max(2, int(round(x / 2)) * 2)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, streamed so large clips don't sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


_SNIFF_BYTES = 64
# ISO base media (`ftyp`) brands, most telling first: an AVIF often has major brand mif1 and avif
# among its compatible brands. Anything else with an `ftyp` box is an MP4.
_FTYP_BRANDS = {
    b"avif": "image/avif",
    b"avis": "image/avif",
    b"heic": "image/heic",
    b"heix": "image/heic",
    b"mif1": "image/heif",
    b"msf1": "image/heif",
    b"qt  ": "video/quicktime",
    b"M4A ": "audio/mp4",
    b"M4B ": "audio/mp4",
}
_RIFF_KINDS = {b"WEBP": "image/webp", b"WAVE": "audio/wav", b"AVI ": "video/x-msvideo"}


def sniff_content_type(path: Path) -> str | None:
    """The media type a file's leading bytes (its magic number) say it is, whatever its name;
    None when they match none of the image, video and audio formats a model input can be.
    OSError when the file cannot be read."""
    with open(path, "rb") as fh:
        return sniff_bytes(fh.read(_SNIFF_BYTES))


def sniff_bytes(head: bytes) -> str | None:
    """`sniff_content_type` for a file's bytes (only the first 64 are looked at)."""
    head = head[:_SNIFF_BYTES]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] in _RIFF_KINDS:
        return _RIFF_KINDS[head[8:12]]
    if head[:2] == b"BM" and len(head) >= 14 and head[6:10] == b"\0\0\0\0":  # reserved, always 0
        return "image/bmp"
    if head[:4] in (b"II*\0", b"MM\0*"):
        return "image/tiff"
    if head[4:8] == b"ftyp":
        return _ftyp_type(head)
    if head[:4] == b"\x1a\x45\xdf\xa3":  # EBML: Matroska, or WebM when its doctype says so
        return "video/webm" if b"webm" in head else "video/x-matroska"
    if head[:4] == b"OggS":
        return "audio/ogg"
    if head[:4] == b"fLaC":
        return "audio/flac"
    if head[:3] == b"ID3":
        return "audio/mpeg"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:  # an MPEG audio frame sync
        return "audio/aac" if head[1] & 0x06 == 0 else "audio/mpeg"  # layer bits 00: ADTS AAC
    return None


def _ftyp_type(head: bytes) -> str:
    end = min(int.from_bytes(head[:4], "big"), len(head))
    brands = {head[8:12], *(head[i : i + 4] for i in range(16, end - 3, 4))}
    return next((kind for brand, kind in _FTYP_BRANDS.items() if brand in brands), "video/mp4")


def _stream_fps(stream: av.video.stream.VideoStream) -> Fraction | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return Fraction(rate)
    return None


def _count_decoded(container: av.container.InputContainer, stream, fps: Fraction | None) -> tuple[int, float]:
    """Frame count and duration from the decoded frames' own timestamps."""
    stream.thread_type = "AUTO"  # decoding is the slow part; let FFmpeg use every core
    frames, first, last = 0, None, None
    for frame in container.decode(stream):
        frames += 1
        if frame.time is not None:
            first = frame.time if first is None else min(first, frame.time)
            last = frame.time if last is None else max(last, frame.time)
    if frames == 0:
        return 0, 0.0
    frame_s = 1 / float(fps) if fps else 0.0
    if first is None or last is None:
        return frames, frames * frame_s
    # The span of presentation times plus the last frame's own display time.
    return frames, round(last - first + frame_s, 6)


def _count_packets(container: av.container.InputContainer, stream, fps: Fraction | None) -> tuple[int, float]:
    """Frame count and duration from the packets' timestamps, decoding only until a frame appears.
    Timestamps stay integers in the stream's time base until the end (a Fraction per packet was
    a third of the check's cost)."""
    frames, first, last, decoded = 0, None, None, False
    for packet in container.demux(stream):
        if packet.size == 0:  # the demuxer's final flush packet
            continue
        frames += 1
        pts = packet.pts
        if pts is not None:
            if first is None or pts < first:
                first = pts
            if last is None or pts > last:
                last = pts
        if not decoded:
            decoded = bool(packet.decode())
    if frames and not decoded:
        decoded = any(True for _ in stream.codec_context.decode(None))  # frames held back by the decoder
    if not decoded:
        return 0, 0.0
    frame_s = 1 / float(fps) if fps else 0.0
    if first is None or last is None or stream.time_base is None:
        return frames, frames * frame_s
    return frames, round(float((last - first) * stream.time_base) + frame_s, 6)


def _header_length(container: av.container.InputContainer, stream, fps: Fraction | None) -> tuple[int, float]:
    """Frame count and duration from the stream header (fast, trusts the file)."""
    duration = _header_duration(container, stream) or 0.0
    frames = stream.frames or (round(duration * float(fps)) if fps else 0)
    return frames, round(duration, 6)


def _header_duration(container: av.container.InputContainer, stream) -> float | None:
    """The length the stream's header states, else the container's; None when neither states one."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return container.duration / av.time_base if container.duration else None


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())
