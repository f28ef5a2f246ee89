"""A sweep's clips side by side: `index.json`, `index.html` and `contact-sheet.png` in the sweep dir.

Written when a sweep ends (the `aivp` sweeper, after the last member) and on demand with
`aivp index SWEEP_DIR` (an interrupted sweep, one run elsewhere). Everything is read from what the
members left behind, never from memory: each member dir's `.hydra/overrides.yaml`, `summary.json`
and `video/log/shot-NN.json`, and the sweep dir's `sweep.json` (member order) and `picks.json`.

- `index.json`: one row per shot × member (overrides, model, endpoint, tier, seeds requested / sent /
  returned, duration, resolution, cost, request id, clip path and sha256, status and reason).
- `index.html`: rows = shots, columns = members; each cell the clip (`<video>` with a poster), its
  cost and seed (a *take* where the model took no seed), a failed cell's reason; the header shows
  each member's config differences. Links are relative (`posters/<member>/<shot>.jpg`, the
  members' own clips), so it works from the file system and from a static server. Every piece of
  text is escaped: prompts and errors are user data.
- `contact-sheet.png`: the first, middle and last frame of every cell, each cell labelled; pages of
  50 cells (`contact-sheet-2.png`, …) past the first, so a 1,200-clip sweep is neither one
  200,000-pixel-tall image nor half a gigabyte of pixels held at once.
"""

from __future__ import annotations

import html
import io
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import av
import yaml
from PIL import Image, ImageDraw, ImageFont

from .errors import InputError
from .files import atomic_write_bytes, atomic_write_text
from .media import sha256_file
from .records import DONE, now_iso, read_json

INDEX_JSON, INDEX_HTML, CONTACT_SHEET, PICKS_JSON = (
    "index.json",
    "index.html",
    "contact-sheet.png",
    "picks.json",
)
POSTERS = "posters"
THUMB_W = 240  # a contact-sheet frame's width; its height follows the clip's aspect ratio
THUMB_H = 135  # the height of a frame's box (frames are fitted inside, letterboxed)
LABEL_H = 34  # the label strip above each cell's frames
GAP = 6
POSTER_W = 480
FRAMES_PER_CELL = 3
# A contact sheet holds at most this many cells; a bigger sweep gets contact-sheet-2.png, -3…: a page
# stays readable (about 8,800 px tall) and building it holds one page's pixels, never the sweep's.
CELLS_PER_SHEET = 50


@dataclass
class Cell:
    shot: str
    member: str
    status: str  # done | failed | pending | unknown | missing
    reason: str | None = None
    log: dict[str, Any] = field(default_factory=dict)
    clip: Path | None = None  # the member's clip, when it exists


def member_dirs(sweep_dir: Path) -> list[str]:
    """The members in sweep order: `sweep.json`'s list, else every sub-folder that holds a Hydra
    run (`.hydra/overrides.yaml`), by name (an interrupted sweep has no `sweep.json` yet)."""
    data = read_json(sweep_dir / "sweep.json") or {}
    names = [str(m.get("name")) for m in data.get("members") or [] if isinstance(m, dict) and m.get("name")]
    found = sorted(p.name for p in sweep_dir.iterdir() if (p / ".hydra" / "overrides.yaml").is_file())
    return [n for n in names if n in found] + [n for n in found if n not in names]


def read_overrides(member_dir: Path) -> list[str]:
    try:
        data = yaml.safe_load((member_dir / ".hydra" / "overrides.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return []
    return [str(o) for o in data] if isinstance(data, list) else []


# Set for every member by the sweep itself, not chosen by the user: not a "difference".
_NOT_CHOSEN = ("hydra.", "budget_usd")


def differences(overrides: Mapping[str, Sequence[str]]) -> dict[str, dict[str, str]]:
    """Per member, the `key: value` of each override whose value is not the same in every member
    (what the sweep varies), in command-line order."""
    parsed = {
        member: {o.split("=", 1)[0].lstrip("+~"): o.split("=", 1)[1] if "=" in o else "" for o in ovs}
        for member, ovs in overrides.items()
    }
    keys: list[str] = []
    for values in parsed.values():
        keys += [k for k in values if k not in keys and not k.startswith(_NOT_CHOSEN)]
    varying = [k for k in keys if len({values.get(k) for values in parsed.values()}) > 1]
    return {m: {k: values.get(k, "(default)") for k in varying} for m, values in parsed.items()}


def read_picks(sweep_dir: Path) -> dict[str, dict[str, Any]]:
    data = read_json(sweep_dir / PICKS_JSON) or {}
    return {str(k): v for k, v in data.items() if isinstance(v, dict)}


def _shot_key(shot: str) -> tuple[int, str]:
    digits = "".join(ch for ch in shot if ch.isdigit())
    return (int(digits) if digits else 10**9, shot)


def collect(sweep_dir: Path) -> tuple[list[str], list[str], list[Cell]]:
    """(members, shots, cells) of the sweep, cells in shot-then-member order."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise InputError(f"{sweep_dir}: no such sweep folder")
    members = member_dirs(sweep_dir)
    if not members:
        raise InputError(f"{sweep_dir}: not a sweep folder (no member has a .hydra/overrides.yaml)")
    logs: dict[str, dict[str, dict[str, Any]]] = {}
    summaries: dict[str, dict[str, Any]] = {}
    shots: set[str] = set()
    for member in members:
        mdir = sweep_dir / member
        summaries[member] = read_json(mdir / "summary.json") or {}
        logs[member] = {
            str(log.get("id")): log
            for p in sorted((mdir / "video" / "log").glob("*.json"))
            if (log := read_json(p)) and log.get("id")
        }
        shots |= set(logs[member])
        shots |= {str(r.get("shot")) for r in summaries[member].get("results") or [] if r.get("shot")}
        shots |= {str(j.get("shot")) for j in (summaries[member].get("plan") or {}).get("jobs") or []}
    shots.discard("None")
    ordered = sorted(shots, key=_shot_key)
    cells = []
    for shot in ordered:
        for member in members:
            cells.append(_cell(sweep_dir / member, shot, member, logs[member].get(shot), summaries[member]))
    return members, ordered, cells


def _cell(mdir: Path, shot: str, member: str, log: dict[str, Any] | None, summary: dict[str, Any]) -> Cell:
    if log is None:
        reason = summary.get("error") or ("not run (interrupted?)" if not summary else "no log for this shot")
        return Cell(shot, member, "missing", str(reason).splitlines()[0])
    status = str(log.get("status") or "pending")
    cell = Cell(shot, member, status, log.get("error") if status != DONE else None, log)
    clip = mdir / str(log.get("file") or f"video/clips/{shot}.mp4")
    if not clip.resolve().is_relative_to(mdir.resolve()):
        clip = mdir / "video" / "clips" / f"{_safe(shot)}.mp4"  # a log's `file` only names its own clips
    if status == DONE:
        if clip.is_file():
            cell.clip = clip
        else:
            cell.status, cell.reason = "missing", f"{clip.relative_to(mdir).as_posix()} is gone"
    elif not cell.reason:
        cell.reason = f"status {status}"
    return cell


def _safe(name: str) -> str:
    """A file name from a log's shot id (user data): no `/`, no leading dot."""
    return re.sub(r"[^A-Za-z0-9._=,+@%-]+", "_", name).lstrip(".") or "_"


def _take(log: Mapping[str, Any]) -> str:
    """`seed 3`, or `take 3` where the model took no seed (the seed only tells the takes apart)."""
    seed = log.get("requested_seed", log.get("seed"))
    if log.get("seed_sent") is False:
        return f"take {seed}" if seed is not None else "take"
    returned = log.get("seed_returned")
    shown = log.get("seed") if log.get("seed") is not None else seed
    if returned is not None and returned != shown:
        return f"seed {shown} (returned {returned})"
    return f"seed {shown}" if shown is not None else "seed —"


def _cost(log: Mapping[str, Any]) -> tuple[float | None, str | None]:
    cost = log.get("cost_usd")
    if isinstance(cost, int | float) and log.get("status") == DONE:
        return float(cost), str(log.get("cost_source") or "estimate")
    estimate = log.get("estimate_usd")
    return (float(estimate), "estimate") if isinstance(estimate, int | float) else (None, None)


def _cost_text(log: Mapping[str, Any]) -> str:
    cost, source = _cost(log)
    if cost is None:
        return ""
    return f"${cost:.2f}" if source == "billed" or cost == 0 else f"~${cost:.2f}"


def _resolution(log: Mapping[str, Any]) -> str | None:
    clip = log.get("clip") or {}
    if clip.get("width") and clip.get("height"):
        return f"{clip['width']}x{clip['height']}"
    payload = log.get("payload") or {}
    value = payload.get("resolution") if isinstance(payload, dict) else None
    return str(value) if value is not None else None


# --- frames ---------------------------------------------------------------------------------


def read_frames(path: Path) -> list[Image.Image]:
    """The first, middle and last frame of a clip; [] when it won't decode. The middle and the end
    are reached by seeking (to the keyframe before, then decoding forward), so a long clip is not
    decoded whole: a gallery of a thousand 1080p takes would otherwise decode every frame of each."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            first = next(container.decode(stream), None)
            if first is None:
                return []
            length = _length_s(container, stream)
            middle = _frame_from(container, stream, length / 2)
            last = _frame_from(container, stream, max(0.0, length - 1.0), last=True)
            images = [first.to_image()] + [f.to_image() for f in (middle, last) if f is not None]
            return images if len(images) == FRAMES_PER_CELL else [images[0]] * FRAMES_PER_CELL
    except (av.FFmpegError, OSError, ValueError, EOFError, IndexError, StopIteration):
        return []


def _length_s(container: Any, stream: Any) -> float:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return container.duration / av.time_base if container.duration else 0.0


def _frame_from(container: Any, stream: Any, at_s: float, *, last: bool = False) -> Any:
    """The first frame at or after `at_s` (`last`: the clip's final frame, decoding on from there)."""
    container.seek(int(at_s / stream.time_base), stream=stream, backward=True, any_frame=False)
    found = None
    for frame in container.decode(stream):
        if frame.time is not None and frame.time + 1e-6 < at_s:
            continue
        found = frame
        if not last:
            break
    return found


def _fit(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    box = Image.new("RGB", size, (16, 16, 16))
    thumb = image.convert("RGB")
    thumb.thumbnail(size)
    box.paste(thumb, ((size[0] - thumb.width) // 2, (size[1] - thumb.height) // 2))
    return box


# --- writing --------------------------------------------------------------------------------


def build_index(sweep_dir: Path) -> dict[str, Any]:
    """Write `index.json`, `index.html`, the posters and the contact sheets; returns index.json's data.
    Each clip is decoded once and its frames dropped as soon as its poster and sheet strip are drawn."""
    sweep_dir = Path(sweep_dir)
    members, shots, cells = collect(sweep_dir)
    overrides = {m: read_overrides(sweep_dir / m) for m in members}
    sweep_data = read_json(sweep_dir / "sweep.json") or {}
    chosen = {  # the overrides the sweep gave each member (without the budget it passed on)
        str(m.get("name")): [o for o in m.get("overrides") or [] if not str(o).startswith("hydra.")]
        for m in sweep_data.get("members") or []
        if isinstance(m, dict)
    }
    diffs = differences({m: chosen.get(m) or overrides[m] for m in members})
    picks = read_picks(sweep_dir)
    rows, sheets = [], sheet_names(len(cells))
    for name, page in zip(sheets, _pages(cells), strict=True):
        sheet = ContactSheet(len(page))
        for cell in page:
            frames = read_frames(cell.clip) if cell.clip else []
            poster = _write_poster(sweep_dir, cell, frames)
            sheet.add(cell, frames)
            rows.append(_row(sweep_dir, cell, overrides[cell.member], diffs[cell.member], poster, picks))
        atomic_write_bytes(sweep_dir / name, sheet.png())
    for stale in sweep_dir.glob("contact-sheet-*.png"):  # pages of an earlier, bigger index
        if stale.name not in sheets:
            stale.unlink(missing_ok=True)
    data = {
        "sweep_dir": str(sweep_dir),
        "generated": now_iso(),
        "members": [{"name": m, "overrides": overrides[m], "differences": diffs[m]} for m in members],
        "shots": shots,
        "picks": picks,
        "contact_sheet": {
            "path": sheets[0],
            "pages": sheets,
            "cells_per_page": CELLS_PER_SHEET,
            "frames_per_cell": FRAMES_PER_CELL,
            "cells": len(cells),
        },
        "rows": rows,
    }
    atomic_write_text(sweep_dir / INDEX_JSON, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(sweep_dir / INDEX_HTML, render_html(data))
    return data


def sheet_names(cells: int) -> list[str]:
    """`contact-sheet.png`, then `contact-sheet-2.png`… for each further page of cells."""
    pages = max(1, math.ceil(cells / CELLS_PER_SHEET))
    stem, suffix = CONTACT_SHEET.rsplit(".", 1)
    return [CONTACT_SHEET] + [f"{stem}-{k}.{suffix}" for k in range(2, pages + 1)]


def _pages(cells: Sequence[Cell]) -> list[Sequence[Cell]]:
    return [cells[i : i + CELLS_PER_SHEET] for i in range(0, len(cells), CELLS_PER_SHEET)] or [[]]


def _write_poster(sweep_dir: Path, cell: Cell, frames: Sequence[Image.Image]) -> str | None:
    if not frames:
        return None
    rel = f"{POSTERS}/{cell.member}/{_safe(cell.shot)}.jpg"
    image = frames[0].convert("RGB")
    image.thumbnail((POSTER_W, POSTER_W))
    path = sweep_dir / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    image.save(tmp, format="JPEG", quality=82)
    tmp.replace(path)
    return rel


def _row(
    sweep_dir: Path,
    cell: Cell,
    overrides: list[str],
    diff: dict[str, str],
    poster: str | None,
    picks: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    log = cell.log
    cost, source = _cost(log)
    clip_rel = cell.clip.relative_to(sweep_dir).as_posix() if cell.clip else None
    sha = sha256_file(cell.clip) if cell.clip else None
    logged_sha = (log.get("clip") or {}).get("sha256")
    reason = cell.reason
    if sha and logged_sha and sha != logged_sha:
        reason = "the clip was changed on disk after it was rendered"
    return {
        "shot": cell.shot,
        "member": cell.member,
        "overrides": overrides,
        "differences": diff,
        "status": cell.status,
        "reason": reason,
        "model": log.get("model_config") or log.get("model"),
        "endpoint": log.get("endpoint"),
        "provider": log.get("provider"),
        "mode": log.get("mode"),
        "tier": log.get("tier"),
        "seed": log.get("seed"),
        "requested_seed": log.get("requested_seed"),
        "seed_sent": log.get("seed_sent"),
        "seed_returned": log.get("seed_returned"),
        "take": _take(log) if log else None,
        "duration": log.get("duration"),
        "resolution": _resolution(log),
        "cost_usd": cost,
        "cost_source": source,
        "request_id": log.get("request_id"),
        "identity": log.get("identity"),
        "prompt": log.get("prompt"),
        "clip": clip_rel,
        "sha256": sha or logged_sha,
        "poster": poster,
        "picked": (picks.get(cell.shot) or {}).get("member") == cell.member,
    }


def _url(rel: str) -> str:
    """A relative link to a sweep file: each path segment percent-encoded (`=`, `,` stay; `%`,
    `#`, `?` and spaces do not break it)."""
    return quote(rel, safe="/=,+@-._")


_CSS = """
body{font-family:system-ui,sans-serif;margin:1em;background:#fafafa;color:#222}
table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:6px;vertical-align:top}
thead th{background:#eee;text-align:left}th.shot{background:#eee}
video{width:320px;display:block;background:#000}
.meta{font-size:90%;color:#444}.fail{color:#a00;max-width:320px;white-space:pre-wrap}
.picked{outline:3px solid #2a7;outline-offset:-3px}.tag{font-weight:bold;color:#2a7}
.diff{font-family:monospace;font-size:90%}
"""


def render_html(data: Mapping[str, Any]) -> str:
    """The gallery page: a table with a row per shot and a column per member."""
    e = html.escape
    members = [m["name"] for m in data["members"]]
    rows = {(r["shot"], r["member"]): r for r in data["rows"]}
    head = ["<tr><th>shot</th>"]
    for m in data["members"]:
        diff = "".join(f"<div>{e(k)}={e(str(v))}</div>" for k, v in m["differences"].items())
        head.append(
            f'<th scope="col" data-member="{e(m["name"])}">{e(m["name"])}<div class="diff">{diff}</div></th>'
        )
    head.append("</tr>")
    body = []
    for shot in data["shots"]:
        cells = [f'<tr data-shot="{e(shot)}"><th class="shot" scope="row">{e(shot)}</th>']
        for member in members:
            r = rows.get((shot, member))
            cells.append(_html_cell(r) if r else '<td class="empty"></td>')
        cells.append("</tr>")
        body.append("".join(cells))
    title = f"sweep {Path(str(data['sweep_dir'])).name}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<link rel="icon" href="data:,">'  # no favicon.ico request (a 404 on a static server)
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>\n"
        f"<h1>{e(title)}</h1>\n<p>{len(data['shots'])} shots × {len(members)} members; "
        f'{_sheet_links(data)}, <a href="{INDEX_JSON}">index.json</a>. '
        f"Generated {e(str(data['generated']))}.</p>\n"
        f"<table>\n<thead>{''.join(head)}</thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody></table>\n"
        "</body></html>\n"
    )


def _sheet_links(data: Mapping[str, Any]) -> str:
    pages = (data.get("contact_sheet") or {}).get("pages") or [CONTACT_SHEET]
    if len(pages) == 1:
        return f'<a href="{_url(pages[0])}">contact sheet</a>'
    links = " ".join(f'<a href="{_url(p)}">{k}</a>' for k, p in enumerate(pages, 1))
    return f"contact sheets {links}"


def _html_cell(r: Mapping[str, Any]) -> str:
    e = html.escape
    classes = ["cell", r["status"]] + (["picked"] if r.get("picked") else [])
    meta = " · ".join(
        x for x in (r.get("model") and e(str(r["model"])), r.get("take") and e(str(r["take"]))) if x
    )
    cost = "" if r.get("cost_usd") is None else _cost_text({"status": DONE, **r})
    if r.get("status") != DONE:
        cost = "" if r.get("cost_usd") is None else f"est ~${r['cost_usd']:.2f}"
    parts = [f'<td class="{" ".join(classes)}" data-member="{e(r["member"])}" data-shot="{e(r["shot"])}">']
    if r.get("clip"):
        poster = f' poster="{e(_url(r["poster"]))}"' if r.get("poster") else ""
        # "metadata": the browser reads each clip's header (duration, size) up front, not the whole clip
        parts.append(
            f'<video controls preload="metadata"{poster} src="{e(_url(r["clip"]))}"'
            f' title="{e(str(r.get("prompt") or ""))}"></video>'
        )
    parts.append(f'<div class="meta">{meta}{" · " + e(cost) if cost else ""}</div>')
    if r.get("duration") or r.get("resolution"):
        size = f"{r.get('duration') or ''} s · {r.get('resolution') or ''}"
        parts.append(f'<div class="meta">{e(size)}</div>')
    if r.get("reason"):
        parts.append(f'<div class="fail">{e(r["status"])}: {e(str(r["reason"]))}</div>')
    if r.get("picked"):
        parts.append('<div class="tag">picked</div>')
    parts.append("</td>")
    return "".join(parts)


class ContactSheet:
    """One page: a strip per cell, a label, then its first, middle and last frame (grey boxes where a
    cell has no clip, with the reason in the label)."""

    def __init__(self, cells: int) -> None:
        self.width = GAP + FRAMES_PER_CELL * (THUMB_W + GAP)
        self.strip = LABEL_H + THUMB_H + GAP
        self.image = Image.new("RGB", (self.width, GAP + max(1, cells) * self.strip), (255, 255, 255))
        self.draw = ImageDraw.Draw(self.image)
        self.font = ImageFont.load_default(size=12)
        self.count = 0

    def add(self, cell: Cell, frames: Sequence[Image.Image]) -> None:
        y = GAP + self.count * self.strip
        self.count += 1
        log, draw, font, max_w = cell.log, self.draw, self.font, self.width - 2 * GAP
        line1 = f"{cell.shot}  {cell.member}"
        line2 = (
            " · ".join(x for x in (_take(log) if log else "", _cost_text(log), cell.status) if x)
            if cell.status == DONE
            else f"{cell.status}: {cell.reason or ''}"
        )
        draw.text((GAP, y + 2), _clip_text(line1, draw, font, max_w), fill=(0, 0, 0), font=font)
        colour = (0, 0, 0) if cell.status == DONE else (170, 0, 0)
        draw.text((GAP, y + 17), _clip_text(line2, draw, font, max_w), fill=colour, font=font)
        for k in range(FRAMES_PER_CELL):
            x = GAP + k * (THUMB_W + GAP)
            if k < len(frames):
                self.image.paste(_fit(frames[k], (THUMB_W, THUMB_H)), (x, y + LABEL_H))
            else:
                draw.rectangle(
                    (x, y + LABEL_H, x + THUMB_W - 1, y + LABEL_H + THUMB_H - 1), fill=(200, 200, 200)
                )

    def png(self) -> bytes:
        out = io.BytesIO()
        self.image.save(out, format="PNG", optimize=True)
        return out.getvalue()


def _clip_text(text: str, draw: ImageDraw.ImageDraw, font: Any, max_w: int) -> str:
    text = " ".join(text.split())
    if draw.textlength(text, font=font) <= max_w:
        return text
    while text and draw.textlength(text + "…", font=font) > max_w:
        text = text[:-1]
    return text + "…"


def index_after_sweep(sweep_dir: Path) -> None:
    """The sweeper's call when a sweep ends: the gallery is a convenience, so a problem writing it is
    one warning line, never the sweep's failure."""
    try:
        build_index(sweep_dir)
    except Exception as exc:  # noqa: BLE001 - never fail a finished sweep over its gallery
        print(f"aivp-batch: warning: sweep index not written ({type(exc).__name__}: {exc})", file=sys.stderr)
    else:
        print(f"sweep index: {Path(sweep_dir) / INDEX_HTML}")
