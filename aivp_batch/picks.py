"""Picking a sweep take: `aivp pick SWEEP_DIR shot-03=MEMBER` makes one member's clip of a shot the
project's clip, as if the project's own run had delivered it.

- The take's clip is copied to `<project>/video/clips/shot-03.mp4` and the member's log becomes
  `<project>/video/log/shot-03.json` (its `file` and `delivered` stamp rewritten for the copy, a
  `picked` entry added), and `plan.md` is rewritten (`records.PlanBoard`). The log carries the
  clip's sha256 and the job identity, so the runner sees the copy as its own delivery: a later run
  with the take's settings reuses it (nothing re-rendered), and it is never mistaken for an edit.
- Where the project's job store is not the one the sweep used, the take's journal record and
  stored clip are copied into it, so the project never pays for that render again.
- Never overwrites a project clip someone edited on disk (the runner's rule: its bytes are neither
  the clip its log names nor the take) without `force`.
- The pick is recorded in the sweep dir's `picks.json`, which `aivp index` shows.

Everything is checked before anything is copied: an unknown member or shot, or a take that did not
finish, is an `InputError` (one line, exit 2).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf, open_dict

from .errors import InputError
from .files import atomic_write_json
from .media import sha256_file
from .records import DONE, Journal, PlanBoard, now_iso, read_json, relpath
from .store_lock import run_lock
from .sweep_index import INDEX_JSON, PICKS_JSON, build_index, member_dirs, read_picks


@dataclass
class Take:
    shot: str
    member: str
    member_dir: Path
    log: dict[str, Any]
    source: Path  # the clip to copy (the member's delivery, else the stored clip)
    sha256: str
    project_dir: Path
    output_dir: Path
    store_dir: Path
    member_store: Path


def shot_id(text: str) -> str:
    """`shot-03`, `3` and `03` all name shot-03."""
    text = text.strip()
    if re.fullmatch(r"\d+", text):
        return f"shot-{int(text):02d}"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", text):
        raise InputError(f"{text!r} is not a shot id (e.g. shot-03, or 3)")
    return text


def parse_choice(text: str) -> tuple[str, str]:
    """`shot-03=model=kling_v3,seed=2` → (`shot-03`, `model=kling_v3,seed=2`): the shot is before
    the first `=`; member names have `=` in them."""
    shot, sep, member = text.partition("=")
    if not sep or not shot.strip() or not member.strip():
        raise InputError(f"{text!r}: expected SHOT=MEMBER, e.g. shot-03=model=kling_v3,seed=2")
    return shot_id(shot), member.strip()


def find_take(sweep_dir: Path, shot: str, member: str, project: Path | None = None) -> Take:
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise InputError(f"{sweep_dir}: no such sweep folder")
    members = member_dirs(sweep_dir)
    if member not in members:
        raise InputError(
            f"unknown member {member!r} in {sweep_dir} (members: {', '.join(members) or 'none'})"
        )
    mdir = sweep_dir / member
    log = read_json(mdir / "video" / "log" / f"{shot}.json")
    if log is None:
        shots = sorted({p.stem for m in members for p in (sweep_dir / m / "video" / "log").glob("*.json")})
        if shot not in shots:
            raise InputError(f"unknown shot {shot!r} in {sweep_dir} (shots: {', '.join(shots) or 'none'})")
        raise InputError(f"{member} has no take of {shot} (its run did not get to it)")
    if log.get("status") != DONE:
        reason = log.get("error") or f"status {log.get('status')}"
        raise InputError(
            f"{shot} of {member} did not finish ({' '.join(str(reason).split())}): nothing to pick"
        )
    want = (log.get("clip") or {}).get("sha256")
    cfg = _member_config(mdir)
    if project is not None:
        with open_dict(cfg):
            cfg.project_dir = str(Path(project).expanduser().resolve())
    if not cfg.get("project_dir"):
        raise InputError(f"{member} was not run on a project (no project_dir); say which with --project")
    from .app import resolve_paths  # the project's own paths, as its runs resolve them

    paths = resolve_paths(cfg, mdir, sweep_member=False)
    member_store = resolve_paths(_member_config(mdir), mdir, sweep_member=True).store_dir
    candidates = [mdir / str(log.get("file") or f"video/clips/{shot}.mp4")]
    if log.get("identity"):
        candidates.append(Journal(member_store).clip_path(str(log["identity"])))
    source = next((c for c in candidates if c.is_file() and want and sha256_file(c) == want), None)
    if source is None:
        raise InputError(
            f"{shot} of {member}: no copy of the clip its log describes (changed on disk or gone): not picked"
        )
    assert paths.project_dir is not None
    return Take(
        shot,
        member,
        mdir,
        log,
        source,
        str(want),
        paths.project_dir,
        paths.output_dir,
        paths.store_dir,
        member_store,
    )


def _member_config(mdir: Path) -> Any:
    try:
        return OmegaConf.load(mdir / ".hydra" / "config.yaml")
    except (OSError, ValueError) as exc:
        raise InputError(f"{mdir}: cannot read its .hydra/config.yaml ({exc})") from None


def edited(take: Take) -> Path | None:
    """The project's clip of the shot when someone changed it on disk: its bytes are neither the
    clip the project's log names nor the take (the runner's rule). None when it is safe to replace."""
    dest = take.output_dir / "clips" / f"{take.shot}.mp4"
    if not dest.is_file():
        return None
    log = read_json(take.output_dir / "log" / f"{take.shot}.json") or {}
    stamp = log.get("delivered") or {}
    stat = dest.stat()
    if (
        log.get("status") == DONE
        and stamp.get("mtime_ns")
        and (stat.st_size, stat.st_mtime_ns)
        == (
            stamp.get("bytes"),
            stamp.get("mtime_ns"),
        )
    ):
        return None
    known = {take.sha256}
    if log.get("status") == DONE:
        known.add((log.get("clip") or {}).get("sha256"))
    return None if sha256_file(dest) in known else dest


def apply(take: Take, sweep_dir: Path) -> dict[str, Any]:
    """Copy the take and its log into the project; returns the project log written."""
    from .output import copy_file

    dest = take.output_dir / "clips" / f"{take.shot}.mp4"
    part = dest.with_name(dest.name + ".part")
    copy_file(take.source, part)
    os.replace(part, dest)
    stat = dest.stat()
    identity = take.log.get("identity")
    # A part of a multi-shot group is not its job's clip: the group's own record stays in the
    # member's store (the take's shot clip is copied, its group is not adopted).
    if identity and take.store_dir != take.member_store and not take.log.get("group"):
        journal, theirs = Journal(take.store_dir), Journal(take.member_store)
        if (journal.get(str(identity)) or {}).get("status") != DONE and (record := theirs.get(str(identity))):
            stored = journal.clip_path(str(identity))
            copy_file(take.source, stored.with_name(stored.name + ".part"))
            os.replace(stored.with_name(stored.name + ".part"), stored)
            st = stored.stat()
            clip = {**(record.get("clip") or {}), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
            journal.put(str(identity), {**record, "clip": clip})
    picked = {"sweep_dir": str(Path(sweep_dir).resolve()), "member": take.member, "at": now_iso()}
    log = {
        **take.log,
        "file": relpath(dest, take.output_dir.parent),
        "delivered": {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns},
        "picked": picked,
        "note": f"picked from sweep member {take.member}",
    }
    board = PlanBoard(take.output_dir)
    board.update(take.shot, log)
    board.flush()
    return log


def pick(
    sweep_dir: Path, choices: list[tuple[str, str]], project: Path | None = None, force: bool = False
) -> list[Take]:
    """Check every choice, then copy each take into its project and record the picks."""
    sweep_dir = Path(sweep_dir)
    shots = [shot for shot, _ in choices]
    if len(set(shots)) != len(shots):
        raise InputError("one take per shot: a shot is named twice")
    takes = [find_take(sweep_dir, shot, member, project) for shot, member in choices]
    for take in takes:
        if not force and (path := edited(take)):
            raise InputError(
                f"{relpath(path, take.project_dir)} in {take.project_dir} was changed on disk (it is not the "
                "clip its log names); not overwriting it without --force"
            )
    for store, output in dict.fromkeys((t.store_dir, t.output_dir) for t in takes):
        with run_lock(store, output, wait_s=0):  # no run of the project is writing its clips meanwhile
            for take in (t for t in takes if (t.store_dir, t.output_dir) == (store, output)):
                apply(take, sweep_dir)
    picks = read_picks(sweep_dir)
    for take in takes:
        picks[take.shot] = {
            "member": take.member,
            "at": now_iso(),
            "project_dir": str(take.project_dir),
            "clip": relpath(take.output_dir / "clips" / f"{take.shot}.mp4", take.project_dir),
            "sha256": take.sha256,
        }
    atomic_write_json(sweep_dir / PICKS_JSON, dict(sorted(picks.items())))
    if (sweep_dir / INDEX_JSON).exists():
        build_index(sweep_dir)  # the gallery shows the pick
    return takes
