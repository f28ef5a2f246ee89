"""What a render leaves behind: per-shot JSON logs, `video/plan.md`, the job journal and run
summaries. A crash leaves either the old or the new version of each, never half of one: logs and
views are renamed into place, journal records appended whole.

- `video/log/shot-NN.json`: the spec's log fields plus everything needed to redo the render. Under
  strategy=multishot a group has its own `video/log/group-NN.json` (type `group`, its clip and
  its shots), and each of its shots' logs names the group and describes the shot's own part.
- `video/plan.md`: rendered from the logs as they change (at most every `log_interval_s`, the
  logs with it); never hand-edited.
- `<store>/jobs/<identity>.jsonl`: the journal, keyed by job identity. It is written with the
  request id *before* waiting, so a killed run re-attaches instead of paying again. Each
  transition appends the whole record as one line and fsyncs it; the last line that parses is the
  record, so a write torn by a crash leaves the one before it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from .files import append_bytes, appended_records, atomic_write_json, atomic_write_text, dumps

PLAN_HEADER = (
    "| # | Type | File | Model | Mode | Status | Seed | Cost | Request ID | Note |\n"
    "|---|------|------|-------|------|--------|------|------|------------|------|\n"
)
NO_SEED = "—, not taken by this model"
SUPERSEDED = "its shots were rendered another way since; this clip stays"
_NOTE_CHARS = 160


class JobState(StrEnum):
    """A job's state in the journal. A `str`, so records stay plain JSON and read back as equal."""

    SUBMITTED = "submitted"  # a request id exists: re-attach to it, never submit again
    DONE = "done"  # the clip is in the store and paid for
    FAILED = "failed"  # final; safe to submit again
    UNKNOWN = "unknown"  # a submit whose answer was lost: never resubmitted automatically


SUBMITTED, DONE, FAILED, UNKNOWN = JobState.SUBMITTED, JobState.DONE, JobState.FAILED, JobState.UNKNOWN


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


_COMPACT_BYTES = 64 * 1024  # a record file past this is rewritten with its last record alone


def last_record(data: bytes) -> dict[str, Any] | None:
    """The last line of `data` that is a whole JSON object: the latest record written in full."""
    return next(appended_records(data, newest_first=True), None)


class Journal:
    """Job records keyed by identity, shared by every run and sweep over a project.

    A record is appended, not renamed into place: a rename allocates an inode and frees one per
    transition, and ext4 scans past every recently freed inode on each allocation, so a run of
    thousands of jobs slowed as it went. An append that a crash tears is a line that does not
    parse; each record starts on a new line, so the next one stands on its own."""

    def __init__(self, store_dir: Path) -> None:
        self.dir = store_dir / "jobs"
        self.clips = store_dir / "clips"

    def path(self, identity: str) -> Path:
        return self.dir / f"{identity}.jsonl"

    def get(self, identity: str) -> dict[str, Any] | None:
        try:
            record = last_record(self.path(identity).read_bytes())
        except FileNotFoundError:
            record = None
        # A store from before records were appended holds one JSON document per job.
        return record if record is not None else read_json(self.dir / f"{identity}.json")

    def put(self, identity: str, record: Mapping[str, Any]) -> dict[str, Any]:
        data = {**record, "identity": identity, "updated": now_iso()}
        line = dumps(data, pretty=False)
        if append_bytes(self.path(identity), ("\n" + line).encode("utf-8")) > _COMPACT_BYTES:
            atomic_write_text(self.path(identity), line)  # many reruns of one job: keep the last
        return data

    async def aput(self, identity: str, record: Mapping[str, Any]) -> dict[str, Any]:
        """`put` from a worker thread (its fsync waits there, not on the event loop); the caller
        still waits for it, so the record is durable before the step it guards."""
        return await asyncio.to_thread(self.put, identity, record)

    def clip_path(self, identity: str) -> Path:
        return self.clips / f"{identity}.mp4"

    def part_path(self, identity: str, index: int) -> Path:
        """A multi-shot group's clip cut at its shots (index 0 is the first): kept beside the clip,
        by position, so two groups with one identity share their parts too."""
        return self.clips / identity / f"part-{index + 1:02d}.mp4"


class UploadCache:
    """URLs of files already uploaded, by provider and content sha256, kept for `ttl_s` (fal keeps
    uploads for days; reusing the URL saves re-uploading a keyframe on every rerun)."""

    def __init__(self, store_dir: Path, ttl_s: float) -> None:
        self.path = store_dir / "uploads.json"
        self.ttl_s = ttl_s
        self._entries: dict[str, dict[str, Any]] = read_json(self.path) or {}

    def get(self, provider: str, sha256: str) -> str | None:
        entry = self._entries.get(f"{provider}:{sha256}")
        if entry and time.time() - float(entry.get("at", 0)) < self.ttl_s:
            return str(entry["url"])
        return None

    def put(self, provider: str, sha256: str, url: str) -> None:
        self._entries[f"{provider}:{sha256}"] = {"url": url, "at": time.time()}
        atomic_write_json(self.path, self._entries, pretty=False)


def relpath(path: Path | str | None, root: Path | None) -> str | None:
    """A path as recorded: relative to the project when inside it, else as given."""
    if path is None:
        return None
    p = Path(path)
    if root is not None:
        if p.is_absolute() and root.is_absolute() and p.is_relative_to(root) and ".." not in p.parts:
            return p.relative_to(root).as_posix()  # as spelled: no file-system call (logs ask often)
        try:
            return p.resolve().relative_to(_resolved(root)).as_posix()
        except ValueError:
            pass
    return p.as_posix()


@functools.lru_cache(maxsize=64)
def _resolved(root: Path) -> Path:
    return root.resolve()


def read_logs(log_dir: Path) -> list[dict[str, Any]]:
    logs = [read_json(p) for p in sorted(log_dir.glob("*.json"))]
    return [log for log in logs if log]


def plan_row(log: Mapping[str, Any]) -> str:
    """One table row, without its leading `| # ` column. Model: the model config's name (the
    endpoint is in the log). Cost: `$0.26` billed, `~$0.26` our estimate (the provider reported no
    bill), blank until the clip is done. Note: why it failed, was adjusted, reused or reconciled."""
    seed = log.get("seed")
    cells = (
        log.get("id", "?"),
        f"`{log.get('file') or ''}`",
        f"`{log.get('model_config') or log.get('model') or ''}`",
        log.get("mode") or "",
        log.get("status", "pending"),
        NO_SEED if log.get("seed_sent") is False else "" if seed is None else seed,
        _cost_cell(log),
        log.get("request_id") or "",
        _note(log),
    )
    return " | ".join(_cell(c) for c in cells) + " |"


def _note(log: Mapping[str, Any]) -> str:
    parts = [log.get("error") if log.get("status") in (FAILED, UNKNOWN) else None]
    parts += (
        str(log.get("duration_note") or "").split("; ") + list(log.get("notes") or []) + [log.get("note")]
    )
    if log.get("group"):  # a shot of a multi-shot group: its cost is on the group's row
        parts.insert(0, f"part {log.get('part') or '?'} of {log['group']}")
    elif log.get("type") == "group":  # what concerns one of its shots is said on that shot's row
        shots = [str(s) for s in log.get("shots") or ()]
        parts = [p for p in parts if not str(p).startswith(tuple(f"{s}:" for s in shots))]
        parts.insert(0, f"group of {', '.join(shots)}")
    text = "; ".join(str(p) for p in dict.fromkeys(parts) if p)
    return text if len(text) <= _NOTE_CHARS else text[: _NOTE_CHARS - 1] + "…"


def _cell(value: Any) -> str:
    """A table cell: one line, and a `|` in it does not start a new column."""
    return " ".join(str(value).split()).replace("|", "\\|")


def _cost_cell(log: Mapping[str, Any]) -> str:
    cost = log.get("cost_usd")
    if log.get("status") != DONE or not isinstance(cost, int | float) or log.get("group"):
        return ""
    return f"${cost:.2f}" if log.get("cost_source") == "billed" or not cost else f"~${cost:.2f}"


def _costs(log: Mapping[str, Any]) -> tuple[float, float]:
    """(billed, estimated) of a done shot's clip, for the plan's totals line; a multi-shot group's
    once, on its own row (its shots' rows add nothing)."""
    if log.get("status") != DONE or log.get("group"):
        return 0.0, 0.0
    cost = float(log.get("cost_usd") or 0.0)
    estimate = float(log.get("estimate_usd") or cost)
    return (cost if log.get("cost_source") == "billed" else 0.0), estimate


def _plan_text(rows: list[tuple[int | str, str]], costs: list[tuple[float, float]]) -> str:
    """`rows`: (shot number, row); `#` is the shot's number (shot-07 → 7), not the row's; blank for
    a multi-shot group's row (its shots' rows follow it)."""
    body = "".join(
        f"| {number if isinstance(number, int) and number < 10**9 else ''} | {row}\n" for number, row in rows
    )
    billed, estimated = sum(c[0] for c in costs), sum(c[1] for c in costs)
    totals = f"\nTotal of the clips listed: ${billed:.2f} billed; ${estimated:.2f} estimated.\n"
    return "# Video generation plan\n\n" + PLAN_HEADER + body + totals


def _order(log: Mapping[str, Any]) -> tuple[int, int, str]:
    """(shot number, 0 for a multi-shot group's row and 1 for a shot's, id): by shot number, each
    group's row just before its first shot's."""
    shot_id = str(log.get("id", ""))
    group = log.get("type") == "group" and log.get("shots")
    digits = "".join(ch for ch in str(log["shots"][0] if group else shot_id) if ch.isdigit())
    return (int(digits) if digits else 10**9, 0 if group else 1, shot_id)


_PLAN_S_PER_ROW = 0.0005  # plan.md's least interval between rewrites, per row it lists
_ON_THE_WAY = ("pending", "queued")  # a log in these states is written when the run ends, if still so


class PlanBoard:
    """The shot logs of an output dir, held in memory so a change rewrites the logs that changed
    and plan.md without re-reading every other log."""

    def __init__(self, output_dir: Path, min_interval_s: float = 0.2) -> None:
        self.output_dir = output_dir
        self.log_dir = output_dir / "log"
        self.min_interval_s = min_interval_s
        logs = read_logs(self.log_dir)
        # Each shot's rendered row, so a change re-formats one row, not the whole table.
        self._rows: dict[str, tuple[tuple[int, int, str], str, tuple[float, float]]] = {}
        self._groups: dict[str, Mapping[str, Any]] = {}  # multi-shot groups' logs, by group id
        self._part_of: dict[str, str | None] = {}  # the group each shot's log says it is part of
        for log in logs:
            self._remember(str(log.get("id")), log)
        # What was last delivered per shot (as this run began): the clip's hash and the delivered
        # copy's size/mtime, to tell a clip someone edited from one we put there.
        self.delivered: dict[str, dict[str, Any]] = {
            str(log.get("id")): {
                "clip": log.get("clip"),
                "delivered": log.get("delivered"),
                "identity": log.get("identity"),
            }
            for log in logs
            if log.get("status") == DONE and log.get("clip")
        }
        self._unwritten: dict[str, Mapping[str, Any]] = {}  # shot logs changed since the last flush
        self._written_at = 0.0
        self._pending: asyncio.TimerHandle | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._writing: Future[None] | None = None  # the last batch handed to the writer

    def unplanned(self, shot_id: str, reason: str) -> None:
        """A shot whose spec could not be used: listed as failed with the reason. A shot that
        has a log (a clip from before) keeps it: the broken spec changed nothing on disk."""
        if shot_id not in self._rows:
            self.update(shot_id, {"id": shot_id, "type": "clip", "status": FAILED, "error": reason})

    def has(self, shot_id: str) -> bool:
        return shot_id in self._rows

    def update(self, shot_id: str, log: Mapping[str, Any]) -> None:
        """The shot's log changed. It and plan.md are written now, or within `min_interval_s` during
        a burst of changes, so a job that moves on within it is written once (hundreds of jobs
        changing at once would otherwise rewrite plan.md hundreds of times, and each rewrite of a
        log costs an inode). Nothing relies on a log being current: the journal is what a rerun
        trusts, and it writes every log again from it."""
        self._raise_write_error()
        self._remember(shot_id, log)
        self._unwritten[shot_id] = log
        # Each rewrite formats every row: past a few hundred shots, rewrite less often (1.5 s at
        # 3,000), so plan.md's cost per clip stays flat whatever the run's size.
        interval = max(self.min_interval_s, len(self._rows) * _PLAN_S_PER_ROW)
        wait = interval - (time.monotonic() - self._written_at)
        if wait <= 0:
            self._write(final=False)
        elif self._pending is None:
            try:
                self._pending = asyncio.get_running_loop().call_later(wait, self._write, False)
            except RuntimeError:  # no event loop: write at once
                self.flush()

    def _remember(self, shot_id: str, log: Mapping[str, Any]) -> None:
        self._rows[shot_id] = (_order(log), plan_row(log), _costs(log))
        if log.get("type") == "group":
            self._groups[shot_id] = log
        else:
            self._part_of[shot_id] = log.get("group")

    def _superseded(self) -> dict[str, str]:
        """The rows of groups whose shots have all been rendered another way since (another
        grouping, or one by one): the group's clip and cost stay listed, saying so."""
        rows = {}
        for group_id, log in self._groups.items():
            shots = [str(s) for s in log.get("shots") or ()]
            if shots and all(self._part_of.get(s) != group_id for s in shots):
                rows[group_id] = plan_row({**log, "note": SUPERSEDED})
        return rows

    def flush(self) -> None:
        """Write every log not yet written, and plan.md: at the end of a run, or of a command."""
        self._write(final=True)

    def _write(self, final: bool) -> None:
        """Before the end, a log that says its job is on the way (`pending`, `queued`) waits for
        the job's next state: plan.md lists the shot meanwhile, with its request id, and the
        journal holds it durably (every such log would be written only to be replaced, each
        rewrite freeing an inode). The texts are made here; during a run the files are written by
        one worker thread, in order, so hundreds of them at once never stall the event loop."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        files: list[tuple[Path, str]] = []
        waiting: dict[str, Mapping[str, Any]] = {}
        for shot_id, log in self._unwritten.items():
            if final or log.get("status") not in _ON_THE_WAY:
                files.append((self.log_dir / f"{shot_id}.json", dumps(log)))
            else:
                waiting[shot_id] = log
        self._unwritten = waiting
        superseded = self._superseded()
        ordered = sorted(
            ((order, superseded.get(key, row), cost) for key, (order, row, cost) in self._rows.items()),
            key=lambda r: r[0],
        )
        text = _plan_text(
            [("" if order[1] == 0 else order[0], row) for order, row, _ in ordered],
            [cost for _, _, cost in ordered],
        )
        files.append((self.output_dir / "plan.md", text))
        self._written_at = time.monotonic()
        previous, self._writing = self._writing, None
        if final:
            _write_texts(files, previous)  # after the batch in the air; its error is raised here
            if self._writer is not None:
                self._writer.shutdown()
                self._writer = None
            return
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aivp-logs")
        self._writing = self._writer.submit(_write_texts, files, previous)

    def _raise_write_error(self) -> None:
        """A batch that failed (a full disk, a folder made read-only) fails the change after it."""
        if self._writing is not None and self._writing.done() and self._writing.exception():
            self._writing, failed = None, self._writing
            failed.result()


def _write_texts(files: list[tuple[Path, str]], before: Future[None] | None = None) -> None:
    if before is not None:
        before.result()  # the batch before this one goes first; its error is this one's
    for path, text in files:
        atomic_write_text(path, text, durable=False)
