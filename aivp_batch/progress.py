"""The live view of a run: a rich table on a terminal, plain lines otherwise (CI, pipes, agents)."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table


class Progress:
    """Receives runner events (`key`, `status`, info) and shows them."""

    def __init__(self, keys: list[str], stream: TextIO | None = None, live: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.rows: dict[str, dict[str, Any]] = {k: {"status": "pending"} for k in keys}
        self.t0 = time.monotonic()
        self.live_enabled = self.stream.isatty() if live is None else live
        self._live: Live | None = None
        self.spent = 0.0  # this run's cost so far (reused clips cost nothing)

    def __enter__(self) -> Progress:
        if self.live_enabled:
            self._live = Live(self._table(), console=Console(file=self.stream), refresh_per_second=4)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self._table())
            self._live.__exit__(None, None, None)

    def __call__(self, key: str, status: str, info: Mapping[str, Any]) -> None:
        row = self.rows.setdefault(key, {})
        if status == "progress":
            changed = row.get("queue_position") != info.get("queue_position") or row.get("state") != info.get(
                "state"
            )
            row.update({k: info.get(k) for k in ("queue_position", "state", "elapsed_s")})
            if changed and not self.live_enabled:
                self._line(key, info.get("state", ""), _position(info))
            for message in info.get("logs") or ():
                row["log"] = message
                if not self.live_enabled:
                    self._line(key, "log", str(message))
        else:
            row.update(
                status=status,
                cost=info.get("cost_usd"),
                request_id=info.get("request_id"),
                error=info.get("error"),
            )
            if status == "done" and not info.get("reused"):
                self.spent += float(info.get("cost_usd") or 0)
            if not self.live_enabled:
                total = f"  (spent so far ${self.spent:.2f})" if status == "done" else ""
                self._line(key, status, _detail(info) + total)
        if self._live is not None:
            self._live.update(self._table())

    def _line(self, key: str, status: str, detail: str) -> None:
        elapsed = time.monotonic() - self.t0
        print(f"[{elapsed:7.1f}s] {key:<10} {status:<11} {detail}".rstrip(), file=self.stream, flush=True)

    def _table(self) -> Table:
        table = Table(title=f"aivp-batch — {time.monotonic() - self.t0:.0f}s")
        for col in ("shot", "status", "queue", "elapsed", "cost", "request / error"):
            table.add_column(col)
        for key, row in self.rows.items():
            cost = row.get("cost")
            table.add_row(
                key,
                str(row.get("state") if row.get("status") == "queued" else row.get("status")),
                "" if row.get("queue_position") is None else str(row["queue_position"]),
                f"{row.get('elapsed_s') or ''}",
                "" if cost is None else f"${cost:.2f}",
                str(row.get("error") or row.get("request_id") or ""),
            )
        table.caption = f"spent so far ${self.spent:.2f}"
        return table


def _position(info: Mapping[str, Any]) -> str:
    pos = info.get("queue_position")
    return "" if pos is None else f"queue position {pos}"


def _detail(info: Mapping[str, Any]) -> str:
    if info.get("error"):
        return f"error: {info['error']}"
    parts = []
    if info.get("request_id"):
        parts.append(f"request {info['request_id']}")
    if info.get("reused"):
        parts.append("reused (already rendered)")
    if info.get("cost_usd") is not None and info.get("status") == "done":
        parts.append(f"${info['cost_usd']:.2f}")
    return "  ".join(parts)
