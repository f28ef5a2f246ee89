import io

import pytest
from rich.console import Console
from rich.table import Table

import aivp_batch.progress as progress_module
from aivp_batch.progress import Progress


def test_plain_lines_show_states_queue_logs_and_spend() -> None:
    out = io.StringIO()
    progress = Progress(["shot-01", "shot-02"], stream=out, live=False)
    with progress:
        progress("shot-01", "queued", {"request_id": "req-1"})
        progress("shot-01", "progress", {"state": "IN_QUEUE", "queue_position": 3, "logs": []})
        progress("shot-01", "progress", {"state": "IN_QUEUE", "queue_position": 3, "logs": []})  # no change
        progress(
            "shot-01", "progress", {"state": "IN_PROGRESS", "queue_position": None, "logs": ["step 4/30"]}
        )
        progress("shot-01", "done", {"request_id": "req-1", "cost_usd": 0.26, "status": "done"})
        progress(
            "shot-02", "done", {"request_id": "req-0", "cost_usd": 0.5, "status": "done", "reused": True}
        )
        progress("shot-02", "failed", {"error": "fal-ai/x: 422 bad prompt"})
    lines = out.getvalue().splitlines()
    assert sum("queue position 3" in line for line in lines) == 1
    assert any("log" in line and "step 4/30" in line for line in lines)
    assert any("shot-01" in line and "$0.26" in line and "spent so far $0.26" in line for line in lines)
    assert any("reused (already rendered)" in line and "spent so far $0.26" in line for line in lines)
    assert lines[-1].split("] ", 1)[1].split()[:3] == ["shot-02", "failed", "error:"]
    assert progress.spent == 0.26


def test_live_table_renders() -> None:
    out = io.StringIO()
    progress = Progress(["shot-01"], stream=out, live=True)
    with progress:
        progress("shot-01", "done", {"request_id": "req-1", "cost_usd": 1.5, "status": "done"})
    assert "shot-01" in out.getvalue() and "spent so far $1.50" in out.getvalue()


# -- the live view at scale -------------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _feed(progress: Progress, keys: list[str], clock: _Clock, *, finish: int | None = None) -> None:
    """Each job: pending → queued → progress ×3 → done (every 100th fails); the first `finish` finish."""
    finish = len(keys) if finish is None else finish
    for key in keys:
        progress(key, "pending", {"status": "pending"})
    for i, key in enumerate(keys):
        clock.now += 1.0
        progress(key, "queued", {"status": "queued", "request_id": f"req-{i}"})
        progress(key, "progress", {"state": "IN_QUEUE", "queue_position": 7, "logs": [], "elapsed_s": 0.5})
        progress(key, "progress", {"state": "IN_QUEUE", "queue_position": 2, "logs": [], "elapsed_s": 1.0})
        progress(key, "progress", {"state": "IN_PROGRESS", "queue_position": None, "logs": ["step 9/30"]})
        if i >= finish:
            continue
        if i % 100 == 99:
            progress(key, "failed", {"status": "failed", "error": f"fal-ai/x: 422 bad prompt [{key}] " * 20})
        else:
            progress(key, "done", {"status": "done", "request_id": f"req-{i}", "cost_usd": 0.25})


def _lines(renderable: object, width: int = 100, height: int = 25) -> list[str]:
    out = io.StringIO()
    Console(file=out, width=width, height=height, color_system=None).print(renderable)
    return out.getvalue().splitlines()


def test_live_view_builds_nothing_per_event_and_draws_bounded_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[int] = []  # one per Table made or row added

    class CountingTable(Table):
        def __init__(self, *args: object, **kwargs: object) -> None:
            built.append(1)
            super().__init__(*args, **kwargs)

        def add_row(self, *args: object, **kwargs: object) -> None:
            built.append(1)
            super().add_row(*args, **kwargs)

    monkeypatch.setattr(progress_module, "Table", CountingTable)
    clock = _Clock()
    keys = [f"shot-{i:04d}" for i in range(3000)]
    console = Console(file=io.StringIO(), force_terminal=True, width=100, height=25)
    progress = Progress(keys, live=True, console=console, auto_refresh=False, clock=clock)
    with progress:
        renders, before = progress.renders, len(built)
        _feed(progress, keys, clock, finish=2800)  # 3,000 jobs × 6 events, 200 left in flight
        assert progress.renders == renders and len(built) == before  # no event built a renderable
        lines = _lines(progress._render())  # 200 in flight, 2,800 finished: still one screen
        assert progress.rows_drawn <= 18 and len(lines) <= 25
        drawn = len(built) - before
    assert progress.counts["done"] == 2772 and progress.counts["failed"] == 28
    assert progress.counts["in flight"] == 200 and progress.counts["pending"] == 0
    assert progress.renders == renders + 1 + 1  # the one above and the last one, on exit
    assert drawn <= 30  # the render adds ≤ 30 rows (and its handful of tables)


def test_live_view_rows_do_not_grow_with_jobs() -> None:
    heights = []
    for n in (20, 300, 3000):
        clock = _Clock()
        keys = [f"shot-{i:04d}" for i in range(n)]
        progress = Progress(
            keys, live=True, console=Console(file=io.StringIO()), auto_refresh=False, clock=clock
        )
        with progress:
            _feed(progress, keys, clock, finish=n - min(n // 2, 200))
            heights.append((len(_lines(progress._render())), progress.rows_drawn))
    assert heights[1] == heights[2] and all(lines <= 30 for lines, _ in heights)


def test_live_view_shows_totals_bar_rate_eta_spend_and_the_latest_failure() -> None:
    clock = _Clock()
    keys = [f"shot-{i:04d}" for i in range(3000)]
    progress = Progress(keys, live=True, console=Console(file=io.StringIO()), auto_refresh=False, clock=clock)
    with progress:
        _feed(progress, keys[:1600], clock, finish=1400)  # 1,400 finished, 200 in flight, 1,400 pending
        progress("shot-2999", "done", {"status": "done", "cost_usd": 0.4, "reused": True})  # costs nothing
        progress("shot-2998", "failed", {"status": "failed", "error": "fal-ai/x: 422 " + "bad prompt " * 50})
        text = "\n".join(_lines(progress._render(), width=100))
    assert "3,000 jobs: 1,387 done (1 reused) · 15 failed · 200 in flight · 1,398 pending" in text
    assert f"spent so far ${1386 * 0.25:.2f}" in text and progress.spent == 1386 * 0.25
    # 1,401 finished (not reused) in the 1,599 s since the first went: 52.6/min; 1,598 to go.
    assert "47% · 52.6 clips/min · ETA 30m 23s" in text
    assert "in flight (200): 200 running" in text and "… and 189 more in flight" in text
    rows = text.splitlines()
    failed = next(line for line in rows if line.startswith("shot-2998"))
    assert "failed" in failed and "fal-ai/x: 422 bad prompt" in failed and len(failed) <= 100
    assert failed.endswith("…")  # the error cut to the terminal's width
    assert any(line.startswith("shot-2999") and "reused" in line for line in rows)
    assert any(line.startswith("shot-1400") and "running" in line and "step 9/30" in line for line in rows)
    assert "the full state is in plan.md" in rows[-1]


def test_live_view_with_auto_refresh_survives_events_from_another_thread() -> None:
    # rich's refresh thread draws while events change the state: no "dict changed size" and a final draw
    clock = _Clock()
    keys = [f"shot-{i:04d}" for i in range(3000)]
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system=None, width=100, height=25)
    progress = Progress(keys, live=True, console=console, refresh_per_second=200, clock=clock)
    with progress:
        _feed(progress, keys, clock)
    assert "3,000 jobs: 2,970 done · 30 failed · 0 in flight · 0 pending" in out.getvalue()
    assert "ETA 0s" in out.getvalue() and progress.renders >= 3  # built, started and stopped, at least
