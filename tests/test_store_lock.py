"""One run at a time per job store, across processes; a dead holder never blocks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aivp_batch.store_lock import StoreBusy, StoreLock

HOLD = """
import sys, time
from pathlib import Path
from aivp_batch.store_lock import StoreLock
with StoreLock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _holder(store: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(store), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_holder_is_refused_at_once_with_lock_wait_zero(tmp_path: Path) -> None:
    holder = _holder(tmp_path / "store", 30)
    try:
        with pytest.raises(StoreBusy) as err, StoreLock(tmp_path / "store", wait_s=0):
            pass
        message = str(err.value)
        assert f"another run holds {tmp_path / 'store'} since " in message and f"pid {holder.pid}" in message
        assert "lock_wait_s=0" in message
    finally:
        holder.kill()
        holder.wait()


def test_a_waiting_run_gets_the_store_when_the_holder_finishes(tmp_path: Path, capsys) -> None:
    holder = _holder(tmp_path / "store", 0.8)
    t0 = time.monotonic()
    with StoreLock(tmp_path / "store", wait_s=30, poll_s=0.05):
        waited = time.monotonic() - t0
    holder.wait()
    assert 0.3 < waited < 10
    assert "waiting for up to 30 s" in capsys.readouterr().err


def test_a_bounded_wait_gives_up_with_one_line(tmp_path: Path) -> None:
    holder = _holder(tmp_path / "store", 30)
    try:
        with (
            pytest.raises(StoreBusy, match=r"gave up after \d+ s \(lock_wait_s\)"),
            StoreLock(tmp_path / "store", wait_s=0.3, poll_s=0.05),
        ):
            pass
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_holder_never_blocks(tmp_path: Path) -> None:
    holder = _holder(tmp_path / "store", 60)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (tmp_path / "store/run.lock.json").exists()  # its note is stale, its lock is not held
    with StoreLock(tmp_path / "store", wait_s=0):
        assert str(os.getpid()) in (tmp_path / "store/run.lock.json").read_text()
    assert not (tmp_path / "store/run.lock.json").exists()
