"""Matching a lost submit against request-history rows: one, several, none, proven never accepted."""

from __future__ import annotations

from aivp_batch.providers.base import HistoryRow
from aivp_batch.reconcile import LostSubmit, ReconcilePolicy, Verdict

BODY = {"prompt": "a harbour at dawn", "duration": "5", "seed": 7, "generate_audio": True}
POLICY = ReconcilePolicy(margin_s=10, skew_s=5)
LOST = LostSubmit("fal-ai/x/t2v", BODY, sent_from=1000.0, sent_until=1002.0, start_timeout=60)


def row(
    request_id: str, body: object = BODY, sent_at: float = 1001.0, endpoint: str = "fal-ai/x/t2v"
) -> HistoryRow:
    return HistoryRow(request_id, endpoint, sent_at, json_input=body)


def test_exactly_one_match_is_found() -> None:
    reordered = dict(reversed(list(BODY.items())))  # key order is not part of the body
    rows = [row("a", reordered), row("b", {**BODY, "seed": 8})]
    assert LOST.judge(rows, POLICY, now=1003) is Verdict.FOUND
    assert [r.request_id for r in LOST.matches(rows, POLICY)] == ["a"]


def test_types_must_match_exactly() -> None:
    for other in ({**BODY, "duration": 5}, {**BODY, "seed": 7.0}, {**BODY, "generate_audio": 1}):
        assert LOST.matches([row("a", other)], POLICY) == []


def test_rows_outside_the_window_or_on_another_endpoint_do_not_count() -> None:
    rows = [row("early", sent_at=994.0), row("late", sent_at=1008.0), row("other", endpoint="fal-ai/y")]
    assert LOST.matches(rows, POLICY) == []
    assert [r.request_id for r in LOST.matches([row("edge", sent_at=996.0)], POLICY)] == ["edge"]  # skew


def test_several_matches_are_ambiguous_and_duplicates_of_one_id_are_one() -> None:
    assert LOST.judge([row("a"), row("a")], POLICY, now=1003) is Verdict.FOUND
    assert LOST.judge([row("a"), row("b")], POLICY, now=1003) is Verdict.AMBIGUOUS


def test_nothing_found_is_only_proof_after_the_start_timeout_and_margin() -> None:
    assert LOST.deadline(POLICY) == 1002.0 + 60 + 10
    assert LOST.judge([], POLICY, now=1071.0) is Verdict.NOT_YET
    assert LOST.judge([], POLICY, now=1072.0) is Verdict.NEVER_ACCEPTED
    no_timeout = LostSubmit("fal-ai/x/t2v", BODY, 1000.0, 1002.0, start_timeout=None)
    assert no_timeout.deadline(POLICY) is None
    assert no_timeout.judge([], POLICY, now=10**9) is Verdict.NOT_YET


def test_a_row_without_its_stored_input_never_matches() -> None:
    assert LOST.matches([row("a", None)], POLICY) == []
