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


def test_run_locks_are_per_output_folder(tmp_path: Path) -> None:
    from aivp_batch.store_lock import run_lock

    store = tmp_path / "store"
    with run_lock(store, tmp_path / "a" / "video", wait_s=0):
        with run_lock(store, tmp_path / "b" / "video", wait_s=0):  # another folder: no wait
            pass
        with pytest.raises(StoreBusy) as err, run_lock(store, tmp_path / "a" / "video", wait_s=0):
            pass
    assert f"another run holds {tmp_path / 'a' / 'video'} since " in str(err.value)


JOB_HOLD = """
import asyncio, sys, time
from pathlib import Path
from aivp_batch.store_lock import JobLocks
async def main():
    async with JobLocks(Path(sys.argv[1])).hold(sys.argv[2]):
        print("held", flush=True)
        time.sleep(float(sys.argv[3]))
asyncio.run(main())
"""


def test_a_job_held_by_another_process_waits_without_blocking_the_loop(tmp_path: Path) -> None:
    import asyncio

    from aivp_batch.store_lock import JobLocks

    store = tmp_path / "store"
    holder = subprocess.Popen(
        [sys.executable, "-c", JOB_HOLD, str(store), "abc", "0.8"], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout and holder.stdout.readline().strip() == "held"
    waits: list[str] = []
    ticks = 0

    async def other_work() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    async def main() -> float:
        locks = JobLocks(store, poll_s=0.05)
        ticker = asyncio.ensure_future(other_work())
        async with locks.hold("other", lambda: waits.append("other")):  # another job: at once
            pass
        t0 = time.monotonic()
        async with locks.hold("abc", lambda: waits.append("abc")):
            waited = time.monotonic() - t0
        ticker.cancel()
        return waited

    waited = asyncio.run(main())
    holder.wait()
    assert waits == ["abc"]  # told once, and only for the job held elsewhere
    assert 0.3 < waited < 10 and ticks >= 4  # the loop ran other work meanwhile


def test_a_killed_job_holder_never_blocks(tmp_path: Path) -> None:
    import asyncio

    from aivp_batch.store_lock import JobLocks

    holder = subprocess.Popen(
        [sys.executable, "-c", JOB_HOLD, str(tmp_path), "abc", "60"], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout and holder.stdout.readline().strip() == "held"
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()

    async def main() -> None:
        async with JobLocks(tmp_path, poll_s=0.05).hold("abc"):
            pass

    asyncio.run(asyncio.wait_for(main(), timeout=5))
