"""The output step (output.py) through real runs on the preview provider: the clip checks a run
passes each returned clip through (`RunContext.clip_checks`) before it is accepted. A passing check
changes nothing; a rejecting one fails the job with its reason, delivers nothing, keeps the paid
clip aside, and the next run renders it again (a rerender keeps the clip it was to replace)."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import pytest
from conftest import journal_records
from test_multishot import preview_overrides as multishot_overrides
from test_multishot import renders
from test_runner_fal import logs, run_in_process

import aivp_batch.app as app
from aivp_batch.media import sha256_file
from aivp_batch.output import Candidate
from aivp_batch.runner import RunContext

SHOTS = ["shot-01", "shot-02"]
# Log fields that differ between two runs of one plan on two copies of a project: when, where (the
# payload's file URIs name the project's folder), the provider's request, the files' mtimes.
VOLATILE = {"timestamp", "run_dir", "hydra_dir", "run_id", "timings", "payload", "request_id", "video_url"}
VOLATILE |= {"delivered"}


def overrides(film: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        f"project_dir={film}",
        "provider=preview",
        "model=kling_v26",
        "shots=[1,2]",
        "seed=7",  # the same clips every time (a random seed per job otherwise)
        f"schema_cache_dir={tmp_path / 'schemas'}",
        *extra,
    ]


def with_checks(monkeypatch: pytest.MonkeyPatch, *checks) -> None:
    """The run's RunContext gets these clip checks (there is no config knob for them yet)."""
    monkeypatch.setattr(app, "RunContext", functools.partial(RunContext, clip_checks=list(checks)))


def journal(film: Path) -> dict[str, dict]:
    """The journal's records, by the id of each log that names their identity."""
    records = journal_records(film / ".aivp")
    by_identity = {r["identity"]: r for r in records}
    return {
        key: by_identity[log["identity"]] for key, log in logs(film).items() if log["identity"] in by_identity
    }


def delivered(film: Path) -> dict[str, str]:
    return {p.stem: sha256_file(p) for p in sorted((film / "video/clips").glob("*.mp4"))}


def reject_shot_01(candidate: Candidate) -> str | None:
    if candidate.job.shots[0].id == "shot-01":
        return "the horizon tilts"
    return None


def test_a_passing_check_sees_each_verified_clip_and_changes_nothing(film, tmp_path, monkeypatch) -> None:
    seen: list[Candidate] = []

    def looks_fine(candidate: Candidate) -> str | None:
        assert candidate.path.is_file() and sha256_file(candidate.path) == candidate.sha256
        seen.append(candidate)
        return None

    with_checks(monkeypatch, looks_fine)
    code, summary = run_in_process(overrides(film, tmp_path), tmp_path / "run1", monkeypatch)
    assert code == 0, summary
    got = logs(film)
    assert [got[s]["status"] for s in SHOTS] == ["done", "done"]
    assert sorted(c.job.shots[0].id for c in seen) == SHOTS and renders(film) == 2
    for candidate in seen:
        shot = candidate.job.shots[0].id
        assert candidate.media.frames > 0 and candidate.media.duration_s == pytest.approx(
            candidate.job.duration_s, abs=0.6
        )
        # What the check saw is what was accepted and delivered.
        assert got[shot]["clip"]["sha256"] == candidate.sha256 == delivered(film)[shot]
        assert got[shot]["clip"]["frames"] == candidate.media.frames
    assert not list((film / ".aivp/clips").glob("*.rejected.mp4"))
    assert all(r["status"] == "done" and "rejected_clip" not in r for r in journal(film).values())

    # The same run without the check, on a copy of the project: the same logs, the same clips.
    plain = tmp_path / "plain"
    shutil.copytree(film, plain / "film", ignore=shutil.ignore_patterns("video", ".aivp"))
    monkeypatch.setattr(app, "RunContext", RunContext)
    code, _ = run_in_process(overrides(plain / "film", plain), plain / "run1", monkeypatch)
    assert code == 0
    theirs = logs(plain / "film")
    for shot in SHOTS:
        assert {**got[shot]["clip"], "mtime_ns": 0} == {**theirs[shot]["clip"], "mtime_ns": 0}
        got[shot]["clip"] = theirs[shot]["clip"]
        differ = {
            k for k in got[shot].keys() | theirs[shot].keys() if got[shot].get(k) != theirs[shot].get(k)
        }
        assert differ <= VOLATILE, differ


def test_a_rejected_clip_fails_its_job_with_the_reason_and_is_never_delivered(
    film, tmp_path, monkeypatch
) -> None:
    with_checks(monkeypatch, reject_shot_01)
    code, summary = run_in_process(overrides(film, tmp_path), tmp_path / "run1", monkeypatch)
    assert code == 1 and renders(film) == 2
    got = logs(film)
    assert got["shot-01"]["status"] == "failed"
    assert got["shot-01"]["error"] == "clip rejected by reject_shot_01: the horizon tilts"
    assert got["shot-01"]["request_id"] and got["shot-01"]["video_url"]
    assert got["shot-02"]["status"] == "done"
    assert set(delivered(film)) == {"shot-02"}  # nothing of shot-01 is delivered
    [result] = [r for r in summary["results"] if r["key"] == "shot-01"]
    assert result["status"] == "failed" and "the horizon tilts" in result["error"]
    # Paid for: journalled as such (failed: the next run renders it again), kept aside in the store.
    record = journal(film)["shot-01"]
    assert record["status"] == "failed" and record["error"] == got["shot-01"]["error"]
    aside = Path(record["rejected_clip"]["path"])
    assert aside.name.endswith(".rejected.mp4") and sha256_file(aside) == record["rejected_clip"]["sha256"]
    assert not (film / ".aivp/clips" / f"{record['identity']}.mp4").exists()
    settled = [
        json.loads(line)
        for line in (film / "video/costs.jsonl").read_text().splitlines()
        if json.loads(line)["event"] == "settle"
    ]
    assert sorted(e["shot"] for e in settled) == SHOTS  # each render's cost booked once
    [row] = [line for line in (film / "video/plan.md").read_text().splitlines() if "| shot-01 |" in line]
    assert "| failed |" in row and "the horizon tilts" in row

    # Without the check, the next run renders shot-01 again and reuses shot-02.
    monkeypatch.setattr(app, "RunContext", RunContext)
    code, summary = run_in_process(overrides(film, tmp_path), tmp_path / "run2", monkeypatch)
    assert code == 0 and renders(film) == 3
    got = logs(film)
    assert [got[s]["status"] for s in SHOTS] == ["done", "done"]
    assert delivered(film)["shot-01"] == got["shot-01"]["clip"]["sha256"]
    assert {r["key"]: r["reused"] for r in summary["results"]} == {"shot-01": False, "shot-02": True}


def test_a_rejected_rerender_keeps_the_clip_it_was_to_replace(film, tmp_path, monkeypatch) -> None:
    code, _ = run_in_process(overrides(film, tmp_path), tmp_path / "run1", monkeypatch)
    assert code == 0 and renders(film) == 2
    before, paid = delivered(film), journal(film)["shot-01"]

    with_checks(monkeypatch, reject_shot_01)
    code, _ = run_in_process(overrides(film, tmp_path, "rerender=[shot-01]"), tmp_path / "run2", monkeypatch)
    assert code == 1 and renders(film) == 3
    assert "the horizon tilts" in logs(film)["shot-01"]["error"]
    assert delivered(film) == before  # the paid clip stays delivered
    record = journal(film)["shot-01"]
    assert record["status"] == "done" and record["clip"] == paid["clip"]
    assert "the horizon tilts" in record["rerender_error"]

    # Not asked for again: the paid clip is reused, nothing is rendered.
    monkeypatch.setattr(app, "RunContext", RunContext)
    code, summary = run_in_process(overrides(film, tmp_path), tmp_path / "run3", monkeypatch)
    assert code == 0 and renders(film) == 3 and all(r["reused"] for r in summary["results"])
    assert delivered(film) == before


def test_a_rejected_group_clip_is_not_cut_and_none_of_its_shots_is_delivered(
    film, tmp_path, monkeypatch
) -> None:
    checked: list[Candidate] = []

    def cut_mid_gesture(candidate: Candidate) -> str | None:
        checked.append(candidate)
        return "a cut lands mid-gesture"

    with_checks(monkeypatch, cut_mid_gesture)
    code, _ = run_in_process(
        multishot_overrides(film, tmp_path, "shots=[1,2]"), tmp_path / "run1", monkeypatch
    )
    assert code == 1 and renders(film) == 1
    [candidate] = checked  # the group's whole clip, once
    assert [s.id for s in candidate.job.shots] == SHOTS and candidate.media.duration_s == pytest.approx(
        11, abs=0.6
    )
    got = logs(film)
    for key in ["group-01", *SHOTS]:
        assert got[key]["status"] == "failed" and "a cut lands mid-gesture" in got[key]["error"]
    assert not list((film / "video/clips").glob("*.mp4"))
    [record] = journal_records(film / ".aivp")
    assert record["status"] == "failed" and "parts" not in record
    assert not (film / ".aivp/clips" / record["identity"]).exists()  # never cut
