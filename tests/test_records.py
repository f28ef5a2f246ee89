"""The records tell the truth: seeds, logs of clips that exist, plan.md, file modes and text."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EXAMPLE
from test_runner_fal import KEY, fal_overrides, logs, run_in_process

from aivp_batch.errors import AuthError
from aivp_batch.planning import unused_inputs
from aivp_batch.records import _COMPACT_BYTES, NO_SEED, Journal, PlanBoard, plan_row
from aivp_batch.testing.fal_server import FakeFal

FF = "image/frames/shot-01-ff.png"


def log_bytes(film: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((film / "video/log").glob("*.json"))}


def test_the_seed_shown_is_the_one_sent_across_reruns(fal, film, tmp_path, monkeypatch) -> None:
    code, _ = run_in_process(fal_overrides(fal, film, tmp_path), tmp_path / "run1", monkeypatch)
    assert code == 0
    first = logs(film)
    assert all(log["seed"] == log["payload"]["seed"] for log in first.values())
    code, summary = run_in_process(fal_overrides(fal, film, tmp_path), tmp_path / "run2", monkeypatch)
    again = logs(film)
    assert code == 0 and all(result["reused"] for result in summary["results"])
    assert {s: log["seed"] for s, log in again.items()} == {s: log["seed"] for s, log in first.items()}
    plan = (film / "video/plan.md").read_text()
    assert all(f"| {log['seed']} |" in plan for log in again.values())
    # An edited keyframe is a new render of shot-01, with the shot's seed, not a new random one.
    with (film / FF).open("ab") as f:
        f.write(b"\0")  # the PNG still decodes; its bytes (so the job identity) changed
    code, _ = run_in_process(fal_overrides(fal, film, tmp_path), tmp_path / "run3", monkeypatch)
    edited = logs(film)["shot-01"]
    assert code == 0 and not edited.get("reused") and fal.stats.calls["submit"] == 5
    assert edited["seed"] == edited["payload"]["seed"] == first["shot-01"]["seed"]


def test_a_model_without_a_seed_says_so_in_the_plan(fal, film, tmp_path, monkeypatch) -> None:
    overrides = fal_overrides(fal, film, tmp_path, "model=kling_v25_turbo", "shots=[2,3]")
    code, _ = run_in_process(overrides, tmp_path / "run", monkeypatch)
    assert code == 0
    plan = (film / "video/plan.md").read_text()
    assert plan.count(NO_SEED) == 2 and "`kling_v25_turbo`" in plan
    assert all(log["seed_sent"] is False and "seed" not in log["payload"] for log in logs(film).values())
    assert "not used" not in plan  # v2.5 Turbo takes shot-02's end frame (tail_image_url)


@pytest.mark.parametrize("how", ["budget", "bad_key", "server_down"])
def test_a_refused_run_leaves_existing_logs_byte_identical(fal, film, tmp_path, monkeypatch, how) -> None:
    code, _ = run_in_process(fal_overrides(fal, film, tmp_path), tmp_path / "run1", monkeypatch)
    assert code == 0
    with (film / FF).open("ab") as f:  # shot-01 now needs a new render
        f.write(b"\0")
    before, plan_before = log_bytes(film), (film / "video/plan.md").read_bytes()
    extra, key = [], KEY
    if how == "budget":
        extra = ["budget_usd=0"]
    elif how == "bad_key":
        key = "wrong"
    else:
        extra = ["provider.queue_url=http://127.0.0.1:9", "provider.api_url=http://127.0.0.1:9"]
        extra += ["provider.retry.attempts=1"]
    try:
        code, _ = run_in_process(
            fal_overrides(fal, film, tmp_path, *extra), tmp_path / "run2", monkeypatch, key
        )
    except AuthError:
        code = 2
    assert code in (1, 2)
    assert log_bytes(film) == before
    if how != "server_down":  # the refused shot's row is unchanged too
        assert (film / "video/plan.md").read_bytes().count(b"| done |") == plan_before.count(b"| done |")
    assert fal.stats.calls["submit"] == 4


def test_a_never_submitted_log_costs_nothing(fal, film, tmp_path, monkeypatch) -> None:
    code, _ = run_in_process(
        fal_overrides(fal, film, tmp_path, "budget_usd=0"), tmp_path / "run", monkeypatch
    )
    assert code == 1
    assert all(log["status"] == "failed" and log["cost_usd"] == 0 for log in logs(film).values())
    plan = (film / "video/plan.md").read_text()
    assert plan.count("would pass budget_usd=0") == 4  # the Note column says why


def test_plan_numbers_are_shot_numbers_and_notes_say_why(fal, film, tmp_path, monkeypatch) -> None:
    overrides = fal_overrides(fal, film, tmp_path, "model=kling_v26", "shots=[2,4]")
    code, _ = run_in_process(overrides, tmp_path / "run", monkeypatch)
    assert code == 0
    rows = [
        line
        for line in (film / "video/plan.md").read_text().splitlines()
        if line.startswith("| ") and "shot-" in line
    ]
    assert [row.split(" | ")[0] for row in rows] == ["| 2", "| 4"]
    assert all("`kling_v26`" in row and "`video/clips/shot-0" in row for row in rows)
    assert "raised to 10s" in rows[0] or "10" in rows[0].split(" | ")[-1]  # 6 s → 10 s on Kling 2.6
    # The Kling prompt's own "(Duration: …)" text says what is rendered.
    log = logs(film)["shot-02"]
    assert "(Duration: 6s)" not in log["prompt"]


def test_kling_duration_text_follows_a_raised_duration(compose_cfg) -> None:
    from aivp_batch.app import build_plan, resolve_paths

    cfg = compose_cfg(f"project_dir={EXAMPLE}", "model=kling_v26", "shots=[2]")
    plan, _, _ = build_plan(cfg, resolve_paths(cfg, EXAMPLE / "none"))
    [job] = plan.jobs
    assert job.duration_s == 10 and job.duration_note
    assert "(Duration: 10s)" in job.prompt or "Duration" not in job.prompt


def test_unused_inputs_are_named() -> None:
    from aivp_batch.shots import Shot

    ff, lf, face = (
        Path("/p/image/frames/shot-02-ff.png"),
        Path("/p/image/frames/shot-02-lf.png"),
        Path("/p/c/a.png"),
    )
    shot = Shot(id="shot-02", number=2, start_frame=ff, end_frame=lf, character_refs=(face,))
    notes = unused_inputs(shot, "sora2", "I2V", [ff])
    assert notes == ("end frame shot-02-lf.png not used: model=sora2 takes none in I2V",)
    assert unused_inputs(shot, "x", "FLF", [ff, lf]) == ()


def test_plan_cells_stay_in_their_columns() -> None:
    row = plan_row({"id": "shot-01", "status": "failed", "error": "bad | value\nsecond line"})
    assert row.count(" | ") == 8 and "bad \\| value second line" in row


def test_files_get_the_umask_mode_and_keep_unicode(tmp_path: Path) -> None:
    film = tmp_path / "film"
    import shutil

    shutil.copytree(EXAMPLE, film, ignore=shutil.ignore_patterns("video", ".aivp"))
    env = {**os.environ, "AIVP_CACHE_DIR": str(tmp_path / "cache"), "HOME": str(tmp_path)}
    cmd = [sys.executable, "-m", "aivp_batch", f"project_dir={film}", "provider=preview", "shots=[3]"]
    proc = subprocess.run(
        ["sh", "-c", 'umask 022 && exec "$@"', "sh", *cmd, f"hydra.run.dir={tmp_path / 'run'}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    for path in [film / "video/plan.md", film / "video/log/shot-03.json", tmp_path / "run/summary.json"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    text = (film / "video/log/shot-03.json").read_text(encoding="utf-8")
    prompt = json.loads(text)["prompt"]
    assert "\\u" not in text and (prompt.isascii() or any(ord(c) > 127 for c in text))


def test_two_runs_in_one_second_get_two_run_dirs(tmp_path: Path) -> None:
    film = tmp_path / "film"
    import shutil

    shutil.copytree(EXAMPLE, film, ignore=shutil.ignore_patterns("video", ".aivp"))
    env = {**os.environ, "AIVP_CACHE_DIR": str(tmp_path / "cache"), "HOME": str(tmp_path)}
    cmd = [
        sys.executable,
        "-m",
        "aivp_batch",
        f"project_dir={film}",
        "provider=preview",
        "shots=[3]",
        "dry_run=true",
    ]
    procs = [
        subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    runs = sorted((tmp_path / "outputs/runs").iterdir())
    assert len(runs) == 2 and all((r / "summary.json").exists() for r in runs)


def test_a_shot_whose_spec_cannot_be_read_is_listed_as_failed(fal, film, tmp_path, monkeypatch) -> None:
    (film / "storyboard/storyboard-final/shots/shot-03.md").write_bytes(b"\xff\xfe not text")
    code, _ = run_in_process(fal_overrides(fal, film, tmp_path), tmp_path / "run", monkeypatch)
    assert code == 1
    [row] = [line for line in (film / "video/plan.md").read_text().splitlines() if "shot-03" in line]
    assert row.startswith("| 3 | shot-03 |") and "| failed |" in row and "shot-03.md" in row


def test_the_dry_run_names_unused_inputs_and_an_ignored_seed(film, tmp_path, monkeypatch, capsys) -> None:
    overrides = [f"project_dir={film}", "model=kling_v25_turbo", "seed=7", "dry_run=true", "offline=true"]
    code, _ = run_in_process(
        [*overrides, f"schema_cache_dir={tmp_path / 'c'}"], tmp_path / "run", monkeypatch
    )
    out = capsys.readouterr()
    assert code == 0
    assert out.err.count("takes no seed") == 1 and "seed=7 is not sent; seeds become takes" in out.err
    assert out.err.count("uses no character portraits here") == 1


def test_a_clip_that_cannot_be_delivered_is_one_line_and_the_rerun_delivers_it(
    fal, film, tmp_path, monkeypatch
) -> None:
    (film / "video/clips/shot-03.mp4.part").mkdir(parents=True)  # in the way of the copy
    code, _ = run_in_process(fal_overrides(fal, film, tmp_path, "shots=[3]"), tmp_path / "run", monkeypatch)
    assert code == 1
    error = logs(film)["shot-03"]["error"]
    assert (
        error.startswith("could not write video/clips/shot-03.mp4 (") and "nothing is bought again" in error
    )
    (film / "video/clips/shot-03.mp4.part").rmdir()
    code, _ = run_in_process(fal_overrides(fal, film, tmp_path, "shots=[3]"), tmp_path / "run2", monkeypatch)
    assert code == 0 and fal.stats.calls["submit"] == 1 and (film / "video/clips/shot-03.mp4").is_file()


def test_model_auto_is_priced_from_fal_unit_price_so_the_budget_holds(film, tmp_path, monkeypatch) -> None:
    t2v = "fal-ai/kling-video/v2.6/pro/text-to-video"
    with FakeFal(key=KEY, latency_s=0.2, prices={t2v: (0.07, "seconds")}) as fal:
        auto = ["model=auto", f"model.endpoint={t2v}", "shots=[3]"]
        code, _ = run_in_process(
            fal_overrides(fal, film, tmp_path, *auto, "budget_usd=0.1"), tmp_path / "r1", monkeypatch
        )
        assert code == 1 and fal.stats.calls["submit"] == 0
        assert "would pass budget_usd=0.1" in logs(film)["shot-03"]["error"]  # 5 s × $0.07 = $0.35
        code, summary = run_in_process(
            fal_overrides(fal, film, tmp_path, *auto, "budget_usd=1"), tmp_path / "r2", monkeypatch
        )
        assert code == 0 and summary["billed_usd"] == pytest.approx(0.35)


def test_a_new_render_replaces_the_clip_delivered_before(film, tmp_path, monkeypatch) -> None:
    """A shot rendered again (another seed: another job) is delivered: the log's sha256 is the
    delivered file's, not only the store's."""
    from aivp_batch.media import sha256_file

    base = [f"project_dir={film}", "provider=preview", "model=kling_v3", "shots=[3]"]
    base.append(f"schema_cache_dir={tmp_path / 'schemas'}")
    clip = film / "video/clips/shot-03.mp4"
    code, _ = run_in_process([*base, "seed=1"], tmp_path / "run1", monkeypatch)
    assert code == 0
    first = sha256_file(clip)
    code, _ = run_in_process([*base, "seed=2"], tmp_path / "run2", monkeypatch)
    assert code == 0
    log = logs(film)["shot-03"]
    assert sha256_file(clip) == log["clip"]["sha256"] != first


# -- the journal: one appended line per transition ------------------------------------------------


def test_each_transition_appends_a_line_and_the_last_one_is_the_record(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    for status in ("unknown", "submitted", "done"):
        journal.put("id1", {"status": status, "request_id": "r1"})
    lines = [line for line in journal.path("id1").read_text().split("\n") if line]
    assert [json.loads(line)["status"] for line in lines] == ["unknown", "submitted", "done"]
    assert journal.get("id1")["status"] == "done"
    assert journal.get("never-sent") is None


def test_a_write_torn_by_a_crash_leaves_the_record_before_it(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.put("id1", {"status": "submitted", "request_id": "r1"})
    whole = journal.path("id1").read_bytes()
    with journal.path("id1").open("ab") as fh:  # a crash tore the next append
        fh.write(b'\n{"status": "done", "clip_sha2')
    assert journal.get("id1")["status"] == "submitted"
    # The next run's transition stands on its own line, after the torn one.
    journal.put("id1", {"status": "done", "request_id": "r1"})
    assert journal.get("id1")["status"] == "done"
    assert journal.path("id1").read_bytes().startswith(whole)
    with journal.path("id1").open("ab") as fh:  # a crash that left zeroed blocks
        fh.write(b"\0" * 300)
    assert journal.get("id1")["status"] == "done"


def test_a_record_from_an_older_store_is_read_until_it_is_replaced(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs/id1.json").write_text(json.dumps({"status": "done", "request_id": "old"}))
    assert journal.get("id1")["request_id"] == "old"
    journal.path("id1").write_bytes(b'\n{"status": "sub')  # the first append torn: the old one stands
    assert journal.get("id1")["request_id"] == "old"
    journal.put("id1", {"status": "submitted", "request_id": "new"})
    assert journal.get("id1")["request_id"] == "new"


def test_a_record_file_grown_by_many_reruns_is_compacted_to_its_last_record(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    payload = {"prompt": "x" * 2000}
    puts = _COMPACT_BYTES // 2000 + 2
    for n in range(puts):
        journal.put("id1", {"status": "done", "n": n, "payload": payload})
    assert journal.path("id1").stat().st_size < _COMPACT_BYTES
    assert journal.get("id1")["n"] == puts - 1


# -- shot logs: written with plan.md, off the event loop -----------------------------------------


def test_logs_are_written_with_plan_md_and_one_on_the_way_only_when_it_moves_on(tmp_path: Path) -> None:
    plan = tmp_path / "plan.md"

    async def change(board: PlanBoard, shot_id: str, log: dict) -> None:
        await asyncio.sleep(0.01)  # past the interval (0.5 ms a row here): written at once
        board.update(shot_id, {"id": shot_id, **log})
        board._writing.result()  # the worker thread's batch

    async def run() -> None:
        board = PlanBoard(tmp_path, min_interval_s=0)
        await change(board, "shot-01", {"status": "pending"})
        await change(board, "shot-02", {"status": "queued", "request_id": "r2"})
        assert "| pending |" in plan.read_text() and "r2" in plan.read_text()
        assert not (tmp_path / "log").exists()  # on the way: plan.md says so, the logs wait
        await change(board, "shot-02", {"status": "done", "request_id": "r2"})
        assert sorted(p.name for p in (tmp_path / "log").iterdir()) == ["shot-02.json"]
        board.update("shot-03", {"id": "shot-03", "status": "failed", "error": "x"})
        board.flush()  # the end: every log, whatever it says

    asyncio.run(run())
    assert json.loads((tmp_path / "log/shot-01.json").read_text())["status"] == "pending"
    assert json.loads((tmp_path / "log/shot-02.json").read_text())["status"] == "done"
    assert json.loads((tmp_path / "log/shot-03.json").read_text())["status"] == "failed"
    assert "| failed |" in plan.read_text()


def test_an_error_writing_a_batch_of_logs_is_raised_not_lost(tmp_path: Path) -> None:
    (tmp_path / "log").write_text("a file where the log folder should be")

    async def run() -> None:
        board = PlanBoard(tmp_path, min_interval_s=0)
        board.update("shot-01", {"id": "shot-01", "status": "done"})  # handed to the worker
        while not board._writing.done():
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # past the interval: the next change writes at once
        with pytest.raises(OSError):
            board.update("shot-02", {"id": "shot-02", "status": "done"})

    asyncio.run(run())


def test_a_group_whose_shots_were_rendered_another_way_since_says_so(tmp_path: Path) -> None:
    group = {"id": "group-01", "type": "group", "shots": ["shot-01", "shot-02"], "status": "done"}
    board = PlanBoard(tmp_path)
    board.update("group-01", group)
    for shot in ("shot-01", "shot-02"):
        board.update(shot, {"id": shot, "type": "clip", "status": "done", "group": "group-01"})
    board.flush()
    assert "rendered another way since" not in (tmp_path / "plan.md").read_text()
    board.update("shot-01", {"id": "shot-01", "type": "clip", "status": "done"})  # now on its own
    board.flush()
    assert "rendered another way since" not in (tmp_path / "plan.md").read_text()  # shot-02 is a part
    board.update("shot-02", {"id": "shot-02", "type": "clip", "status": "done"})
    board.flush()
    [row] = [line for line in (tmp_path / "plan.md").read_text().splitlines() if "group-01" in line]
    assert "group of shot-01, shot-02; its shots were rendered another way since; this clip stays" in row
    # A new board (the next run) reads the same from the logs.
    PlanBoard(tmp_path).flush()
    assert "rendered another way since" in (tmp_path / "plan.md").read_text()
