"""The run's ledger and the sweep's one budget, shared by member processes."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
from pathlib import Path

from aivp_batch.budget import Ledger, SweepBudget


def _member(path: str, name: str, jobs: int, budget: float, out: multiprocessing.Queue) -> None:
    sweep = SweepBudget(Path(path), name)
    granted = 0
    for i in range(jobs):
        if sweep.reserve(f"shot-{i:02d}", 0.25, budget):
            granted += 1
            sweep.settle(f"shot-{i:02d}", 0.25)
    out.put(granted)


def test_members_in_parallel_processes_never_pass_the_sweeps_budget(tmp_path: Path) -> None:
    path = SweepBudget.create(tmp_path)
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_member, args=(str(path), f"m{n}", 40, 10.0, out)) for n in range(4)]
    for p in procs:
        p.start()
    granted = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert sum(granted) == 40  # $10 at $0.25 a job, whichever process asked first
    state = SweepBudget(path, "reader").read()
    assert state.spent_usd == 10.0 and state.reserved == {}
    assert len([line for line in path.read_text().split("\n") if line]) == 80  # 40 holds, 40 settles


def test_a_line_torn_by_a_killed_member_is_skipped_and_the_log_goes_on(tmp_path: Path) -> None:
    path = SweepBudget.create(tmp_path)
    a = SweepBudget(path, "a")
    assert a.reserve("shot-01", 3.0, 10.0)
    with path.open("ab") as fh:  # member b was killed halfway through appending its reservation
        fh.write(b'\n{"hold": "b/shot-01", "us')
    b = SweepBudget(path, "b")
    assert b.reserve("shot-02", 6.0, 10.0) and not b.reserve("shot-03", 2.0, 10.0)
    a.settle("shot-01", 2.5)
    state = SweepBudget(path, "reader").read()
    assert state.reserved == {"b/shot-02": 6.0} and state.spent_usd == 2.5


def test_a_released_reservation_goes_back_to_the_sweep(tmp_path: Path) -> None:
    path = SweepBudget.create(tmp_path)
    a, b = SweepBudget(path, "a"), SweepBudget(path, "b")
    assert a.reserve("shot-01", 3.0, 4.0)
    assert not b.reserve("shot-01", 2.0, 4.0)  # a's reservation counts for the whole sweep
    a.release("shot-01")
    assert b.reserve("shot-01", 2.0, 4.0)
    b.settle("shot-01", 1.5)  # billed less than reserved
    assert a.reserve("shot-02", 2.5, 4.0) and not a.reserve("shot-03", 0.5, 4.0)


def test_a_member_ledger_refuses_what_the_sweep_cannot_hold(tmp_path: Path) -> None:
    path = SweepBudget.create(tmp_path)
    SweepBudget(path, "other").reserve("shot-01", 4.0, 5.0)
    ledger = Ledger(tmp_path / "costs.jsonl", 5.0, "run1", SweepBudget(path, "me"))

    async def main() -> tuple[bool, bool]:
        return await ledger.reserve("shot-01", "id1", 2.0), await ledger.reserve("shot-02", "id2", 1.0)

    assert asyncio.run(main()) == (False, True)  # alone it would fit $5; the sweep holds $4 already
    ledger.close()
    events = [json.loads(line)["event"] for line in (tmp_path / "costs.jsonl").read_text().splitlines()]
    assert events == ["refused", "reserve"]
