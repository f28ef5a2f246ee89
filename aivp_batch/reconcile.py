"""A submit whose answer was lost: was it accepted, and as which request?

fal has no idempotency key, so a submit that timed out or was reset after sending may or may not
have created (and so billed) a request. Resubmitting blindly may pay twice; never resubmitting
leaves the shot stuck. The request history settles it: the journal holds the exact body and the
time of the POST, and a history row whose `json_input` equals that body and whose `sent_at` falls
in the submit window is that request.

- exactly one row → adopt its request id and re-attach;
- several rows → ambiguous: stays `unknown`, listing the ids;
- no row, and the submit carried a start timeout that has passed (plus a margin for the history's
  listing delay) → fal dropped it unbilled, so resubmitting is safe;
- no row otherwise → stays `unknown`; the next run looks again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from .providers.base import HistoryRow


@dataclass(frozen=True)
class ReconcilePolicy:
    """How hard one run looks for a lost submit (policy as data; `provider.reconcile.*`)."""

    wait_s: float = 60.0
    margin_s: float = 300.0
    skew_s: float = 120.0
    base_s: float = 0.5
    max_s: float = 15.0

    def delay(self, attempt: int) -> float:
        return min(self.base_s * 2 ** (attempt - 1), self.max_s)


class Verdict(Enum):
    FOUND = "found"  # exactly one matching request: adopt it
    AMBIGUOUS = "ambiguous"  # several: a person decides
    NEVER_ACCEPTED = "never_accepted"  # its start deadline passed with no trace: resubmit
    NOT_YET = "not_yet"  # no trace yet, nothing proven


@dataclass(frozen=True)
class LostSubmit:
    """What the journal knows of the submit: endpoint, exact body, when it was sent."""

    endpoint: str
    body: Any
    sent_from: float  # epoch s, just before the POST
    sent_until: float  # epoch s, when the answer was lost
    start_timeout: float | None  # the X-Fal-Request-Timeout it was sent with

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> LostSubmit:
        """The lost submit of an `unknown` journal record (transitions.JobEntry.sending, answer_lost)."""
        sent = record.get("sent_at")
        if not isinstance(sent, int | float):  # journalled by an older version: second precision
            sent = _epoch(record.get("submitting_since")) or time.time()
        lost = record.get("answer_lost_at")
        return cls(
            endpoint=str(record.get("endpoint")),
            body=record.get("payload"),
            sent_from=float(sent),
            sent_until=float(lost) if isinstance(lost, int | float) else float(sent) + 120.0,
            start_timeout=record.get("start_timeout"),
        )

    def deadline(self, policy: ReconcilePolicy) -> float | None:
        """After this, a request that never appeared was surely dropped unbilled."""
        if self.start_timeout is None:
            return None
        return self.sent_until + self.start_timeout + policy.margin_s

    def matches(self, rows: Iterable[HistoryRow], policy: ReconcilePolicy) -> list[HistoryRow]:
        want = canonical(self.body)
        low, high = self.sent_from - policy.skew_s, self.sent_until + policy.skew_s
        found = {
            row.request_id: row
            for row in rows
            if row.endpoint.strip("/") == self.endpoint.strip("/")
            and low <= row.sent_at <= high
            and row.json_input is not None
            and canonical(row.json_input) == want
        }
        return list(found.values())

    def judge(self, rows: Iterable[HistoryRow], policy: ReconcilePolicy, now: float) -> Verdict:
        found = self.matches(rows, policy)
        if len(found) == 1:
            return Verdict.FOUND
        if found:
            return Verdict.AMBIGUOUS
        deadline = self.deadline(policy)
        return Verdict.NEVER_ACCEPTED if deadline is not None and now >= deadline else Verdict.NOT_YET


def canonical(value: Any) -> str:
    """Deep equality with exact types: key order is ignored, but 5 ≠ 5.0 ≠ "5" and true ≠ 1."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _epoch(iso: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(iso).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
