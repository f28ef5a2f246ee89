"""A sweep's gallery: `index.json`, `index.html` and `contact-sheet.png`, written when the sweep ends
and again by `aivp index SWEEP_DIR`. One small preview sweep (4 members × shot-03) per module."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest
from conftest import EXAMPLE
from PIL import Image

from aivp_batch import sweep_index as si

MEMBERS = ["model=kling_v26,seed=1", "model=kling_v26,seed=2", "model=veo31,seed=1", "model=veo31,seed=2"]
FAILED = "model=veo31,seed=2"
REASON = 'model error: <script>alert("x")</script> & "quotes"'


def run_sweep(root: Path) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """A preview sweep of shot-03 over two models × two seeds into `root/sweep` ($0, offline)."""
    film = root / "film"
    shutil.copytree(EXAMPLE, film, ignore=shutil.ignore_patterns("video", ".aivp"))
    env = {**os.environ, "AIVP_CACHE_DIR": str(root / "cache"), "HOME": str(root)}
    env.pop("FAL_KEY", None)
    proc = subprocess.run(
        [sys.executable, "-m", "aivp_batch", "-m", f"project_dir={film}", "provider=preview", "shots=[3]",
         "model=kling_v26,veo31", "seed=1,2", f"hydra.sweep.dir={root / 'sweep'}"],
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return film, root / "sweep", proc


def aivp(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "aivp_batch.commands", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("index")
    film, sweep, proc = run_sweep(root)
    written_by_sweep = {
        name: (sweep / name).is_file() for name in (si.INDEX_JSON, si.INDEX_HTML, si.CONTACT_SHEET)
    }
    # One member's take failed (with a reason that is markup): its log says so and it has no clip.
    member = sweep / FAILED
    log_path = member / "video/log/shot-03.json"
    log = json.loads(log_path.read_text())
    log.update(status="failed", error=REASON, clip=None, delivered=None, cost_usd=0.0)
    log_path.write_text(json.dumps(log))
    (member / "video/clips/shot-03.mp4").unlink()
    for name in (si.INDEX_JSON, si.INDEX_HTML, si.CONTACT_SHEET):
        (sweep / name).unlink()
    again = aivp("index", str(sweep), cwd=root)
    return {"root": root, "film": film, "sweep": sweep, "sweep_proc": proc, "by_sweep": written_by_sweep,
            "index_proc": again}  # fmt: skip


def test_the_sweep_writes_its_gallery_when_it_ends(swept: dict) -> None:
    assert all(swept["by_sweep"].values()), swept["by_sweep"]
    assert f"sweep index: {swept['sweep'] / 'index.html'}" in swept["sweep_proc"].stdout


def test_aivp_index_regenerates_on_demand(swept: dict) -> None:
    proc = swept["index_proc"]
    assert proc.returncode == 0, proc.stderr
    assert "1 shots × 4 members, 3/4 clips done" in proc.stdout
    for name in (si.INDEX_JSON, si.INDEX_HTML, si.CONTACT_SHEET):
        assert (swept["sweep"] / name).is_file()


def test_index_json_has_a_row_per_shot_and_member(swept: dict) -> None:
    data = json.loads((swept["sweep"] / si.INDEX_JSON).read_text())
    assert data["shots"] == ["shot-03"] and [m["name"] for m in data["members"]] == MEMBERS
    rows = {r["member"]: r for r in data["rows"]}
    assert len(data["rows"]) == 4 and set(rows) == set(MEMBERS)
    for name in MEMBERS:
        row = rows[name]
        assert row["shot"] == "shot-03" and f"model={row['model']}" in name
        assert row["endpoint"] == "aivp/preview" and row["tier"] == "standard" and row["request_id"]
        assert row["requested_seed"] == row["seed"] == int(name[-1]) and row["seed_sent"] is True
        assert row["differences"] == dict(o.split("=") for o in name.split(","))
        assert "project_dir=" in " ".join(row["overrides"]) and row["duration"] and row["cost_source"]
        if name == FAILED:
            assert row["status"] == "failed" and row["reason"] == REASON and row["clip"] is None
            continue
        assert row["status"] == "done" and row["reason"] is None and row["resolution"] == "640x360"
        clip = swept["sweep"] / row["clip"]
        assert row["clip"] == f"{name}/video/clips/shot-03.mp4" and clip.is_file()
        assert row["sha256"] == si.sha256_file(clip) and row["cost_usd"] == 0.0
        assert row["take"] == f"seed {name[-1]}"


class Gallery(HTMLParser):
    """The page's table: header cells, then per body row its header and its cells' content."""

    def __init__(self) -> None:
        super().__init__()
        self.head: list[str] = []
        self.rows: list[dict] = []
        self.section = ""
        self.cell: dict | None = None
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        if tag in ("thead", "tbody"):
            self.section = tag
        elif tag == "tr" and self.section == "tbody":
            self.rows.append({"shot": a.get("data-shot"), "th": "", "cells": []})
        elif tag == "th" and self.section == "thead":
            self.head.append("")
        elif tag == "td":
            self.cell = {"attrs": a, "text": "", "videos": []}
            self.rows[-1]["cells"].append(self.cell)
        elif tag == "video" and self.cell is not None:
            self.cell["videos"].append(a)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.section == "thead" and self.head:
            self.head[-1] += data
        elif self.cell is not None:
            self.cell["text"] += data
        elif self.section == "tbody" and self.rows:
            self.rows[-1]["th"] += data


def test_index_html_is_a_shots_by_members_table_with_relative_links(swept: dict) -> None:
    sweep = swept["sweep"]
    text = (sweep / si.INDEX_HTML).read_text()
    page = Gallery()
    page.feed(text)
    assert page.head[0] == "shot" and len(page.head) == 1 + len(MEMBERS)
    for head, name in zip(page.head[1:], MEMBERS, strict=True):
        assert head.startswith(name)
        model, seed = name.split(",")
        assert model in head[len(name) :] and seed in head[len(name) :]  # the config differences
    assert [r["shot"] for r in page.rows] == ["shot-03"] and page.rows[0]["th"].strip() == "shot-03"
    cells = page.rows[0]["cells"]
    assert [c["attrs"]["data-member"] for c in cells] == MEMBERS
    for cell in cells:
        if cell["attrs"]["data-member"] == FAILED:
            assert cell["videos"] == [] and "failed" in cell["attrs"]["class"]
            assert REASON in cell["text"]  # shown, as text
            continue
        (video,) = cell["videos"]
        for attr in ("src", "poster"):
            link = video[attr]
            assert not link.startswith(("/", "file:", "http")) and ".." not in link
            assert (sweep / unquote(link)).is_file(), link
        assert unquote(video["poster"]).endswith(".jpg") and "$0.00" in cell["text"]
        assert "seed " in cell["text"]
    # User data is escaped: the reason's markup is text, never a tag.
    assert "<script>" not in text and "&lt;script&gt;" in text and "script" not in page.tags


def test_contact_sheet_has_three_labelled_frames_per_cell(swept: dict) -> None:
    sheet = Image.open(swept["sweep"] / si.CONTACT_SHEET)
    assert sheet.format == "PNG"
    strip = si.LABEL_H + si.THUMB_H + si.GAP
    assert sheet.size == (si.GAP + 3 * (si.THUMB_W + si.GAP), si.GAP + 4 * strip)
    rgb = sheet.convert("RGB")
    for i, name in enumerate(MEMBERS):
        y = si.GAP + i * strip
        label = rgb.crop((0, y, sheet.width, y + si.LABEL_H))
        assert label.getextrema() != ((255, 255), (255, 255), (255, 255))  # some text drawn
        frames = [
            rgb.crop((x, y + si.LABEL_H, x + si.THUMB_W, y + si.LABEL_H + si.THUMB_H))
            for x in (si.GAP + k * (si.THUMB_W + si.GAP) for k in range(3))
        ]
        flat = [all(lo == hi for lo, hi in f.getextrema()) for f in frames]
        assert flat == ([True] * 3 if name == FAILED else [False] * 3), name


def test_a_big_sweep_gets_contact_sheet_pages(
    swept: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sweep = tmp_path / "sweep"
    shutil.copytree(swept["sweep"], sweep)
    monkeypatch.setattr(si, "CELLS_PER_SHEET", 3)
    data = si.build_index(sweep)
    pages = ["contact-sheet.png", "contact-sheet-2.png"]
    assert data["contact_sheet"]["pages"] == pages and data["contact_sheet"]["cells"] == 4
    strip = si.LABEL_H + si.THUMB_H + si.GAP
    heights = [Image.open(sweep / p).size[1] for p in pages]
    assert heights == [si.GAP + 3 * strip, si.GAP + 1 * strip]  # 3 cells, then the fourth
    page = (sweep / si.INDEX_HTML).read_text()
    assert all(f'href="{p}"' in page for p in pages)
    monkeypatch.setattr(si, "CELLS_PER_SHEET", 50)
    assert si.build_index(sweep)["contact_sheet"]["pages"] == pages[:1]
    assert not (sweep / pages[1]).exists()  # the earlier index's second page is gone


def test_seeds_on_a_seedless_model_are_labelled_takes() -> None:
    assert si._take({"seed": 2, "requested_seed": 2, "seed_sent": False}) == "take 2"
    assert si._take({"seed": 2, "requested_seed": 2, "seed_sent": True, "seed_returned": 2}) == "seed 2"
    assert si._take({"seed": 7, "seed_sent": True, "seed_returned": 9}) == "seed 7 (returned 9)"


def test_config_differences_are_what_varies() -> None:
    diffs = si.differences(
        {
            "a": ["project_dir=x", "model=m1", "seed=1", "budget_usd=5"],
            "b": ["project_dir=x", "model=m2", "seed=1"],
        }
    )
    assert diffs == {"a": {"model": "m1"}, "b": {"model": "m2"}}


def test_index_of_a_folder_that_is_no_sweep_is_one_line(tmp_path: Path) -> None:
    proc = aivp("index", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("aivp: error: ") and "Traceback" not in proc.stderr
    assert len(proc.stderr.splitlines()) == 1
