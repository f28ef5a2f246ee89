"""The run's budget and the cost ledger (`costs.jsonl`).

Before each submit the job's estimate is reserved under a lock, so concurrent jobs can never
together pass the budget. A reservation is settled with the billed cost when the provider
reports one (else the estimate), or released when the provider did not bill the failure.

A sweep member also books every reservation in the sweep's `SweepBudget` (`<sweep dir>/budget.jsonl`,
appended under an flock), so members running in parallel processes hold one budget between them.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any, TextIO

from filelock import UnixFileLock

from .files import appended_records, atomic_write_text, ensure_dir
from .records import now_iso

SWEEP_BUDGET = "budget.jsonl"  # in the sweep dir, beside the member folders


class SweepBudget:
    """What a whole sweep has spent and holds in reservations, shared by its members' processes.

    The state is a log of the members' events, one JSON line each, appended under an flock: a
    reservation `{"hold": "<member>/<key>", "usd": …}`, its settling `{"settle": …, "usd": …}` or its
    release `{"release": …}`. Each process folds the log as it goes: under the lock it reads only
    what the others appended since it last looked, then appends its own line. Nothing is rewritten
    or renamed (a rename per event allocated an inode and freed one, twice a clip). A member killed
    mid-write leaves a torn line, which no one can parse and everyone skips (each line starts on a
    new one); a member that dies holding a reservation leaves it booked: the sweep errs towards
    spending less, never more.
    """

    def __init__(self, path: Path, member: str) -> None:
        self.path = path
        self.member = member
        self._lock = UnixFileLock(path.with_name(path.name + ".lock"), thread_local=False)
        self._fd: int | None = None
        self._read_to = 0  # how much of the log is folded into the two below
        self.spent_usd = 0.0
        self.reserved: dict[str, float] = {}

    @classmethod
    def create(cls, sweep_dir: Path) -> Path:
        """A fresh budget log for a sweep about to launch its members."""
        path = sweep_dir / SWEEP_BUDGET
        atomic_write_text(path, "")
        return path

    def reserve(self, key: str, estimate_usd: float, budget_usd: float | None) -> bool:
        with self._lock:
            self._catch_up()
            committed = self.spent_usd + sum(self.reserved.values())
            if budget_usd is not None and committed + estimate_usd > budget_usd + 1e-9:
                return False
            self._append({"hold": f"{self.member}/{key}", "usd": estimate_usd})
            return True

    def settle(self, key: str, cost_usd: float) -> None:
        with self._lock:
            self._catch_up()
            self._append({"settle": f"{self.member}/{key}", "usd": cost_usd})

    def release(self, key: str) -> None:
        with self._lock:
            self._catch_up()
            self._append({"release": f"{self.member}/{key}"})

    def read(self) -> SweepBudget:
        """Fold in what every member has appended (e.g. to report the sweep's state)."""
        with self._lock:
            self._catch_up()
        return self

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _file(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        return self._fd

    def _catch_up(self) -> None:
        fd = self._file()
        size = os.fstat(fd).st_size
        data = os.pread(fd, size - self._read_to, self._read_to) if size > self._read_to else b""
        self._read_to += len(data)
        for event in appended_records(data):  # a line torn by a killed member is skipped
            try:
                self._fold(event)
            except (KeyError, TypeError, ValueError):  # not an event of ours: nothing to fold
                continue

    def _append(self, event: dict[str, Any]) -> None:
        line = ("\n" + json.dumps(event)).encode()
        os.write(self._file(), line)  # under the lock: nothing was appended since the catch-up
        self._read_to += len(line)
        self._fold(event)

    def _fold(self, event: dict[str, Any]) -> None:
        if "hold" in event:
            self.reserved[event["hold"]] = float(event["usd"])
        elif "settle" in event:
            self.reserved.pop(event["settle"], None)
            self.spent_usd = round(self.spent_usd + float(event["usd"]), 6)
        elif "release" in event:
            self.reserved.pop(event["release"], None)


class Ledger:
    def __init__(
        self, path: Path, budget_usd: float | None, run_id: str, sweep: SweepBudget | None = None
    ) -> None:
        self.path = path
        self.sweep = sweep  # a sweep member: the budget holds for the whole sweep
        self.budget_usd = budget_usd
        self.run_id = run_id
        self._lock = asyncio.Lock()
        self._reserved: dict[str, float] = {}
        self._spent = 0.0
        self._file: TextIO | None = None

    @property
    def committed_usd(self) -> float:
        return round(self._spent + sum(self._reserved.values()), 4)

    def holds(self, key: str) -> bool:
        """Does this run hold a reservation for `key`?"""
        return key in self._reserved

    async def reserve(self, key: str, identity: str, estimate_usd: float) -> bool:
        """Reserve `estimate_usd` for a job; False (and nothing reserved) if it would pass the budget."""
        async with self._lock:
            over = self.budget_usd is not None and self.committed_usd + estimate_usd > self.budget_usd + 1e-9
            if over or (self.sweep and not self.sweep.reserve(key, estimate_usd, self.budget_usd)):
                self._append("refused", key, identity, estimate_usd=estimate_usd)
                return False
            self._reserved[key] = estimate_usd
            self._append("reserve", key, identity, estimate_usd=estimate_usd)
            return True

    async def settle(self, key: str, identity: str, cost_usd: float, source: str) -> None:
        async with self._lock:
            estimate = self._reserved.pop(key, 0.0)
            self._spent += cost_usd
            if self.sweep:
                self.sweep.settle(key, cost_usd)
            self._append(
                "settle", key, identity, estimate_usd=estimate, cost_usd=cost_usd, cost_source=source
            )

    async def release(self, key: str, identity: str, reason: str) -> None:
        """The provider billed nothing (e.g. a failed generation): give the reservation back."""
        async with self._lock:
            estimate = self._reserved.pop(key, 0.0)
            if self.sweep:
                self.sweep.release(key)
            self._append("release", key, identity, estimate_usd=estimate, cost_usd=0.0, reason=reason)

    def close(self) -> None:
        if self.sweep is not None:
            self.sweep.close()
        if self._file is not None:
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None

    def _append(self, event: str, key: str, identity: str, **fields: Any) -> None:
        line = json.dumps(
            {
                "ts": now_iso(),
                "run": self.run_id,
                "event": event,
                "shot": key,
                "identity": identity,
                **fields,
            },
            sort_keys=True,
            ensure_ascii=False,
        )
        if self._file is None:  # one handle for the run: an open per event costs more than the write
            ensure_dir(self.path.parent)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        # Flushed, so a killed run's lines are all there; fsynced once, when the run ends: an fsync
        # per event stalled the event loop twice a clip, and a paid clip's cost is durable in the
        # journal's done record already (written before its settle).
        self._file.write(line + "\n")
        self._file.flush()
