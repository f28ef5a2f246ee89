"""The run's budget and the cost ledger (`costs.jsonl`).

Before each submit the job's estimate is reserved under a lock, so concurrent jobs can never
together pass the budget. A reservation is settled with the billed cost when the provider
reports one (else the estimate), or released when the provider did not bill the failure.

A sweep member also books every reservation in the sweep's `SweepBudget` (`<sweep dir>/budget.json`,
under an flock), so members running in parallel processes hold one budget between them.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any, TextIO

from filelock import UnixFileLock

from .files import atomic_write_json, ensure_dir
from .records import now_iso, read_json

SWEEP_BUDGET = "budget.json"  # in the sweep dir, beside the member folders


class SweepBudget:
    """What a whole sweep has spent and holds in reservations, shared by its members' processes.

    The state is one small JSON file rewritten under an flock for each reserve / settle / release,
    so its size is the number of reservations in flight, not the number of jobs. A member that dies
    holding a reservation leaves it booked: the sweep errs towards spending less, never more.
    """

    def __init__(self, path: Path, member: str) -> None:
        self.path = path
        self.member = member
        self._lock = UnixFileLock(path.with_name(path.name + ".lock"), thread_local=False)

    @classmethod
    def create(cls, sweep_dir: Path) -> Path:
        """A fresh budget file for a sweep about to launch its members."""
        path = sweep_dir / SWEEP_BUDGET
        atomic_write_json(path, {"spent_usd": 0.0, "reserved": {}})
        return path

    def reserve(self, key: str, estimate_usd: float, budget_usd: float | None) -> bool:
        with self._lock:
            state = self._read()
            committed = state["spent_usd"] + sum(state["reserved"].values())
            if budget_usd is not None and committed + estimate_usd > budget_usd + 1e-9:
                return False
            state["reserved"][f"{self.member}/{key}"] = estimate_usd
            self._write(state)
            return True

    def settle(self, key: str, cost_usd: float) -> None:
        with self._lock:
            state = self._read()
            state["reserved"].pop(f"{self.member}/{key}", None)
            state["spent_usd"] = round(state["spent_usd"] + cost_usd, 6)
            self._write(state)

    def release(self, key: str) -> None:
        with self._lock:
            state = self._read()
            state["reserved"].pop(f"{self.member}/{key}", None)
            self._write(state)

    def _read(self) -> dict[str, Any]:
        state = read_json(self.path) or {}
        return {
            "spent_usd": float(state.get("spent_usd") or 0.0),
            "reserved": dict(state.get("reserved") or {}),
        }

    def _write(self, state: dict[str, Any]) -> None:
        # Renamed into place (a killed member leaves the old state or the new, never half), not
        # fsynced: the file only coordinates live processes and a sweep starts a fresh one, so an
        # fsync per reservation would only stall every member's event loop (two per clip).
        atomic_write_json(self.path, state, pretty=False, durable=False)


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
