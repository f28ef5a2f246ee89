"""The live view of a run: a bounded rich summary on a terminal, plain lines otherwise (CI, pipes, agents).

Events (~11 a clip) only update counters, a dict of the keys in flight (in the order they went) and a
short deque of the latest finishes, O(1) each; nothing is drawn per event. On a terminal rich's `Live`
calls `_render` from its own refresh thread (4×/s), and what it draws is bounded whatever the number of
jobs: a line of totals, a progress bar with rate and ETA, at most `MAX_INFLIGHT_ROWS` in-flight rows,
the `RECENT_ROWS` latest finished or failed, and a caption pointing at plan.md for the full state.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from itertools import islice
from typing import Any, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

MAX_INFLIGHT_ROWS = 12
RECENT_ROWS = 6
# Lines drawn besides the in-flight rows: totals, bar, in-flight title and column header, "… more",
# the latest's title and rows, caption. A short terminal shows fewer in-flight rows (never under 3).
_FIXED_LINES = 7 + RECENT_ROWS
_DETAIL_CHARS = 400  # an error is cut here before rich truncates it to the terminal's width

PENDING, INFLIGHT, DONE, FAILED = "pending", "in flight", "done", "failed"
_CATEGORY = {"pending": PENDING, "done": DONE, "failed": FAILED}
_STATES = {"IN_QUEUE": "in queue", "IN_PROGRESS": "running", "COMPLETED": "completed"}


class Progress:
    """Receives runner events (`key`, `status`, info) and shows them."""

    def __init__(
        self,
        keys: list[str],
        stream: TextIO | None = None,
        live: bool | None = None,
        *,
        console: Console | None = None,
        auto_refresh: bool = True,
        refresh_per_second: float = 4,
        clock: Callable[[], float] = time.monotonic,
        plan_md: str | None = None,
        label: str = "",
    ) -> None:
        self.stream = stream or (console.file if console is not None else sys.stdout)
        self.rows: dict[str, dict[str, Any]] = {k: {"status": "pending"} for k in keys}
        self._clock = clock
        self.t0 = clock()
        self.live_enabled = self.stream.isatty() if live is None else live
        self._console = console
        self._auto_refresh = auto_refresh
        self._refresh_per_second = refresh_per_second
        self._plan_md = plan_md or "plan.md"
        self._label = f"{label}: " if label else ""  # a sweep member's name, before each plain line
        self._live: Live | None = None
        self.spent = 0.0  # this run's cost so far (reused clips cost nothing)
        # The state the view is drawn from, each event an O(1) change; guarded by _lock, as rich's
        # refresh thread reads it.
        self._lock = threading.Lock()
        self._category: dict[str, str] = dict.fromkeys(self.rows, PENDING)
        self.counts: Counter[str] = Counter({PENDING: len(self.rows)})
        self._inflight: dict[str, float] = {}  # key -> when it went in flight, oldest first
        self._phase: dict[str, str] = {}  # in-flight key -> its phase (queued, IN_QUEUE, …)
        self._phases: Counter[str] = Counter()
        self._recent: deque[tuple[str, str, float | None, str | None]] = deque(maxlen=RECENT_ROWS)
        self.reused = 0
        self._finished_new = 0  # done (not reused) or failed: the rate's clips
        self._t_first: float | None = None  # the first job in flight: the rate's start
        self.renders = 0  # how many times the view was built (by rich's refresh, never by an event)
        self.rows_drawn = 0  # job rows in the latest render

    def __enter__(self) -> Progress:
        if self.live_enabled:
            self._live = Live(
                console=self._console or Console(file=self.stream),
                get_renderable=self._render,
                auto_refresh=self._auto_refresh,
                refresh_per_second=self._refresh_per_second,
            )
            self._live.start(refresh=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()  # draws the final state once more
            self._live = None

    def __call__(self, key: str, status: str, info: Mapping[str, Any]) -> None:
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = {}
        if status == "progress":
            changed = row.get("queue_position") != info.get("queue_position") or row.get("state") != info.get(
                "state"
            )
            row.update(
                queue_position=info.get("queue_position"),
                state=info.get("state"),
                elapsed_s=info.get("elapsed_s"),
            )
            if changed and not self.live_enabled:
                self._line(key, info.get("state", ""), _position(info))
            for message in info.get("logs") or ():
                row["log"] = message
                if not self.live_enabled:
                    self._line(key, "log", str(message))
            with self._lock:
                if self._category.get(key, PENDING) == PENDING:
                    self._move(key, INFLIGHT)
                if key in self._inflight and info.get("state"):
                    self._set_phase(key, str(info["state"]))
            return
        row.update(
            status=status,
            cost=info.get("cost_usd"),
            request_id=info.get("request_id"),
            error=info.get("error"),
        )
        if status == "done" and not info.get("reused"):
            self.spent += float(info.get("cost_usd") or 0)
        with self._lock:
            category = _CATEGORY.get(status, INFLIGHT)  # submitting, queued, running, downloading, …
            before = self._category.get(key)
            self._move(key, category)
            if category == INFLIGHT:
                self._set_phase(key, status)
            elif category in (DONE, FAILED):
                if before not in (DONE, FAILED):
                    if info.get("reused"):
                        self.reused += 1
                    else:
                        self._finished_new += 1
                detail = info.get("error") if status == "failed" else info.get("request_id")
                self._recent.append((key, "reused" if info.get("reused") else status, row["cost"], detail))
        if not self.live_enabled:
            total = f"  (spent so far ${self.spent:.2f})" if status == "done" else ""
            self._line(key, status, _detail(info) + total)

    # -- the counters (under _lock) -------------------------------------------------------------
    def _move(self, key: str, category: str) -> None:
        before = self._category.get(key)
        if before == category:
            return
        if before is not None:
            self.counts[before] -= 1
        self.counts[category] += 1
        self._category[key] = category
        if before == INFLIGHT:
            del self._inflight[key]
            self._phases[self._phase.pop(key)] -= 1
        if category == INFLIGHT:
            now = self._clock()
            self._inflight[key] = now
            self._set_phase(key, "submitted")
            if self._t_first is None:
                self._t_first = now

    def _set_phase(self, key: str, phase: str) -> None:
        old = self._phase.get(key)
        if old != phase:
            if old is not None:
                self._phases[old] -= 1
            self._phase[key] = phase
            self._phases[phase] += 1

    # -- plain lines ----------------------------------------------------------------------------
    def _line(self, key: str, status: str, detail: str) -> None:
        elapsed = self._clock() - self.t0
        line = f"{self._label}[{elapsed:7.1f}s] {key:<10} {status:<11} {detail}".rstrip()
        print(line, file=self.stream, flush=True)

    # -- the live view (rich's refresh thread) --------------------------------------------------
    def _render(self) -> RenderableType:
        """The view, built only when rich refreshes; bounded to ~25 lines whatever the number of jobs."""
        console = self._live.console if self._live is not None else self._console
        height = console.size.height if console is not None else 25
        limit = max(3, min(MAX_INFLIGHT_ROWS, height - 1 - _FIXED_LINES))
        now = self._clock()
        with self._lock:  # a bounded snapshot; the drawing happens outside the lock
            counts = dict(self.counts)
            total = len(self._category)
            phases = [(p, n) for p, n in self._phases.items() if n > 0]
            inflight = [
                (
                    key,
                    self._phase[key],
                    self.rows[key].get("queue_position"),
                    now - t,
                    self.rows[key].get("log"),
                )
                for key, t in islice(self._inflight.items(), limit)
            ]
            recent = list(self._recent)
            finished_new, t_first, reused, spent = self._finished_new, self._t_first, self.reused, self.spent
        self.renders += 1
        self.rows_drawn = len(inflight) + len(recent)
        done, failed = counts.get(DONE, 0), counts.get(FAILED, 0)
        n_inflight, pending = counts.get(INFLIGHT, 0), counts.get(PENDING, 0)

        totals = Text(f"{total:,} jobs: ", style="bold")  # wraps on a narrow terminal, never cut
        totals.append(f"{done:,} done", style="green")
        if reused:
            totals.append(f" ({reused:,} reused)", style="dim green")
        totals.append(" · ")
        totals.append(f"{failed:,} failed", style="red" if failed else "")
        totals.append(f" · {n_inflight:,} in flight · {pending:,} pending")
        header = Table.grid(expand=True, padding=(0, 1))
        header.add_column(ratio=1)
        header.add_column(no_wrap=True, justify="right")
        header.add_row(totals, Text(f"spent so far ${spent:.2f}", style="bold"))

        minutes = (now - t_first) / 60 if t_first is not None else 0.0
        rate = finished_new / minutes if minutes > 0 else 0.0
        remaining = pending + n_inflight
        if not remaining:
            eta = "ETA 0s"
        elif rate > 0:
            eta = f"ETA {_duration(remaining / rate * 60)}"
        else:
            eta = "ETA —"
        elapsed = _duration(now - self.t0)
        bar = Table.grid(expand=True, padding=(0, 1))
        bar.add_column(ratio=1)
        bar.add_column(no_wrap=True)
        finished = done + failed
        bar.add_row(
            ProgressBar(total=max(total, 1), completed=finished),
            Text(f"{finished / max(total, 1):4.0%} · {rate:.1f} clips/min · {eta} · {elapsed} elapsed"),
        )

        title = f"in flight ({n_inflight:,})"
        if phases:
            title += ": " + ", ".join(
                f"{n:,} {_STATES.get(p, p)}" for p, n in sorted(phases, key=lambda x: -x[1])
            )
        flying = Table(
            title=Text(title, style="bold dim", no_wrap=True, overflow="ellipsis"),
            title_justify="left",
            expand=True,
            box=None,
            pad_edge=False,
            header_style="dim",
            show_edge=False,
        )
        flying.add_column("shot", no_wrap=True, max_width=32, overflow="ellipsis")
        flying.add_column("state", no_wrap=True)
        flying.add_column("queue", no_wrap=True, justify="right")
        flying.add_column("elapsed", no_wrap=True, justify="right")
        flying.add_column("log", no_wrap=True, overflow="ellipsis", ratio=1)
        for key, phase, position, age, log in inflight:
            flying.add_row(
                Text(key),
                Text(_STATES.get(phase, phase)),
                Text("" if position is None else str(position)),
                Text(_duration(age)),
                Text(_one_line(log), style="dim"),
            )
        more = n_inflight - len(inflight)

        latest = Table(
            title=Text("latest finished", style="bold dim"),
            title_justify="left",
            expand=True,
            box=None,
            pad_edge=False,
            show_header=False,
            show_edge=False,
        )
        latest.add_column(no_wrap=True, max_width=32, overflow="ellipsis")
        latest.add_column(no_wrap=True)
        latest.add_column(no_wrap=True, justify="right")
        latest.add_column(no_wrap=True, overflow="ellipsis", ratio=1)
        for key, status, cost, detail in reversed(recent):
            style = "red" if status == "failed" else "green"
            latest.add_row(
                Text(key),
                Text(status, style=style),
                Text("" if cost is None or status == "reused" else f"${cost:.2f}"),
                Text(_one_line(detail), style="red" if status == "failed" else "dim"),
            )

        parts: list[RenderableType] = [header, bar, flying]
        if more > 0:
            parts.append(Text(f"  … and {more:,} more in flight", style="dim", no_wrap=True))
        if recent:
            parts.append(latest)
        shown = f"{len(inflight)} of {n_inflight:,} in flight and the {len(recent)} latest finished shown"
        parts.append(Text(f"{shown}; the full state is in {self._plan_md}", style="dim italic", no_wrap=True))
        return Group(*parts)


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def _one_line(value: Any) -> str:
    return "" if value is None else " ".join(str(value)[:_DETAIL_CHARS].split())


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
