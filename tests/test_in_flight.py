"""The in-flight limit: a run's own, and one shared by a sweep's members in parallel processes."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
from pathlib import Path

from aivp_batch.in_flight import SharedSlots, slots_for


def test_a_run_alone_holds_a_semaphore_and_a_parallel_member_the_shared_slots(tmp_path: Path) -> None:
    assert isinstance(slots_for(3), asyncio.Semaphore)
    assert isinstance(slots_for(3, tmp_path / "slots"), SharedSlots)


def test_two_holders_of_one_folder_share_its_slots(tmp_path: Path) -> None:
    # Two instances open their own descriptors: their flocks conflict as two processes' would.
    a, b = SharedSlots(tmp_path, 2, poll_s=0.01), SharedSlots(tmp_path, 2, poll_s=0.01)

    async def run() -> None:
        await a.acquire()
        await a.acquire()
        waiting = asyncio.ensure_future(b.acquire())
        await asyncio.sleep(0.1)
        assert not waiting.done()  # both slots are a's
        a.release()
        await asyncio.wait_for(waiting, 1)
        b.release()
        a.release()

    asyncio.run(run())
    a.close()
    b.close()


def _member(folder: str, limit: int, jobs: int, now: object, peak: object, lock: object) -> None:
    slots = SharedSlots(Path(folder), limit, poll_s=0.005)

    async def job() -> None:
        await slots.acquire()
        with lock:  # type: ignore[attr-defined]
            now.value += 1  # type: ignore[attr-defined]
            peak.value = max(peak.value, now.value)  # type: ignore[attr-defined]
        await asyncio.sleep(0.02)
        with lock:  # type: ignore[attr-defined]
            now.value -= 1  # type: ignore[attr-defined]
        slots.release()

    async def run() -> None:
        await asyncio.gather(*(job() for _ in range(jobs)))

    asyncio.run(run())


def test_members_in_parallel_processes_never_pass_the_one_limit(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    now, peak, lock = ctx.Value("i", 0), ctx.Value("i", 0), ctx.Lock()
    procs = [ctx.Process(target=_member, args=(str(tmp_path), 3, 12, now, peak, lock)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert peak.value == 3  # 36 jobs in 3 processes, never more than 3 in flight between them


def _hold_every_slot(folder: str, limit: int, ready: object) -> None:
    slots = SharedSlots(Path(folder), limit)

    async def run() -> None:
        for _ in range(limit):
            await slots.acquire()
        ready.set()  # type: ignore[attr-defined]
        await asyncio.sleep(60)

    asyncio.run(run())


def test_a_killed_member_frees_its_slots(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_every_slot, args=(str(tmp_path), 2, ready))
    holder.start()
    assert ready.wait(60)
    mine = SharedSlots(tmp_path, 2, poll_s=0.01)

    async def run() -> None:
        try:
            await asyncio.wait_for(mine.acquire(), 0.2)
            raise AssertionError("a slot was free while the holder held them all")
        except TimeoutError:
            pass
        os.kill(holder.pid, signal.SIGKILL)
        await asyncio.to_thread(holder.join, 10)
        t0 = time.monotonic()
        await asyncio.wait_for(mine.acquire(), 5)
        await asyncio.wait_for(mine.acquire(), 5)
        assert time.monotonic() - t0 < 5

    asyncio.run(run())
    mine.close()
