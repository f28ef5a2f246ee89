"""The runner against the fake fal server over real sockets: uploads, T2V/I2V/FLF, faults,
COMPLETED-then-422, budget under concurrency, a bad key, crash and resume, no secret in outputs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FAL_SCHEMAS, FAL_TEST_KEY, journal_records
from hydra import compose, initialize_config_module

from aivp_batch.app import run
from aivp_batch.errors import AuthError
from aivp_batch.testing.fal_server import FakeFal, Fault

KEY = FAL_TEST_KEY


def fal_overrides(fal: FakeFal, film: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        f"project_dir={film}",
        f"provider.queue_url={fal.url}",
        f"provider.rest_url={fal.url}",
        f"provider.cdn_url={fal.url}",
        f"provider.schema_url={fal.url}",
        f"provider.api_url={fal.url}",
        "provider.poll_interval=0.05",
        "provider.retry.base_s=0.01",
        "provider.retry.max_s=0.2",
        "provider.max_in_flight=4",
        f"schema_cache_dir={tmp_path / 'schemas'}",
        *extra,
    ]


def run_in_process(overrides: list[str], run_dir: Path, monkeypatch, key: str | None = KEY):
    if key is None:
        monkeypatch.delenv("FAL_KEY", raising=False)
    else:
        monkeypatch.setenv("FAL_KEY", key)
    monkeypatch.setenv("HOME", str(run_dir.parent))
    with initialize_config_module(version_base="1.3", config_module="aivp_batch.conf"):
        cfg = compose(config_name="config", overrides=overrides)
    return run(cfg, run_dir)


def logs(film: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((film / "video/log").glob("*.json"))}


def all_text(*roots: Path) -> str:
    chunks = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and path.suffix in (".json", ".jsonl", ".md", ".yaml", ".txt", ".log"):
                chunks.append(path.read_text(errors="replace"))
    return "\n".join(chunks)


def test_end_to_end_on_fal(fal, film, tmp_path, monkeypatch) -> None:
    code, summary = run_in_process(fal_overrides(fal, film, tmp_path), tmp_path / "run", monkeypatch)
    assert code == 0, summary
    got = logs(film)
    assert [got[s]["mode"] for s in sorted(got)] == ["I2V", "FLF", "T2V", "I2V"]
    assert all(log["status"] == "done" and log["request_id"] in fal.jobs for log in got.values())
    assert got["shot-02"]["payload"]["end_image_url"].startswith(fal.url)  # uploaded, not a local path
    assert fal.stats.calls["submit"] == 4 and fal.stats.duplicate_submits == 0
    assert sorted(fal.stats.uploads_by_hash.values()) == [1, 1, 1, 1]  # ff×3 + lf, each once
    # Fault-free: submit, stream and result per clip — no polling.
    assert (
        fal.stats.calls["stream"] == 4 and fal.stats.calls["result"] == 4 and fal.stats.calls["status"] == 0
    )
    events = [json.loads(line) for line in (film / "video/costs.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events].count("settle") == 4
    assert summary["spent_usd"] == pytest.approx(sum(log["cost_usd"] for log in got.values()))
    assert KEY not in all_text(film, tmp_path / "run")

    # Same command again: everything reused, zero queue requests.
    before, logs_before = dict(fal.stats.calls), logs(film)
    code, summary = run_in_process(fal_overrides(fal, film, tmp_path), tmp_path / "run2", monkeypatch)
    assert code == 0
    assert {k: v - before.get(k, 0) for k, v in fal.stats.calls.items() if v - before.get(k, 0)} == {}
    assert all(result["reused"] for result in summary["results"])
    assert logs(film) == logs_before  # nothing about the shots changed: their logs did not either


@pytest.mark.parametrize(
    "fault, extra",
    [
        (Fault("429", on="submit", times=2, retry_after=0.2), []),
        (Fault("ingress_503", on="result", times=2), []),
        (Fault("ingress_502", on="status", times=3), ["provider.use_stream=false"]),
        (Fault("reset", on="status", times=2), ["provider.use_stream=false"]),
        (Fault("reset", on="stream", times=2), []),
        (Fault("truncate", on="stream", times=2), []),
        (Fault("reset", on="download", times=1), []),
        (Fault("truncate", on="download", times=1), []),
        (Fault("429", on="upload", times=1, retry_after=0.1), []),
        (Fault("ingress_504", on="token", times=1), []),
        (Fault("slow", on="result", times=2, seconds=0.5), []),
    ],
)
def test_transient_faults_are_survived_without_paying_twice(
    fal, film, tmp_path, monkeypatch, fault, extra
) -> None:
    fal.faults.add(fault)
    code, summary = run_in_process(fal_overrides(fal, film, tmp_path, *extra), tmp_path / "run", monkeypatch)
    assert code == 0, summary
    assert fal.stats.duplicate_submits == 0 and len(fal.stats.submits_by_payload) == 4
    assert fal.stats.faults_fired, "the fault never fired"


def journal(film: Path) -> list[dict]:
    return journal_records(film / ".aivp")


def test_lost_submit_answer_is_reconciled_from_the_history(film, tmp_path, monkeypatch) -> None:
    # fal creates (and bills) shot-03's request, then the connection drops before the answer.
    with FakeFal(key=KEY, latency_s=0.3, history_lag_s=0.5) as fal:
        fal.faults.add(Fault("reset_after", on="submit", times=1, after=2))
        overrides = fal_overrides(fal, film, tmp_path, "provider.max_in_flight=1")
        code, summary = run_in_process(overrides, tmp_path / "run", monkeypatch)
        assert code == 0, summary
        got = logs(film)
        assert got["shot-03"]["status"] == "done" and got["shot-03"]["request_id"] in fal.jobs
        assert fal.stats.calls["submit"] == 4 and fal.stats.duplicate_submits == 0
        assert fal.stats.billed_requests == 4 and fal.stats.calls["history"] >= 1
        [adopted] = [r for r in journal(film) if r.get("reconciled")]
        assert adopted["request_id"] == got["shot-03"]["request_id"]


def test_reset_before_the_app_with_a_start_timeout_is_resubmitted_after_it(
    film, tmp_path, monkeypatch
) -> None:
    # The POST never reached fal's app: no request exists. Once its start timeout (plus the
    # margin for the history's delay) has passed with no trace, resubmitting is provably safe.
    with FakeFal(key=KEY, latency_s=0.3) as fal:
        fal.faults.add(Fault("reset_before", on="submit", times=1, after=2))
        extra = ["provider.max_in_flight=1", "provider.start_timeout=1", "provider.reconcile.margin_s=0.5"]
        t0 = time.monotonic()
        code, summary = run_in_process(
            fal_overrides(fal, film, tmp_path, *extra), tmp_path / "run", monkeypatch
        )
        assert code == 0, summary
        assert time.monotonic() - t0 >= 1.5  # waited out the start timeout before resubmitting
        assert fal.stats.calls["submit"] == 5 and len(fal.jobs) == 4 and fal.stats.billed_requests == 4
        sent = [{k.lower(): v for k, v in job.headers.items()} for job in fal.jobs.values()]
        assert all(headers.get("x-fal-request-timeout") == "1" for headers in sent)


def test_lost_submit_without_a_start_timeout_stays_unknown(film, tmp_path, monkeypatch) -> None:
    with FakeFal(key=KEY, latency_s=0.3) as fal:
        fal.faults.add(Fault("reset_before", on="submit", times=1, after=2))
        extra = ["provider.max_in_flight=1", "provider.start_timeout=null", "provider.reconcile.wait_s=0.5"]
        code, _ = run_in_process(fal_overrides(fal, film, tmp_path, *extra), tmp_path / "run", monkeypatch)
        assert code == 1
        error = logs(film)["shot-03"]["error"]
        assert "submit answer lost" in error and "resubmit_unknown=true" in error
        assert fal.stats.calls["submit"] == 4 and len(fal.jobs) == 3
        # The next run looks again and still does not pay blindly.
        code, _ = run_in_process(fal_overrides(fal, film, tmp_path, *extra), tmp_path / "run2", monkeypatch)
        assert code == 1 and fal.stats.calls["submit"] == 4
        assert [r["status"] for r in journal(film)].count("unknown") == 1


def test_two_identical_history_rows_stay_unknown(film, tmp_path, monkeypatch) -> None:
    with FakeFal(key=KEY, latency_s=0.3) as fal:
        extra = ["shots=[3]", "seed=7", "provider.reconcile.wait_s=2"]
        overrides = fal_overrides(fal, film, tmp_path, *extra)
        _, plan = run_in_process([*overrides, "dry_run=true"], tmp_path / "plan", monkeypatch)
        [job] = plan["plan"]["jobs"]
        # Twins of the very same body, sent in the same window (other clients with this key).
        twins = [fal.inject_history(job["endpoint"], job["payload"]) for _ in range(2)]
        fal.faults.add(Fault("reset_after", on="submit", times=1))
        code, _ = run_in_process(overrides, tmp_path / "run", monkeypatch)
        assert code == 1
        error = logs(film)["shot-03"]["error"]
        assert "requests in the provider's history match it" in error and all(t.id in error for t in twins)
        assert fal.stats.calls["submit"] == 1
        code, _ = run_in_process(overrides, tmp_path / "run2", monkeypatch)
        assert code == 1 and fal.stats.calls["submit"] == 1  # never resubmitted


def test_completed_then_422_is_final_then_resubmitted_on_rerun(fal, film, tmp_path, monkeypatch) -> None:
    fal.faults.add(
        Fault(
            "fail_generation",
            on="submit",
            times=1,
            after=2,
            status_code=422,
            message="String should have at most 2500 characters",
        )
    )
    code, _ = run_in_process(
        fal_overrides(fal, film, tmp_path, "provider.max_in_flight=1"), tmp_path / "run", monkeypatch
    )
    assert code == 1
    failed = logs(film)["shot-03"]
    assert failed["status"] == "failed" and "422" in failed["error"] and "2500 characters" in failed["error"]
    assert fal.stats.calls["result"] <= 5  # the 422 is not retried
    events = [json.loads(line) for line in (film / "video/costs.jsonl").read_text().splitlines()]
    assert any(e["event"] == "release" and e["shot"] == "shot-03" for e in events)  # failures cost nothing
    code, _ = run_in_process(fal_overrides(fal, film, tmp_path), tmp_path / "run2", monkeypatch)
    assert code == 0 and fal.stats.calls["submit"] == 5  # only the failed shot went again
    assert logs(film)["shot-03"]["attempts"] == 2


def test_budget_is_respected_under_concurrency(fal, film, tmp_path, monkeypatch, capsys) -> None:
    # Seedance 1.5 standard: 720p with audio ≈ $0.052/s; 5+6+4+7 s ≈ $1.14 in all.
    code, summary = run_in_process(
        fal_overrides(fal, film, tmp_path, "budget_usd=0.6"), tmp_path / "run", monkeypatch
    )
    assert "exceeds budget_usd=0.6" in capsys.readouterr().err
    assert code == 1
    got = logs(film)
    done = [log for log in got.values() if log["status"] == "done"]
    refused = [log for log in got.values() if "would pass budget_usd" in (log["error"] or "")]
    assert done and refused and len(done) + len(refused) == 4
    assert sum(log["cost_usd"] for log in done) <= 0.6
    assert fal.stats.calls["submit"] == len(done)


def test_bad_key_stops_before_anything_is_submitted(fal, film, tmp_path, monkeypatch) -> None:
    with pytest.raises(AuthError) as err:
        run_in_process(fal_overrides(fal, film, tmp_path), tmp_path / "run", monkeypatch, key="wrong-key-XYZ")
    assert "FAL_KEY" in str(err.value) and "wrong-key-XYZ" not in str(err.value)
    assert fal.stats.calls["submit"] == 0 and fal.stats.calls["upload"] == 0


def _cli(
    overrides: list[str], tmp_path: Path, run_dir: str, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """The command line in its own process; `env` replaces the default (FAL_KEY set, HOME here)."""
    env = env if env is not None else {**os.environ, "FAL_KEY": KEY, "HOME": str(tmp_path)}
    return subprocess.Popen(
        [sys.executable, "-m", "aivp_batch", f"hydra.run.dir={tmp_path / run_dir}", *overrides],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _journal_statuses(film: Path) -> list[str]:
    return [r["status"] for r in journal_records(film / ".aivp") if "status" in r]


def _start_and_wait_for_two_submits(fal: FakeFal, film: Path, tmp_path: Path) -> subprocess.Popen:
    """The CLI in a subprocess with two requests in flight (journalled as submitted) at return."""
    proc = _cli(fal_overrides(fal, film, tmp_path, "provider.max_in_flight=2"), tmp_path, "run1")
    deadline = time.monotonic() + 60
    while _journal_statuses(film).count("submitted") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc


def test_sigkill_then_rerun_submits_each_payload_once(film, tmp_path) -> None:
    with FakeFal(schemas_dir=FAL_SCHEMAS, key=KEY, latency_s=3.0) as fal:
        proc = _start_and_wait_for_two_submits(fal, film, tmp_path)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert fal.stats.calls["submit"] == 2
        rerun = _cli(fal_overrides(fal, film, tmp_path, "provider.max_in_flight=2"), tmp_path, "run2")
        out, err = rerun.communicate(timeout=120)
        assert rerun.returncode == 0, err + out
        assert fal.stats.calls["submit"] == 4 and fal.stats.duplicate_submits == 0
        assert all(n == 1 for n in fal.stats.submits_by_payload.values())
        assert all(log["status"] == "done" for log in logs(film).values())
        assert sum(bool(log.get("reattached")) for log in logs(film).values()) == 2


def test_ctrl_c_twice_cancels_in_flight_requests(film, tmp_path) -> None:
    with FakeFal(schemas_dir=FAL_SCHEMAS, key=KEY, latency_s=5.0) as fal:
        proc = _start_and_wait_for_two_submits(fal, film, tmp_path)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 1, err
        assert fal.stats.calls["cancel"] == 2 and fal.stats.calls["submit"] == 2
        got = logs(film)
        assert sorted(log["status"] for log in got.values()) == ["failed", "failed", "pending", "pending"]
        assert "interrupt" in err


def test_refused_submit_is_safe_to_resubmit(fal, film, tmp_path, monkeypatch) -> None:
    fal.faults.add(Fault("429", on="submit", times=None, after=2, retry_after=0.01))
    extra = ["provider.max_in_flight=1", "provider.retry.attempts=2"]
    code, _ = run_in_process(fal_overrides(fal, film, tmp_path, *extra), tmp_path / "run", monkeypatch)
    assert code == 1
    got = logs(film)
    assert [got[s]["status"] for s in sorted(got)] == ["done", "done", "failed", "failed"]
    assert "not accepted" in got["shot-03"]["error"]
    fal.faults.clear()
    code, _ = run_in_process(fal_overrides(fal, film, tmp_path), tmp_path / "run2", monkeypatch)
    assert code == 0 and fal.stats.duplicate_submits == 0 and len(fal.stats.submits_by_payload) == 4


def test_client_timeout_cancels_and_counts_the_estimate(film, tmp_path, monkeypatch) -> None:
    with FakeFal(schemas_dir=FAL_SCHEMAS, key=KEY, latency_s=5.0) as fal:
        extra = ["provider.client_timeout=0.5", "shots=[3]"]
        code, _ = run_in_process(fal_overrides(fal, film, tmp_path, *extra), tmp_path / "run", monkeypatch)
        assert code == 1 and fal.stats.calls["cancel"] == 1
    log = logs(film)["shot-03"]
    assert "timed out after 0.5s" in log["error"] and log["request_id"] in log["error"]
    events = [json.loads(line) for line in (film / "video/costs.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "settle" and events[-1]["cost_usd"] == log["estimate_usd"]


def test_lost_clips_come_back_without_paying_again(fal, film, tmp_path, monkeypatch) -> None:
    code, _ = run_in_process(fal_overrides(fal, film, tmp_path), tmp_path / "run", monkeypatch)
    assert code == 0
    shutil.rmtree(film / ".aivp/clips")  # the store's copies are gone…
    (film / "video/clips/shot-01.mp4").unlink()  # …and one shot clip too
    code, _ = run_in_process(fal_overrides(fal, film, tmp_path), tmp_path / "run2", monkeypatch)
    assert code == 0 and fal.stats.calls["submit"] == 4
    assert fal.stats.calls["download"] == 5  # only shot-01 was fetched again from its result URL
    assert (film / "video/clips/shot-01.mp4").exists()


def test_identical_shots_are_rendered_once(fal, film, tmp_path, monkeypatch) -> None:
    shots = film / "storyboard/storyboard-final/shots"
    shutil.copy(shots / "shot-03.md", shots / "shot-05.md")
    (film / "storyboard/storyboard-final/frame-plan.md").unlink()
    code, summary = run_in_process(
        fal_overrides(fal, film, tmp_path, "seed=9"), tmp_path / "run", monkeypatch
    )
    assert code == 0, summary
    assert fal.stats.calls["submit"] == 4 and len(logs(film)) == 5
    assert (
        logs(film)["shot-05"]["reused"]
        and logs(film)["shot-05"]["request_id"] == logs(film)["shot-03"]["request_id"]
    )


def test_rerun_reuses_uploaded_keyframes(fal, film, tmp_path, monkeypatch) -> None:
    fal.faults.add(Fault("fail_generation", on="submit", times=1, after=0, status_code=422))
    code, _ = run_in_process(
        fal_overrides(fal, film, tmp_path, "provider.max_in_flight=1"), tmp_path / "run", monkeypatch
    )
    assert code == 1 and logs(film)["shot-01"]["status"] == "failed"
    assert fal.stats.calls["upload"] == 4
    code, _ = run_in_process(fal_overrides(fal, film, tmp_path), tmp_path / "run2", monkeypatch)
    assert code == 0 and fal.stats.calls["submit"] == 5
    assert fal.stats.calls["upload"] == 4  # shot-01's keyframe URL came from the upload cache
    assert json.loads((film / ".aivp/uploads.json").read_text())


def test_schema_falls_back_to_model_search(fal, film, tmp_path, monkeypatch) -> None:
    fal.faults.add(Fault("ingress_503", on="schema", times=None, match="openapi.json"))
    overrides = [*fal_overrides(fal, film, tmp_path), f"provider.api_url={fal.url}", "dry_run=true"]
    code, summary = run_in_process(overrides, tmp_path / "run", monkeypatch)
    assert code == 0, summary
    assert fal.stats.faults_fired and all(job["schema_sha256"] for job in summary["plan"]["jobs"])


def test_ctrl_c_once_lets_in_flight_jobs_finish(film, tmp_path) -> None:
    with FakeFal(schemas_dir=FAL_SCHEMAS, key=KEY, latency_s=2.0) as fal:
        proc = _start_and_wait_for_two_submits(fal, film, tmp_path)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 1, err
        assert fal.stats.calls["submit"] == 2 and fal.stats.calls["cancel"] == 0
    got = logs(film)
    assert sorted(log["status"] for log in got.values()) == ["done", "done", "pending", "pending"]
    assert "no new submissions" in err


# ---------------------------------------------------------------- never paying twice


def test_two_concurrent_runs_submit_once(film, tmp_path) -> None:
    with FakeFal(key=KEY, latency_s=1.0) as fal:
        overrides = fal_overrides(fal, film, tmp_path)
        first = _cli(overrides, tmp_path, "run1")
        second = _cli(overrides, tmp_path, "run2")
        outs = [proc.communicate(timeout=120) for proc in (first, second)]
        assert [first.returncode, second.returncode] == [0, 0], outs
        assert fal.stats.calls["submit"] == 4 and fal.stats.duplicate_submits == 0
        assert any("another run holds" in err and "pid" in err for _, err in outs)
        assert (tmp_path / "run1/summary.json").exists() and (tmp_path / "run2/summary.json").exists()


def test_lock_wait_zero_exits_2_while_another_run_holds_the_store(film, tmp_path) -> None:
    with FakeFal(key=KEY, latency_s=2.0) as fal:
        first = _start_and_wait_for_two_submits(fal, film, tmp_path)
        second = _cli(fal_overrides(fal, film, tmp_path, "lock_wait_s=0"), tmp_path, "run2")
        _, err = second.communicate(timeout=60)
        assert second.returncode == 2
        [line] = [line for line in err.splitlines() if "error" in line]
        assert f"another run holds {film / 'video'} since " in line and f"pid {first.pid}" in line
        assert "Traceback" not in err
        first.communicate(timeout=120)
        assert first.returncode == 0 and fal.stats.calls["submit"] == 4


def test_prompt_manifest_twice_submits_once(fal, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AIVP_HOME", str(tmp_path / "home-aivp"))
    readme = ["manifest=prompt", "manifest.prompt=A slow pan over a harbour"]
    for n in (1, 2):  # without output_dir: the store is $AIVP_HOME, never the run dir
        overrides = [o for o in fal_overrides(fal, tmp_path, tmp_path) if not o.startswith("project_dir")]
        code, summary = run_in_process([*overrides, *readme], tmp_path / f"run{n}", monkeypatch)
        assert code == 0, summary
    assert fal.stats.calls["submit"] == 1
    assert journal_records(tmp_path / "home-aivp")
    for n in (3, 4):  # the README's form, with output_dir=out: the store is out/.aivp
        overrides = [o for o in fal_overrides(fal, tmp_path, tmp_path) if not o.startswith("project_dir")]
        out = f"output_dir={tmp_path / 'out'}"
        code, _ = run_in_process([*overrides, *readme, out, "seed=5"], tmp_path / f"run{n}", monkeypatch)
        assert code == 0
    assert fal.stats.calls["submit"] == 2 and journal_records(tmp_path / "out/.aivp")


def test_delivered_clips_are_independent_copies(fal, film, tmp_path, monkeypatch) -> None:
    code, _ = run_in_process(fal_overrides(fal, film, tmp_path), tmp_path / "run", monkeypatch)
    assert code == 0
    delivered = film / "video/clips/shot-03.mp4"
    [stored] = [p for p in (film / ".aivp/clips").glob("*.mp4") if p.read_bytes() == delivered.read_bytes()]
    assert os.stat(stored).st_ino != os.stat(delivered).st_ino
    with delivered.open("ab") as f:
        f.write(b"an editor's change")
    assert not stored.read_bytes().endswith(b"an editor's change")


def test_edited_clip_with_an_expired_url_is_kept_and_nothing_bought(
    film, tmp_path, monkeypatch, capsys
) -> None:
    with FakeFal(key=KEY, latency_s=0.2) as fal:
        code, _ = run_in_process(fal_overrides(fal, film, tmp_path), tmp_path / "run", monkeypatch)
        assert code == 0
    delivered = film / "video/clips/shot-03.mp4"
    edited = delivered.read_bytes() + b"trimmed in an editor"
    delivered.write_bytes(edited)
    shutil.rmtree(film / ".aivp/clips")  # the store lost its copies too…
    (film / "video/clips/shot-01.mp4").unlink()  # …and shot-01 is gone everywhere
    with FakeFal(key=KEY, latency_s=0.2) as later:  # the first server's result URLs are gone with it
        code, _ = run_in_process(fal_overrides(later, film, tmp_path), tmp_path / "run2", monkeypatch)
        err = capsys.readouterr().err
        assert "video/clips/shot-03.mp4 was changed on disk; keeping it" in err
        assert later.stats.calls["submit"] == 0 and delivered.read_bytes() == edited
        assert code == 1  # shot-01 is in neither place and its URL died with the server: not re-bought
        assert "rerender=[shot-01]" in logs(film)["shot-01"]["error"]
        assert logs(film)["shot-02"]["status"] == "done"  # restored into the store from its delivered copy
        # Asked for explicitly, a shot is rendered (and paid for) again and its edit replaced.
        code, _ = run_in_process(
            fal_overrides(later, film, tmp_path, "rerender=[1,shot-03]"), tmp_path / "run3", monkeypatch
        )
        assert later.stats.calls["submit"] == 2 and delivered.read_bytes() != edited


def test_billed_cost_is_units_times_fal_unit_price(film, tmp_path, monkeypatch, capsys) -> None:
    t2v = "fal-ai/bytedance/seedance/v1.5/pro/text-to-video"
    i2v = "fal-ai/bytedance/seedance/v1.5/pro/image-to-video"
    prices = {t2v: (0.052, "seconds"), i2v: (0.2, "seconds")}  # i2v: far from the config's rate
    with FakeFal(key=KEY, latency_s=0.2, prices=prices) as fal:
        code, summary = run_in_process(fal_overrides(fal, film, tmp_path), tmp_path / "run", monkeypatch)
        assert code == 0, summary
    got = logs(film)
    for log in got.values():
        price, unit = prices[log["endpoint"]]
        assert log["cost_source"] == "billed" and log["unit"] == unit and log["unit_price"] == price
        assert log["cost_usd"] == pytest.approx(log["billable_units"] * price)
        assert log["billable_units"] == float(log["duration"]) and log["estimate_usd"] > 0
    settled = {e["shot"]: e for e in map(json.loads, (film / "video/costs.jsonl").read_text().splitlines())}
    assert all(settled[s]["cost_usd"] == pytest.approx(got[s]["cost_usd"]) for s in got)
    assert summary["billed_usd"] == pytest.approx(sum(log["cost_usd"] for log in got.values()), abs=1e-4)
    assert summary["estimated_usd"] == pytest.approx(
        sum(log["estimate_usd"] for log in got.values()), abs=1e-4
    )
    # Warned once, before anything was spent, from fal's price × the shot's seconds.
    warnings = [line for line in capsys.readouterr().err.splitlines() if "model config estimates" in line]
    assert len(warnings) == 1 and i2v in warnings[0] and "fal's unit price gives" in warnings[0]
    plan = (film / "video/plan.md").read_text()
    assert f"${summary['billed_usd']:.2f} billed" in plan and "~$" not in plan


def test_bad_key_is_refused_by_the_pricing_call(fal, film, tmp_path, monkeypatch) -> None:
    with pytest.raises(AuthError):
        run_in_process(fal_overrides(fal, film, tmp_path), tmp_path / "run", monkeypatch, key="wrong")
    assert fal.stats.calls["pricing"] == 1 and fal.stats.calls["token"] == 0
    assert fal.stats.calls["upload"] == 0 and fal.stats.calls["submit"] == 0


def test_upload_cache_is_per_storage_host(fal, film, tmp_path, monkeypatch) -> None:
    code, _ = run_in_process(fal_overrides(fal, film, tmp_path), tmp_path / "run", monkeypatch)
    assert code == 0
    with FakeFal(key=KEY, latency_s=0.2) as staging:  # another storage host (cdn_url changed)
        overrides = fal_overrides(staging, film, tmp_path, "rerender=[1]")
        code, _ = run_in_process(overrides, tmp_path / "run2", monkeypatch)
        assert code == 0 and staging.stats.calls["upload"] == 1
        assert logs(film)["shot-01"]["payload"]["image_url"].startswith(staging.url)


def test_a_failed_rerender_keeps_the_paid_clip_as_the_record(fal, film, tmp_path, monkeypatch) -> None:
    code, _ = run_in_process(fal_overrides(fal, film, tmp_path), tmp_path / "run", monkeypatch)
    assert code == 0
    clip = (film / "video/clips/shot-03.mp4").read_bytes()
    fal.faults.add(Fault("fail_generation", on="submit", times=1))
    code, _ = run_in_process(
        fal_overrides(fal, film, tmp_path, "rerender=[3]"), tmp_path / "run2", monkeypatch
    )
    assert code == 1 and fal.stats.calls["submit"] == 5
    assert (film / "video/clips/shot-03.mp4").read_bytes() == clip  # the paid clip stays delivered
    code, _ = run_in_process(fal_overrides(fal, film, tmp_path), tmp_path / "run3", monkeypatch)
    assert code == 0 and fal.stats.calls["submit"] == 5  # and is not bought again
    assert logs(film)["shot-03"]["status"] == "done"


def test_a_rerender_checks_the_key_before_anything_is_sent(fal, film, tmp_path, monkeypatch) -> None:
    code, _ = run_in_process(fal_overrides(fal, film, tmp_path), tmp_path / "run", monkeypatch)
    assert code == 0
    uploads = fal.stats.calls["upload"]
    with pytest.raises(AuthError):
        overrides = fal_overrides(fal, film, tmp_path, "rerender=[2]")
        run_in_process(overrides, tmp_path / "run2", monkeypatch, key="wrong")
    assert fal.stats.calls["submit"] == 4 and fal.stats.calls["upload"] == uploads


def test_a_reconciled_request_whose_queue_result_expired_is_fetched_from_the_history(
    film, tmp_path, monkeypatch
) -> None:
    with FakeFal(key=KEY, latency_s=0.2, result_ttl_s=0.05) as fal:
        fal.faults.add(Fault("reset_after", on="submit", times=1))
        extra = ["shots=[3]"]  # the second look (0.5 s on) comes after the result expired
        code, summary = run_in_process(
            fal_overrides(fal, film, tmp_path, *extra), tmp_path / "run", monkeypatch
        )
        assert code == 0, summary
        log = logs(film)["shot-03"]
        assert log["status"] == "done" and log["request_id"] in fal.jobs
        assert fal.stats.calls["submit"] == 1 and fal.stats.billed_requests == 1
        [record] = journal(film)
        assert record["reconciled"] == "request history" and record["result_from"] == "request history"
