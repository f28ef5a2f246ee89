"""The output step of a job: the provider's clip into the store, downloaded and verified, passed by
the run's clip checks, cut into its shots' parts (a multi-shot group), and delivered to
video/clips as copies of its own.

Store: `<store>/clips/<identity>.mp4`, a group's parts in `<store>/clips/<identity>/part-NN.mp4`
(records.Journal.clip_path, part_path). Delivered: `video/clips/<shot>.mp4`, a group's own clip
`video/clips/group-NN.mp4`. A delivered file someone edited is theirs: it is kept (`kept`).

Clip checks (`RunContext.clip_checks`): callables run, in order, on each clip the provider
returns, after it is downloaded and verified (it decodes, has frames, has the asked length) and
before it is accepted into the store. A check returns None to accept the clip, or a reason to
reject it: then the job fails with that reason, nothing is delivered, and the clip (paid for) is
kept aside as `<store>/clips/<identity>.rejected.mp4`. A check that raises is a bug: the job fails
as an internal error, its request stays `submitted`, and the next run fetches the clip again. A
clip fetched again for a job already done (its store copy lost) is not checked again.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import AivpError
from .files import ensure_dir
from .media import MediaInfo, sha256_file, verify_clip
from .planning import Job
from .providers.base import Download, Outcome, Provider
from .records import Journal
from .split import split_clip

DURATION_TOLERANCE_S = 0.6
_FICLONE = 0x40049409  # linux/fs.h: share the source's extents (btrfs, XFS, bcachefs, APFS-like CoW)


@dataclass(frozen=True)
class Candidate:
    """A clip the provider returned: downloaded and verified, not yet accepted."""

    job: Job  # what was asked: prompt, shots (a group's durations), endpoint, payload
    path: Path  # the downloaded file (its name ends `.part`; it is an MP4 all the same)
    media: MediaInfo  # what it holds, decoded: duration, frames, size, fps, audio
    sha256: str


# None accepts the clip; a reason (a short sentence) rejects it. Run in a worker thread.
ClipCheck = Callable[[Candidate], str | None]


class ClipRejected(Exception):
    """A clip check rejected the clip: `clip` describes the rejected file, kept aside in the store."""

    def __init__(self, check: str, reason: str, clip: Mapping[str, Any]) -> None:
        super().__init__(f"clip rejected by {check}: {reason}")
        self.check, self.reason, self.clip = check, reason, dict(clip)


def check_name(check: ClipCheck) -> str:
    return str(getattr(check, "__name__", None) or type(check).__name__)


class JobOutput:
    """Where one job's clip goes, from the provider's URL to video/clips."""

    def __init__(
        self,
        job: Job,
        provider: Provider,
        journal: Journal,
        delivered: Callable[[str], Path],
        last_delivered: Mapping[str, Mapping[str, Any]],
        checks: Sequence[ClipCheck] = (),
    ) -> None:
        self.job, self.provider, self.journal = job, provider, journal
        self.delivered = delivered  # log id -> its file in video/clips
        # What was last delivered per log id as this run began (records.PlanBoard.delivered).
        self.last_delivered = last_delivered
        self.checks = tuple(checks)
        # A group's deliveries someone edited: kept as they are (and their logs too).
        self.kept: dict[str, Path] = {}

    @property
    def is_group(self) -> bool:
        return bool(self.job.shot_durations_s)

    @property
    def store(self) -> Path:
        return self.journal.clip_path(self.job.identity)

    # -- the deliveries ------------------------------------------------------------------------
    def deliveries(self, record: Mapping[str, Any]) -> list[tuple[str, Path, Mapping[str, Any] | None]]:
        """(log id, delivered file, the clip the record says it is) of each file the job delivers:
        a shot's clip; or a group's clip and each of its shots' parts."""
        if not self.is_group:
            return [(shot.id, self.delivered(shot.id), record.get("clip")) for shot in self.job.shots]
        parts = parts_of(record, len(self.job.shots))
        return [(self.job.key, self.delivered(self.job.key), record.get("clip"))] + [
            (shot.id, self.delivered(shot.id), part) for shot, part in zip(self.job.shots, parts, strict=True)
        ]

    def edited(self, record: Mapping[str, Any]) -> dict[str, Path]:
        """Delivered clips whose bytes are neither this job's stored clip (a group's part) nor the
        one last delivered for the shot: someone edited (or replaced) them, and they are theirs now."""
        edited = {}
        for log_id, path, clip in self.deliveries(record):
            if not path.is_file():
                continue
            last = self.last_delivered.get(log_id) or {}
            if unchanged(path, last.get("delivered") or {}):
                continue
            known = {(clip or {}).get("sha256"), (last.get("clip") or {}).get("sha256")}
            if sha256_file(path) not in known - {None}:
                edited[log_id] = path
        return edited

    def place(self, record: Mapping[str, Any]) -> dict[str, dict[str, int]]:
        """Deliver the stored clip to video/clips/<shot>.mp4 (a group: its clip to
        video/clips/group-NN.mp4 and each stored part to its shot's) as a copy of its own (a reflink
        where the file system has them), so editing it never touches the paid-for original. Returns
        each delivered file's size and mtime by log id, which let the next run skip re-hashing it."""
        sources = [self.store] * len(self.job.shots)
        if self.is_group:
            sources = [self.store] + [
                self.journal.part_path(self.job.identity, k) for k in range(len(self.job.shots))
            ]
        stamps: dict[str, dict[str, int]] = {}
        for src, (log_id, dest, clip) in zip(sources, self.deliveries(record), strict=True):
            if log_id in self.kept:
                continue
            last = self.last_delivered.get(log_id) or {}
            want = (clip or {}).get("sha256")
            # What was delivered before, untouched since, if it was this clip; else compare the bytes.
            same = (last.get("clip") or {}).get("sha256") == want
            in_place = dest.is_file() and (
                (same and unchanged(dest, last.get("delivered") or {})) or sha256_file(dest) == want
            )
            if not in_place:
                part = dest.with_name(dest.name + ".part")
                copy_file(src, part)
                os.replace(part, dest)
            stamps[log_id] = stamp(dest)
        return stamps

    def delivered_fields(self, stamps: Mapping[str, dict[str, int]]) -> dict[str, Any]:
        """The log fields saying what was delivered: the file's size and mtime (a group: its own
        clip's, and each shot's part's under `delivered_parts`)."""
        if not self.is_group:
            return {"delivered": stamps.get(self.job.shots[-1].id) if self.job.shots else {}}
        return {
            "delivered": stamps.get(self.job.key),
            "delivered_parts": {shot.id: stamps.get(shot.id) for shot in self.job.shots},
        }

    # -- the clip in the store -----------------------------------------------------------------
    async def fetch(self, outcome: Outcome) -> dict[str, Any]:
        """Download the result into the store, verified and passed by every clip check; returns
        what the record says of the clip. Raises MediaError (it does not verify), ProviderError or
        OSError (the download failed), ClipRejected (a check rejected it)."""
        return await self._download(outcome, self.checks)

    def at_hand(self, record: Mapping[str, Any]) -> bool:
        """Is the paid-for clip in the store? Else copied back from a delivered copy (a shot's clip,
        a group's own clip) that is still the same bytes."""
        clip = record.get("clip") or {}
        want = clip.get("sha256")
        if self.store.exists() and (unchanged(self.store, clip) or sha256_file(self.store) == want):
            return True
        copies = [self.job.key] if self.is_group else [shot.id for shot in self.job.shots]
        for log_id in copies:
            delivered = self.delivered(log_id)
            if delivered.exists() and sha256_file(delivered) == want:
                copy_file(delivered, self.store)
                return True
        return False

    async def refetch(self, record: Mapping[str, Any]) -> dict[str, Any] | None:
        """The paid-for clip fetched again from its result URL (verified; accepted once already, so
        not checked again); None when it is gone there too."""
        if not record.get("video_url"):
            return None
        try:
            outcome = Outcome(output=record.get("output") or {}, video_url=record["video_url"])
            return await self._download(outcome, ())
        except (AivpError, OSError):
            return None

    async def _download(self, outcome: Outcome, checks: Sequence[ClipCheck]) -> dict[str, Any]:
        dest = self.store
        part = dest.with_name(dest.name + ".part")
        ensure_dir(part.parent)
        got = await self.provider.download(outcome.video_url, part)
        info = await asyncio.to_thread(verify_clip, part, float(self.job.duration_s), DURATION_TOLERANCE_S)
        candidate = Candidate(self.job, part, info, got.sha256)
        for check in checks:
            reason = await asyncio.to_thread(check, candidate)
            if reason is not None:
                aside = dest.with_name(f"{self.job.identity}.rejected.mp4")
                os.replace(part, aside)
                raise ClipRejected(
                    check_name(check), str(reason), {**_clip(aside, got, info), "path": str(aside)}
                )
        os.replace(part, dest)
        return _clip(dest, got, info)

    # -- multi-shot groups: the parts ----------------------------------------------------------
    async def restore_parts(self, record: Mapping[str, Any]) -> list[dict[str, Any] | None] | None:
        """Every part of the group's stored clip at hand in the store: a lost one is copied back
        from its delivered shot clip, else cut again from the stored group clip (never bought).
        Returns the parts when any was put back (to journal), None when all were there."""
        job, journal = self.job, self.journal
        parts = parts_of(record, len(job.shots))
        missing = []
        changed = False
        for k, (shot, part) in enumerate(zip(job.shots, parts, strict=True)):
            stored = journal.part_path(job.identity, k)
            want = (part or {}).get("sha256")
            if want is None:
                missing.append(k)
            elif stored.is_file() and (unchanged(stored, part or {}) or sha256_file(stored) == want):
                continue
            elif (delivered := self.delivered(shot.id)).is_file() and sha256_file(delivered) == want:
                copy_file(delivered, stored.with_name(stored.name + ".part"))
                os.replace(stored.with_name(stored.name + ".part"), stored)
                parts[k] = {**(part or {}), **stamp(stored)}
                changed = True
            else:
                missing.append(k)
        if missing:
            parts = await self.cut_parts(parts, record.get("clip") or {}, only=missing)
        return parts if missing or changed else None

    async def cut_parts(
        self, parts: list[dict[str, Any] | None], clip: Mapping[str, Any], only: list[int] | None = None
    ) -> list[dict[str, Any] | None]:
        """Cut the stored group clip at its shots' durations (split.split_clip, in a worker thread),
        into `<store>/clips/<identity>/part-NN.mp4`; `only` the parts at those indices replace the
        stored ones (the others stay as they are). Returns the parts, each with its sha256."""
        job, journal = self.job, self.journal
        finals = [journal.part_path(job.identity, k) for k in range(len(job.shots))]
        scratch = finals[0].parent / f".cut-{os.getpid()}-{id(self):x}"
        try:
            infos = await asyncio.to_thread(
                split_clip,
                self.store,
                [scratch / final.name for final in finals],
                [float(d) for d in job.shot_durations_s],
            )
            out = list(parts)
            for k, info in enumerate(infos):
                if only is not None and k not in only:
                    continue
                os.replace(info.path, finals[k])
                out[k] = {
                    "shot": job.shots[k].id,
                    **stamp(finals[k]),
                    "sha256": info.sha256,
                    "start_s": round(info.start_s, 3),
                    "duration_s": round(info.duration_s, 3),
                    "expected_s": info.expected_s,
                    "frames": info.frames,
                    "width": clip.get("width"),
                    "height": clip.get("height"),
                    "fps": clip.get("fps"),
                    "has_audio": info.has_audio,
                }
            return out
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def _clip(path: Path, got: Download, info: MediaInfo) -> dict[str, Any]:
    """What the record says of a downloaded clip."""
    stat = path.stat()
    return {
        "mtime_ns": stat.st_mtime_ns,
        "bytes": got.size,
        "sha256": got.sha256,  # taken while downloading: the clip is never read again to hash it
        "duration_s": round(info.duration_s, 3),
        "frames": info.frames,
        "width": info.width,
        "height": info.height,
        "fps": info.fps,
        "has_audio": info.has_audio,
    }


def parts_of(record: Mapping[str, Any], count: int) -> list[dict[str, Any] | None]:
    """A group record's (or log's) parts, one per shot (None where a part is not known)."""
    parts = record.get("parts")
    if not isinstance(parts, list) or len(parts) != count:
        return [None] * count
    return [dict(p) if isinstance(p, Mapping) and p.get("sha256") else None for p in parts]


def stamp(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def unchanged(path: Path, clip: Mapping[str, Any]) -> bool:
    """Same size and mtime as when it was stored and hashed: skip re-hashing a big clip."""
    if not clip.get("mtime_ns"):
        return False
    st = path.stat()
    return st.st_size == clip.get("bytes") and st.st_mtime_ns == clip.get("mtime_ns")


def copy_file(src: Path, dest: Path) -> None:
    """An independent copy: a reflink (FICLONE) where the file system shares extents, else bytes."""
    dest.parent.mkdir(parents=True, exist_ok=True)  # not ensure_dir: the store may have been cleared
    if hasattr(fcntl, "ioctl"):
        try:
            with open(src, "rb") as s, open(dest, "wb") as d:
                fcntl.ioctl(d.fileno(), _FICLONE, s.fileno())
            return
        except OSError:
            pass  # not a reflink-capable file system (ext4, tmpfs, across devices): copy the bytes
    shutil.copyfile(src, dest)
