"""Kill the runner at each point where it writes a record, then rerun: every clip is paid for
exactly once and the ledger books each job's cost once.

The points are where the journal changes, seen from the provider's side: while the submit is in
the air (the journal says `unknown`: a rerun must find the request in fal's history, not send it
again), while waiting on the status stream and while fetching the result (`submitted`: re-attach),
and while downloading (`submitted`, the render paid: fetch it again, not buy it again). A fault
holds the request there (`slow`) so the kill lands at that point. The same on Replicate (the CLI
against FakeReplicate over loopback): every prediction created exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import FAL_SCHEMAS, FAL_TEST_KEY, journal_records
from test_replicate_runner import TOKEN, replicate_overrides
from test_runner_fal import _cli, fal_overrides, logs

from aivp_batch.testing.fal_server import FakeFal, Fault
from aivp_batch.testing.replicate_server import FakeReplicate, ReplicateFault

POINTS = ["submit", "stream", "result", "download"]


def _ledger_events(film: Path) -> list[dict]:
    path = film / "video/costs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("point", POINTS)
def test_kill_at_each_write_point_then_rerun_pays_each_clip_once(
    point: str, film: Path, tmp_path: Path
) -> None:
    with FakeFal(schemas_dir=FAL_SCHEMAS, key=FAL_TEST_KEY, latency_s=0.3) as fal:
        # The second job is held at `point`; the first has gone through every write by then.
        fal.faults.add(Fault("slow", on=point, after=1, times=1, seconds=30))
        overrides = fal_overrides(fal, film, tmp_path, "provider.max_in_flight=1")
        first = _cli(overrides, tmp_path, "run1")
        deadline = time.monotonic() + 60
        while fal.stats.faults_fired.get(f"{point}:slow", 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert fal.stats.faults_fired.get(f"{point}:slow") == 1, f"the run never reached {point}"
        time.sleep(0.2)  # inside the held call
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        submits_before = fal.stats.calls["submit"]

        rerun = _cli(overrides, tmp_path, "run2")
        out, err = rerun.communicate(timeout=120)
        assert rerun.returncode == 0, err + out
        assert fal.stats.duplicate_submits == 0 and all(n == 1 for n in fal.stats.submits_by_payload.values())
        assert fal.stats.calls["submit"] == 4 == len(fal.stats.submits_by_payload)
        # The held job was sent once, before the kill, and never again (while one downloads, its slot
        # is free and the next job is already submitted).
        assert submits_before == (3 if point == "download" else 2)
    assert sorted(log["status"] for log in logs(film).values()) == ["done"] * 4
    settled = Counter(e["identity"] for e in _ledger_events(film) if e["event"] == "settle")
    assert len(settled) == 4 and set(settled.values()) == {1}  # each job's cost booked once


def test_kill_before_the_logs_are_written_then_rerun_writes_them_from_the_journal(
    film: Path, tmp_path: Path
) -> None:
    """Shot logs and plan.md are written at most every `log_interval_s` (a job's pending log not
    before the end): a run killed in between has paid clips whose logs are missing or out of date.
    The journal is what the rerun trusts: nothing is bought again and every log is written."""
    with FakeFal(schemas_dir=FAL_SCHEMAS, key=FAL_TEST_KEY, latency_s=0.3) as fal:
        fal.faults.add(Fault("slow", on="download", after=1, times=1, seconds=30))
        overrides = fal_overrides(fal, film, tmp_path, "provider.max_in_flight=1")
        first = _cli([*overrides, "log_interval_s=600"], tmp_path, "run1")
        _until(lambda: fal.stats.faults_fired.get("download:slow", 0) >= 1, "the second download")
        _until(lambda: "done" in [r["status"] for r in journal_records(film / ".aivp")], "a done record")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        # The first clip is paid and delivered, but no log says so: its last one was never written.
        assert (film / "video/clips/shot-01.mp4").is_file()
        assert all(log["status"] != "done" for log in logs(film).values())
        submits_before = fal.stats.calls["submit"]

        rerun = _cli(overrides, tmp_path, "run2")
        out, err = rerun.communicate(timeout=120)
        assert rerun.returncode == 0, err + out
        assert "changed on disk" not in err + out  # shot-01's delivered clip is ours, not an edit
        # shot-03 was sent while shot-02 downloaded; only shot-04 was left to send
        assert fal.stats.duplicate_submits == 0 and fal.stats.calls["submit"] == 4 == submits_before + 1
    got = logs(film)
    assert sorted(log["status"] for log in got.values()) == ["done"] * 4
    by_identity = {r["identity"]: r for r in journal_records(film / ".aivp")}
    assert all(log["request_id"] == by_identity[log["identity"]]["request_id"] for log in got.values())
    plan = (film / "video/plan.md").read_text()
    assert plan.count("| done |") == 4


# ---------------------------------------------------------------- the same on Replicate

# Where a Replicate job is held when the runner is killed: its create in the air (the prediction
# made, its answer held: the journal says `unknown`, and the rerun must find it in
# GET /v1/predictions, not create it again), while polling it (`submitted`: re-attach by id) and
# while downloading its output (`submitted`, the render paid: download it again, not buy it again).
REPLICATE_POINTS = ["create", "get", "download"]
_PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def _replicate_cli(overrides: list[str], tmp_path: Path, run_dir: str) -> subprocess.Popen:
    """The command line in its own process, talking to the test's FakeReplicate over loopback."""
    drop = {*_PROXIES, "FAL_KEY", "AIVP_CONFIG_DIR"}  # loopback must not go through a proxy
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(REPLICATE_API_TOKEN=TOKEN, HOME=str(tmp_path))
    return _cli(overrides, tmp_path, run_dir, env=env)


def _until(condition, what: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"the run never reached {what}"
        time.sleep(0.02)


@pytest.mark.parametrize("point", REPLICATE_POINTS)
def test_replicate_kill_at_each_write_point_then_rerun_creates_each_prediction_once(
    point: str, film: Path, tmp_path: Path
) -> None:
    with FakeReplicate(token=TOKEN, latency_s=1.5) as rep:
        # The second job is held at `point`; the first has gone through every write by then.
        if point != "get":  # a create held after it took effect; the second download held
            rep.faults.add(ReplicateFault("slow", on=point, after=1, seconds=30, applied=point == "create"))
        overrides = replicate_overrides(
            rep, film, tmp_path, "model=kling_v25_turbo", "provider.max_in_flight=1"
        )
        first = _replicate_cli(overrides, tmp_path, "run1")
        try:
            if point == "get":  # hold a poll of the second prediction, once it exists
                _until(lambda: rep.stats.creates >= 2, "the second create")
                second = max(rep.predictions.values(), key=lambda p: p.created).id
                rep.faults.add(ReplicateFault("slow", on="get", match=second, seconds=30))
            _until(lambda: rep.stats.faults_fired.get(f"{point}:slow", 0) >= 1, point)
            if point == "create":
                _until(lambda: rep.stats.creates >= 2, "the held create taking effect")
            time.sleep(0.3)  # inside the held call
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        creates_before = rep.stats.creates
        statuses = [r["status"] for r in journal_records(film / ".aivp")]
        assert ("unknown" if point == "create" else "submitted") in statuses

        rerun = _replicate_cli(overrides, tmp_path, "run2")
        out, err = rerun.communicate(timeout=180)
        assert rerun.returncode == 0, err + out
        # One create per job, none twice: the held one was made once, before the kill, and never again
        # (while one downloads, its slot is free and the next job is already created).
        assert creates_before == (3 if point == "download" else 2)
        assert rep.stats.calls["create"] == rep.stats.creates == 4 == len(rep.stats.creates_by_input)
        assert rep.stats.duplicate_creates == 0 and set(rep.stats.creates_by_input.values()) == {1}
        if point == "create":
            assert rep.stats.calls["list"] >= 1  # found again in the predictions list
    got = logs(film)
    assert sorted(log["status"] for log in got.values()) == ["done"] * 4
    assert {log["request_id"] for log in got.values()} == set(rep.predictions)  # each clip its own create
    records = journal_records(film / ".aivp")
    if point == "create":  # shot-02's lost create was adopted from the list, not made again
        [adopted] = [r for r in records if r.get("reconciled")]
        assert adopted["request_id"] == got["shot-02"]["request_id"]
    else:  # shot-02 was re-attached by its prediction id
        assert got["shot-02"].get("reattached") and not any(r.get("reconciled") for r in records)
    assert all((film / "video/clips" / f"{key}.mp4").stat().st_size > 1000 for key in got)
    settled = Counter(e["identity"] for e in _ledger_events(film) if e["event"] == "settle")
    assert len(settled) == 4 and set(settled.values()) == {1}  # each job's cost booked once
