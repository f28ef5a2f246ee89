"""strategy=multishot end to end: one request per group of shots, its clip cut into the shots'
clips, each with its own log; resume, edits, budget and dry run treat a group as one job.

The example film is one scene of 5 + 6 + 4 + 7 s: on Kling (15 s a call at most) two groups of two
shots, group-01 (shot-01, shot-02) and group-02 (shot-03, shot-04)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from conftest import FAL_SCHEMAS, journal_records
from test_runner_fal import KEY, _cli, _journal_statuses, fal_overrides, logs, run_in_process

from aivp_batch.app import format_plan, rerender_ids
from aivp_batch.errors import ConfigError, MediaError
from aivp_batch.media import probe, sha256_file
from aivp_batch.records import Journal
from aivp_batch.testing.fal_server import FakeFal, Fault

GROUPS = {"group-01": ["shot-01", "shot-02"], "group-02": ["shot-03", "shot-04"]}
SECONDS = {"shot-01": 5, "shot-02": 6, "shot-03": 4, "shot-04": 7}
KLING = ["model=kling_o3", "tier=hero", "strategy=multishot"]
REF = "fal-ai/kling-video/o3/pro/reference-to-video"


def preview_overrides(film: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        f"project_dir={film}",
        "provider=preview",
        "model=kling_o3",
        "strategy=multishot",
        f"schema_cache_dir={tmp_path / 'schemas'}",
        *extra,
    ]


def ms_overrides(fal: FakeFal, film: Path, tmp_path: Path, *extra: str) -> list[str]:
    return fal_overrides(fal, film, tmp_path, *KLING, *extra)


def renders(film: Path) -> int:
    """Clips the preview provider rendered (one per request)."""
    return len(list((film / ".aivp/renders").glob("*.mp4")))


def plan_rows(film: Path) -> list[list[str]]:
    text = (film / "video/plan.md").read_text()
    return [
        [cell.strip() for cell in line.strip("|").split(" | ")]
        for line in text.splitlines()
        if line.startswith("| ") and ("shot-" in line or "group-" in line) and "---" not in line
    ]


def assert_delivered(film: Path) -> dict[str, dict]:
    """Every group clip and shot clip is there; each shot's log is its own part, frame-accurate."""
    got = logs(film)
    clips = film / "video/clips"
    for key, shots in GROUPS.items():
        group = got[key]
        assert group["type"] == "group" and group["status"] == "done" and group["shots"] == shots
        assert group["file"] == f"video/clips/{key}.mp4"
        assert sha256_file(clips / f"{key}.mp4") == group["clip"]["sha256"]
        assert [p["shot"] for p in group["parts"]] == shots
        start = 0
        for k, shot in enumerate(shots):
            log = got[shot]
            assert log["type"] == "clip" and log["status"] == "done" and log["group"] == key
            assert log["part"] == f"{k + 1}/{len(shots)}" and log["file"] == f"video/clips/{shot}.mp4"
            assert log["request_id"] == group["request_id"] and log["seed"] == group["seed"]
            assert log["duration"] == str(SECONDS[shot]) and log["start_s"] == start
            assert log["prompt"] in group["prompt"] and log["prompt"] != group["prompt"]
            assert sha256_file(clips / f"{shot}.mp4") == log["clip"]["sha256"]
            info = probe(clips / f"{shot}.mp4")
            assert abs(info.frames - SECONDS[shot] * info.fps) <= 1, (shot, info)
            assert abs(info.duration_s - SECONDS[shot]) <= 1 / info.fps + 1e-6
            start += SECONDS[shot]
    assert len({got[s]["clip"]["sha256"] for s in SECONDS}) == 4  # each shot its own clip
    return got


# ---------------------------------------------------------------- the preview: rehearsed offline


def test_preview_renders_groups_and_cuts_them_into_shots(film, tmp_path, monkeypatch) -> None:
    code, summary = run_in_process(preview_overrides(film, tmp_path), tmp_path / "run1", monkeypatch)
    assert code == 0, summary
    assert renders(film) == 2 and [r["key"] for r in summary["results"]] == ["group-01", "group-02"]
    got = assert_delivered(film)
    assert [j["shots"] for j in summary["plan"]["jobs"]] == list(GROUPS.values())
    # plan.md: each group's row just before its shots' rows, which say whose part they are.
    rows = plan_rows(film)
    assert [row[1] for row in rows] == ["group-01", "shot-01", "shot-02", "group-02", "shot-03", "shot-04"]
    assert [row[0] for row in rows] == ["", "1", "2", "", "3", "4"]
    assert "group of shot-01, shot-02" in rows[0][-1] and "part 2/2 of group-01" in rows[2][-1]

    # The same command again: nothing rendered, no log changed.
    before = {p.name: p.read_bytes() for p in (film / "video/log").glob("*.json")}
    code, summary = run_in_process(preview_overrides(film, tmp_path), tmp_path / "run2", monkeypatch)
    assert code == 0 and renders(film) == 2 and all(r["reused"] for r in summary["results"])
    assert {p.name: p.read_bytes() for p in (film / "video/log").glob("*.json")} == before

    # A shot clip lost, and its part in the store too: cut again from the stored group clip.
    stored = film / ".aivp/clips" / got["group-02"]["identity"] / "part-01.mp4"
    assert stored.is_file()
    stored.unlink()
    (film / "video/clips/shot-03.mp4").unlink()
    code, summary = run_in_process(preview_overrides(film, tmp_path), tmp_path / "run3", monkeypatch)
    assert code == 0 and renders(film) == 2 and all(r["reused"] for r in summary["results"])
    assert stored.is_file()
    assert_delivered(film)

    # Only the shot clip lost: it comes back from the store.
    (film / "video/clips/shot-02.mp4").unlink()
    code, _ = run_in_process(preview_overrides(film, tmp_path), tmp_path / "run4", monkeypatch)
    assert code == 0 and renders(film) == 2
    assert_delivered(film)


def test_an_edited_shot_clip_of_a_group_is_kept_and_its_neighbours_delivered(
    film, tmp_path, monkeypatch, capsys
) -> None:
    code, _ = run_in_process(preview_overrides(film, tmp_path), tmp_path / "run1", monkeypatch)
    assert code == 0
    edited = film / "video/clips/shot-01.mp4"
    edited.write_bytes(edited.read_bytes() + b"trimmed in an editor")
    (film / "video/clips/shot-02.mp4").unlink()
    log_before = (film / "video/log/shot-01.json").read_bytes()
    code, _ = run_in_process(preview_overrides(film, tmp_path), tmp_path / "run2", monkeypatch)
    assert code == 0 and renders(film) == 2
    assert "video/clips/shot-01.mp4 was changed on disk; keeping it" in capsys.readouterr().err
    assert edited.read_bytes().endswith(b"trimmed in an editor")
    assert (film / "video/log/shot-01.json").read_bytes() == log_before
    assert sha256_file(film / "video/clips/shot-02.mp4") == logs(film)["shot-02"]["clip"]["sha256"]
    # Asked for: the group is rendered again and the edit replaced.
    code, _ = run_in_process(
        preview_overrides(film, tmp_path, "rerender=[group-01]"), tmp_path / "run3", monkeypatch
    )
    assert code == 0 and renders(film) == 3
    assert_delivered(film)


def test_a_clip_that_cannot_be_cut_is_kept_and_never_bought_again(film, tmp_path, monkeypatch) -> None:
    import aivp_batch.output as output

    real = output.split_clip

    def broken(*args, **kwargs):
        raise MediaError("group.mp4: part 2 is 5.500 s, expected 6.000 s")

    monkeypatch.setattr(output, "split_clip", broken)
    code, _ = run_in_process(preview_overrides(film, tmp_path, "shots=[1,2]"), tmp_path / "run1", monkeypatch)
    assert code == 1 and renders(film) == 1
    got = logs(film)
    for key in ["group-01", "shot-01", "shot-02"]:
        assert got[key]["status"] == "failed" and "could not be cut into its shots" in got[key]["error"]
        assert "rerender=[group-01]" in got[key]["error"]
    [record] = journal_records(film / ".aivp")
    assert record["status"] == "done" and record["parts"] is None  # paid for: journalled done
    monkeypatch.setattr(output, "split_clip", real)
    code, summary = run_in_process(
        preview_overrides(film, tmp_path, "shots=[1,2]"), tmp_path / "run2", monkeypatch
    )
    assert code == 0 and renders(film) == 1 and summary["results"][0]["reused"]
    got = logs(film)
    assert all(got[s]["status"] == "done" for s in ["group-01", "shot-01", "shot-02"])
    assert sha256_file(film / "video/clips/shot-02.mp4") == got["shot-02"]["clip"]["sha256"]


# ---------------------------------------------------------------- on the fake fal server


def test_one_submit_per_group_on_fal(fal, film, tmp_path, monkeypatch) -> None:
    code, summary = run_in_process(ms_overrides(fal, film, tmp_path), tmp_path / "run", monkeypatch)
    assert code == 0, summary
    assert fal.stats.calls["submit"] == 2 and fal.stats.duplicate_submits == 0
    got = assert_delivered(film)
    for job in fal.jobs.values():
        assert job.endpoint == REF
        payload = job.payload
        assert "prompt" not in payload and payload["shot_type"] == "customize"
        assert [item["duration"] for item in payload["multi_prompt"]] in (["5", "6"], ["4", "7"])
        assert payload["duration"] == "11"
        assert payload["elements"] and all(
            e["frontal_image_url"].startswith(fal.url) for e in payload["elements"]
        )
        assert all("@Element" in item["prompt"] for item in payload["multi_prompt"])
    # Costs: each group's once — its row carries it, its shots' rows say whose part they are.
    groups = [got[key] for key in GROUPS]
    assert summary["spent_usd"] == pytest.approx(sum(g["cost_usd"] for g in groups))
    for key, shots in GROUPS.items():
        assert sum(got[s]["cost_usd"] for s in shots) == pytest.approx(got[key]["cost_usd"], abs=1e-3)
        assert all(got[s]["group_cost_usd"] == got[key]["cost_usd"] for s in shots)
    plan = (film / "video/plan.md").read_text()
    billed = sum(g["cost_usd"] for g in groups if g["cost_source"] == "billed")
    estimated = sum(g["estimate_usd"] for g in groups)
    assert f"${billed:.2f} billed; ${estimated:.2f} estimated" in plan
    events = [json.loads(line) for line in (film / "video/costs.jsonl").read_text().splitlines()]
    assert sorted(e["shot"] for e in events if e["event"] == "settle") == ["group-01", "group-02"]

    # Again: nothing is submitted; all of it is reused.
    code, summary = run_in_process(ms_overrides(fal, film, tmp_path), tmp_path / "run2", monkeypatch)
    assert code == 0 and fal.stats.calls["submit"] == 2 and all(r["reused"] for r in summary["results"])

    # A lost group clip (store and delivered copy) comes back from its result URL; its parts stay.
    store = film / ".aivp/clips" / f"{got['group-01']['identity']}.mp4"
    store.unlink()
    (film / "video/clips/group-01.mp4").unlink()
    downloads = fal.stats.calls["download"]
    code, _ = run_in_process(ms_overrides(fal, film, tmp_path), tmp_path / "run3", monkeypatch)
    assert code == 0 and fal.stats.calls["submit"] == 2 and fal.stats.calls["download"] == downloads + 1
    assert_delivered(film)


def test_a_changed_shot_rerenders_only_its_group(fal, film, tmp_path, monkeypatch) -> None:
    code, _ = run_in_process(ms_overrides(fal, film, tmp_path), tmp_path / "run1", monkeypatch)
    assert code == 0 and fal.stats.calls["submit"] == 2
    first = logs(film)
    spec = film / "storyboard/storyboard-final/shots/shot-04.md"
    spec.write_text(spec.read_text().replace("quiet tension", "a long silence"))
    code, summary = run_in_process(ms_overrides(fal, film, tmp_path), tmp_path / "run2", monkeypatch)
    assert code == 0 and fal.stats.calls["submit"] == 3
    assert {r["key"]: r["reused"] for r in summary["results"]} == {"group-01": True, "group-02": False}
    got = assert_delivered(film)
    assert all(got[s] == first[s] for s in ["group-01", "shot-01", "shot-02"])
    assert got["group-02"]["identity"] != first["group-02"]["identity"]
    assert "a long silence" in got["shot-04"]["prompt"] and "a long silence" not in got["shot-03"]["prompt"]
    assert got["shot-03"]["request_id"] == got["shot-04"]["request_id"] != first["shot-04"]["request_id"]
    # rerender= on one shot of a group renders its whole group again.
    code, summary = run_in_process(
        ms_overrides(fal, film, tmp_path, "rerender=[2]"), tmp_path / "run3", monkeypatch
    )
    assert code == 0 and fal.stats.calls["submit"] == 4
    assert {r["key"]: r["reused"] for r in summary["results"]} == {"group-01": False, "group-02": True}
    assert_delivered(film)


def test_kill_during_a_group_run_then_rerun_submits_nothing_again(film, tmp_path) -> None:
    with FakeFal(schemas_dir=FAL_SCHEMAS, key=KEY, latency_s=3.0) as fal:
        overrides = ms_overrides(fal, film, tmp_path, "provider.max_in_flight=2")
        proc = _cli(overrides, tmp_path, "run1")
        deadline = time.monotonic() + 60
        while _journal_statuses(film).count("submitted") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _journal_statuses(film).count("submitted") == 2  # both groups in flight, neither done
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert fal.stats.calls["submit"] == 2
        rerun = _cli(overrides, tmp_path, "run2")
        out, err = rerun.communicate(timeout=120)
        assert rerun.returncode == 0, err
        assert fal.stats.calls["submit"] == 2 and fal.stats.duplicate_submits == 0
        assert_delivered(film)
        assert all(log.get("reattached") for key, log in logs(film).items() if key in GROUPS)


def test_a_groups_lost_submit_answer_is_reconciled_from_the_history(film, tmp_path, monkeypatch) -> None:
    # fal creates (and bills) group-02's request, then the connection drops before the answer.
    with FakeFal(key=KEY, latency_s=0.3, history_lag_s=0.5) as fal:
        fal.faults.add(Fault("reset_after", on="submit", times=1, after=1))
        overrides = ms_overrides(fal, film, tmp_path, "provider.max_in_flight=1")
        code, summary = run_in_process(overrides, tmp_path / "run", monkeypatch)
        assert code == 0, summary
        assert fal.stats.calls["submit"] == 2 and fal.stats.duplicate_submits == 0
        assert fal.stats.billed_requests == 2 and fal.stats.calls["history"] >= 1
        got = assert_delivered(film)
        record = Journal(film / ".aivp").get(got["group-02"]["identity"])
        assert (
            record["reconciled"] == "request history" and record["request_id"] == got["shot-04"]["request_id"]
        )


def test_a_missing_character_portrait_is_one_error_naming_the_file(fal, film, tmp_path) -> None:
    (film / "image/characters/marco-side.png").unlink()  # Marco's element has only its front view
    proc = _cli(ms_overrides(fal, film, tmp_path, "shots=[1,2]"), tmp_path, "run")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    [line] = [line for line in err.splitlines() if "error" in line]
    assert "group-01" in line and "marco-front.png" in line and "reference_image_urls" in line
    assert "Traceback" not in err
    assert fal.stats.calls["submit"] == 0 and fal.stats.calls["upload"] == 0
    assert not (film / "video/log").exists() or not list((film / "video/log").glob("*.json"))


def test_dry_run_shows_groups_endpoints_and_prices(fal, film, tmp_path, monkeypatch, capsys) -> None:
    code, summary = run_in_process(
        ms_overrides(fal, film, tmp_path, "dry_run=true"), tmp_path / "run", monkeypatch
    )
    assert code == 0, summary
    out = capsys.readouterr().out
    lines = out.splitlines()
    # Kling O3 Pro with audio: $0.34/s; a group of 11 s is one clip of 11 s.
    group = lines.index(next(line for line in lines if line.startswith("group-01")))
    assert lines[group].split() == ["group-01", "REF", "11s", "3.74", REF]
    assert lines[group + 1].split()[:2] == ["shot-01", "5s"] and "part 1/2 of group-01" in lines[group + 1]
    assert lines[group + 2].split()[:2] == ["shot-02", "6s"] and "5–11 s" in lines[group + 2]
    assert any(line.split()[:4] == ["group-02", "REF", "11s", "3.74"] for line in lines)
    assert next(line for line in lines if line.startswith("total")).split() == ["total", "22s", "7.48"]
    jobs = summary["plan"]["jobs"]
    assert [(j["shot"], j["shots"], j["shot_durations_s"]) for j in jobs] == [
        ("group-01", ["shot-01", "shot-02"], [5, 6]),
        ("group-02", ["shot-03", "shot-04"], [4, 7]),
    ]
    assert summary["plan"]["total_usd"] == pytest.approx(7.48)
    assert fal.stats.calls["submit"] == 0 and not (film / "video/log").exists()


def test_dry_run_says_why_a_shot_renders_alone(fal, film, tmp_path, monkeypatch, capsys) -> None:
    # shot-04 without shot-03 has no consecutive neighbour: it takes the single-shot path.
    overrides = ms_overrides(fal, film, tmp_path, "dry_run=true", "shots=[1,2,4]")
    code, summary = run_in_process(overrides, tmp_path / "run", monkeypatch)
    assert code == 0, summary
    out = capsys.readouterr().out
    assert [j["shot"] for j in summary["plan"]["jobs"]] == ["group-01", "shot-04"]
    assert "renders alone (strategy=multishot): it is alone in its scene" in out
    # A model without multi-shot groups: every shot alone, said once.
    overrides = fal_overrides(fal, film, tmp_path, "strategy=multishot", "dry_run=true")
    code, summary = run_in_process(overrides, tmp_path / "run2", monkeypatch)
    assert code == 0 and [j["shot"] for j in summary["plan"]["jobs"]] == list(SECONDS)
    out = capsys.readouterr().out
    assert out.count("takes no multi-shot groups") == 1 and "shot-01, shot-02, shot-03, shot-04" in out


def test_budget_refuses_a_group_that_would_pass_it(fal, film, tmp_path, monkeypatch, capsys) -> None:
    code, _ = run_in_process(ms_overrides(fal, film, tmp_path, "budget_usd=4"), tmp_path / "run", monkeypatch)
    err = capsys.readouterr().err
    assert "exceeds budget_usd=4: 2 of 4 shots fit $4.00; not submitted: shot-03, shot-04" in err
    assert code == 1 and fal.stats.calls["submit"] == 1
    got = logs(film)
    assert [got[s]["status"] for s in ["group-01", "shot-01", "shot-02"]] == ["done"] * 3
    for key in ["group-02", "shot-03", "shot-04"]:
        assert got[key]["status"] == "failed" and "would pass budget_usd=4" in got[key]["error"]
        assert got[key]["cost_usd"] == 0
    assert not (film / "video/clips/shot-03.mp4").exists()


def test_strategy_is_checked(compose_cfg) -> None:
    from aivp_batch.config_check import check_config

    with pytest.raises(ConfigError) as err:
        check_config(compose_cfg("strategy=groups"))
    assert str(err.value) == "strategy=groups: must be one of single, multishot"
    assert compose_cfg().strategy == "single"


def test_format_plan_and_rerender_of_a_group(compose_cfg) -> None:
    from conftest import EXAMPLE

    from aivp_batch.app import build_plan, resolve_paths

    cfg = compose_cfg(f"project_dir={EXAMPLE}", "provider=preview", *KLING)
    plan, _, _ = build_plan(cfg, resolve_paths(cfg, EXAMPLE / "none"))
    assert [j.key for j in plan.jobs] == list(GROUPS) and plan.fallbacks == {}
    text = format_plan(plan)
    assert "group-01" in text and "part 2/2 of group-02, 4–11 s" in text
    assert rerender_ids(compose_cfg(*KLING, "rerender=[group-02]"), plan.jobs) == {"shot-03", "shot-04"}
    assert rerender_ids(compose_cfg(*KLING, "rerender=[1]"), plan.jobs) == {"shot-01"}
    single, _, _ = build_plan(
        compose_cfg(f"project_dir={EXAMPLE}", "provider=preview", "model=kling_o3"),
        resolve_paths(cfg, EXAMPLE / "none"),
    )
    assert [j.key for j in single.jobs] == list(SECONDS)
