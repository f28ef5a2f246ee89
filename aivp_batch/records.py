"""What a render leaves behind: per-shot JSON logs, `video/plan.md`, the job journal and run
summaries. Every file is written atomically (temp file, fsync, rename), so a crash leaves either
the old or the new version, never half of one.

- `video/log/shot-NN.json`: the spec's log fields plus everything needed to redo the render.
- `video/plan.md`: rendered from the logs after every change; never hand-edited.
- `<store>/jobs/<identity>.json`: the journal, keyed by job identity. It is written with the
  request id *before* waiting, so a killed run re-attaches instead of paying again.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PLAN_HEADER = (
    "| # | Type | File | Model | Mode | Status | Seed | Cost | Request ID |\n"
    "|---|------|------|-------|------|--------|------|------|------------|\n"
)

# Journal statuses: `submitted` (a request id exists), `done`, `failed` (final; resubmittable),
# `unknown` (a submit whose answer was lost: never resubmitted automatically).
SUBMITTED, DONE, FAILED, UNKNOWN = "submitted", "done", "failed", "unknown"


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def atomic_write_text(path: Path, text: str, *, durable: bool = True) -> None:
    """Write via a temp file and rename; `durable` also fsyncs (the journal needs it, views don't)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Mapping[str, Any], *, durable: bool = True) -> None:
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"
    atomic_write_text(path, text, durable=durable)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class Journal:
    """Job records keyed by identity, shared by every run and sweep over a project."""

    def __init__(self, store_dir: Path) -> None:
        self.dir = store_dir / "jobs"
        self.clips = store_dir / "clips"

    def get(self, identity: str) -> dict[str, Any] | None:
        return read_json(self.dir / f"{identity}.json")

    def put(self, identity: str, record: Mapping[str, Any]) -> dict[str, Any]:
        data = {**record, "identity": identity, "updated": now_iso()}
        atomic_write_json(self.dir / f"{identity}.json", data)
        return data

    def clip_path(self, identity: str) -> Path:
        return self.clips / f"{identity}.mp4"


def relpath(path: Path | str | None, root: Path | None) -> str | None:
    """A path as recorded: relative to the project when inside it, else as given."""
    if path is None:
        return None
    p = Path(path)
    if root is not None:
        try:
            return p.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            pass
    return p.as_posix()


def read_logs(log_dir: Path) -> list[dict[str, Any]]:
    logs = [read_json(p) for p in sorted(log_dir.glob("*.json"))]
    return [log for log in logs if log]


def render_plan(logs: Iterable[Mapping[str, Any]]) -> str:
    """The spec's plan table, plus Seed, Cost and Request ID."""
    rows = []
    for i, log in enumerate(sorted(logs, key=_order), start=1):
        cost = log.get("cost_usd")
        rows.append(
            "| {} | {} | `{}` | `{}` | {} | {} | {} | {} | {} |".format(
                i,
                log.get("id", "?"),
                log.get("file") or "",
                log.get("model") or "",
                log.get("mode") or "",
                log.get("status", "pending"),
                "" if log.get("seed") is None else log["seed"],
                "" if cost is None else f"${cost:.2f}",
                log.get("request_id") or "",
            )
        )
    body = "\n".join(rows) + ("\n" if rows else "")
    return "# Video generation plan\n\n" + PLAN_HEADER + body


def _order(log: Mapping[str, Any]) -> tuple[int, str]:
    shot_id = str(log.get("id", ""))
    digits = "".join(ch for ch in shot_id if ch.isdigit())
    return (int(digits) if digits else 10**9, shot_id)


def write_plan(output_dir: Path) -> Path:
    """Rewrite `plan.md` from the logs on disk."""
    path = output_dir / "plan.md"
    atomic_write_text(path, render_plan(read_logs(output_dir / "log")), durable=False)
    return path


class PlanBoard:
    """The shot logs of an output dir, held in memory so each change rewrites one log and plan.md
    without re-reading every other log."""

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = output_dir
        self.log_dir = output_dir / "log"
        self.logs = {str(log.get("id")): log for log in read_logs(self.log_dir)}

    def update(self, shot_id: str, log: Mapping[str, Any]) -> None:
        self.logs[shot_id] = dict(log)
        atomic_write_json(self.log_dir / f"{shot_id}.json", log, durable=False)
        atomic_write_text(self.output_dir / "plan.md", render_plan(self.logs.values()), durable=False)
