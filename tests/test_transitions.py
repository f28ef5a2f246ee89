"""transitions.JobEntry on a real journal: each transition writes the whole record, durably, and
returns it as written; a failed rerender keeps the paid record it was to replace."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from aivp_batch.providers.base import Outcome, Submission
from aivp_batch.records import DONE, FAILED, SUBMITTED, UNKNOWN, JobState, Journal
from aivp_batch.transitions import JobEntry

BASE = {"endpoint": "fal-ai/x", "provider": "fal", "attempts": 1, "payload": {"prompt": "a"}}
SUBMISSION = Submission(request_id="req-1", endpoint="fal-ai/x", status_url="http://q/status")
OUTCOME = Outcome(output={"video": {"url": "http://cdn/v.mp4"}}, video_url="http://cdn/v.mp4", seed=3)
COST = {"estimate_usd": 0.5, "cost_usd": 0.4, "cost_source": "billed"}


def on_disk(tmp_path: Path, identity: str = "id1") -> dict:
    return Journal(tmp_path).get(identity)


@pytest.fixture
def entry(tmp_path: Path) -> JobEntry:
    return JobEntry(Journal(tmp_path), "id1")


def test_a_submit_goes_unknown_then_submitted_then_done(entry: JobEntry, tmp_path: Path) -> None:
    assert entry.begin() == {} and entry.paid is None
    sending = entry.sending(BASE, start_timeout=30.0)
    assert on_disk(tmp_path) == sending and sending["status"] == UNKNOWN
    assert {k: sending[k] for k in BASE} == BASE and sending["start_timeout"] == 30.0
    assert isinstance(sending["sent_at"], float) and sending["identity"] == "id1"
    submitted = entry.submitted(BASE, SUBMISSION)
    assert on_disk(tmp_path) == submitted and submitted["status"] == SUBMITTED
    assert submitted["submission"] == SUBMISSION.to_dict() and submitted["request_id"] == "req-1"
    assert "reconciled" not in submitted and "sent_at" not in submitted
    done = entry.done(submitted, OUTCOME, request_id="req-1", clip={"sha256": "c"}, cost=COST)
    assert on_disk(tmp_path) == done and done["status"] == DONE and "parts" not in done
    assert (done["video_url"], done["seed_returned"], done["clip"], done["cost_usd"]) == (
        OUTCOME.video_url,
        3,
        {"sha256": "c"},
        0.4,
    )
    assert done["submission"] == SUBMISSION.to_dict()  # what it was merged onto stays
    assert isinstance(done["status"], str) and JobState(on_disk(tmp_path)["status"]) is DONE


def test_a_lost_answer_keeps_the_sent_body_and_is_adopted_when_found(entry: JobEntry, tmp_path: Path) -> None:
    sending = entry.sending(BASE, start_timeout=None)
    lost = entry.answer_lost(sending, "connection reset")
    assert lost["status"] == UNKNOWN and lost["error"] == "connection reset"
    assert lost["sent_at"] == sending["sent_at"] and lost["answer_lost_at"] >= sending["sent_at"]
    # Field for field what was sent, then the loss, then the journal's stamp.
    assert list(lost) == [*[k for k in sending if k not in ("identity", "updated")], "answer_lost_at"] + [
        "error",
        "identity",
        "updated",
    ]
    ambiguous = entry.ambiguous(lost, iter(["req-9", "req-2"]))
    assert ambiguous["candidates"] == ["req-2", "req-9"] and ambiguous["status"] == UNKNOWN
    adopted = entry.submitted(lost, SUBMISSION, reconciled="request history")
    assert adopted["status"] == SUBMITTED and adopted["reconciled"] == "request history"
    assert adopted["payload"] == BASE["payload"] and on_disk(tmp_path) == adopted


def test_a_failure_is_final_and_a_failed_rerender_keeps_the_paid_record(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    entry = JobEntry(journal, "id1")
    failed = entry.failed(BASE, "422: bad prompt")
    assert failed["status"] == FAILED and failed["error"] == "422: bad prompt"
    done = entry.done(BASE, OUTCOME, request_id="req-1", clip={"sha256": "c"}, cost=COST)

    rerender = JobEntry(journal, "id1")
    assert rerender.begin() == done and rerender.paid == done
    kept = rerender.failed({**BASE, "status": SUBMITTED}, "generation failed")
    assert (
        kept["status"] == DONE
        and kept["clip"] == done["clip"]
        and kept["rerender_error"] == "generation failed"
    )
    rejected = rerender.rejected(
        BASE, OUTCOME, request_id="req-2", reason="clip rejected by qc: dark", clip={"sha256": "r"}, cost=COST
    )
    assert rejected["status"] == DONE and rejected["clip"] == {"sha256": "c"}
    assert rejected["rerender_error"] == "clip rejected by qc: dark"


def test_a_rejected_clip_is_failed_with_what_was_paid(entry: JobEntry, tmp_path: Path) -> None:
    rejected = entry.rejected(
        BASE, OUTCOME, request_id="req-1", reason="clip rejected by qc: dark", clip={"sha256": "r"}, cost=COST
    )
    assert rejected["status"] == FAILED and rejected["error"] == "clip rejected by qc: dark"
    assert rejected["rejected_clip"] == {"sha256": "r"} and "clip" not in rejected
    assert (rejected["request_id"], rejected["cost_usd"], rejected["video_url"]) == (
        "req-1",
        0.4,
        OUTCOME.video_url,
    )
    assert on_disk(tmp_path) == rejected


def test_a_group_lists_its_parts_and_gets_them_back(tmp_path: Path) -> None:
    entry = JobEntry(Journal(tmp_path), "g1", group=True)
    uncut = entry.done(BASE, OUTCOME, request_id="req-1", clip={"sha256": "c"}, cost=COST)
    assert uncut["parts"] is None  # paid for all the same: journalled done
    parts = [{"sha256": "p1"}, {"sha256": "p2"}]
    restored = asyncio.run(entry.parts_restored(uncut, parts))
    assert restored["parts"] == parts and on_disk(tmp_path, "g1") == restored
    assert entry.clip_restored(restored, {"sha256": "c2"})["clip"] == {"sha256": "c2"}
    download = entry.download_failed({**BASE, "status": SUBMITTED}, OUTCOME)
    assert download["status"] == SUBMITTED and download["output"] == OUTCOME.output
