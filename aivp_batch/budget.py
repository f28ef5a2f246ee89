"""The run's budget and the cost ledger (`costs.jsonl`).

Before each submit the job's estimate is reserved under a lock, so concurrent jobs can never
together pass the budget. A reservation is settled with the billed cost when the provider
reports one (else the estimate), or released when the provider did not bill the failure.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any, TextIO

from .files import ensure_dir
from .records import now_iso


class Ledger:
    def __init__(self, path: Path, budget_usd: float | None, run_id: str) -> None:
        self.path = path
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
            if self.budget_usd is not None and self.committed_usd + estimate_usd > self.budget_usd + 1e-9:
                self._append("refused", key, identity, estimate_usd=estimate_usd)
                return False
            self._reserved[key] = estimate_usd
            self._append("reserve", key, identity, estimate_usd=estimate_usd)
            return True

    async def settle(self, key: str, identity: str, cost_usd: float, source: str) -> None:
        async with self._lock:
            estimate = self._reserved.pop(key, 0.0)
            self._spent += cost_usd
            self._append(
                "settle", key, identity, estimate_usd=estimate, cost_usd=cost_usd, cost_source=source
            )

    async def release(self, key: str, identity: str, reason: str) -> None:
        """The provider billed nothing (e.g. a failed generation): give the reservation back."""
        async with self._lock:
            estimate = self._reserved.pop(key, 0.0)
            self._append("release", key, identity, estimate_usd=estimate, cost_usd=0.0, reason=reason)

    def close(self) -> None:
        if self._file is not None:
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
        self._file.write(line + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
