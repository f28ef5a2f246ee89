import io

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
