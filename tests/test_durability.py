"""Kill the runner at each point where it writes a record, then rerun: every clip is paid for
exactly once and the ledger books each job's cost once.

The points are where the journal changes, seen from the provider's side: while the submit is in
the air (the journal says `unknown`: a rerun must find the request in fal's history, not send it
again), while waiting on the status stream and while fetching the result (`submitted`: re-attach),
and while downloading (`submitted`, the render paid: fetch it again, not buy it again). A fault
holds the request there (`slow`) so the kill lands at that point.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import FAL_SCHEMAS, FAL_TEST_KEY
from test_runner_fal import _cli, fal_overrides, logs

from aivp_batch.testing.fal_server import FakeFal, Fault

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
