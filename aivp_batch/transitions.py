"""One job's entry in the journal, and the transitions between its states (records.JobState).

The journal keys a record by job identity (records.Journal); this is the only code that writes
one. Each transition writes the whole record durably (fsync, rename) before the step it guards and
returns it as written, so the caller goes on from exactly what a killed run would find:

    (none) or failed --sending--> unknown --submitted--> submitted --done--> done
    unknown --answer_lost--> unknown: the submit's answer was lost; its request is looked up in
        the provider's history (reconcile.py): found --submitted(reconciled)--> submitted;
        several --ambiguous--> unknown; proven never accepted --> sent again (sending)
    unknown --failed--> failed: the submit was refused, or never reached the provider
    submitted --failed--> failed: the generation failed
    submitted --download_failed--> submitted: the result is paid for; the next run fetches it again
    submitted --rejected--> failed: the clip came back, paid for, and a clip check rejected it
    done --clip_restored / parts_restored--> done: the store's copies put back, nothing bought

A job asked for again (`rerender=`) whose `done` record this run found (`paid`) keeps that record
when the new render fails: the clip it was to replace is paid for and still delivered, so the
next run must not buy it again.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from .providers.base import Outcome, Submission
from .records import DONE, FAILED, SUBMITTED, UNKNOWN, Journal, now_iso

_STAMP = ("identity", "updated")  # what Journal.put adds to every record it writes


class JobEntry:
    """The journal record of one job identity: read it, then move it from state to state."""

    def __init__(self, journal: Journal, identity: str, *, group: bool = False) -> None:
        self.journal, self.identity = journal, identity
        self.group = group  # a multi-shot group: its done record lists its clip's parts
        self.paid: dict[str, Any] | None = None  # the done record a rerender may fail to replace

    def read(self) -> dict[str, Any]:
        """The record as it is in the journal now ({} when the job was never sent)."""
        return self.journal.get(self.identity) or {}

    def begin(self) -> dict[str, Any]:
        """The record as this run finds it; a `done` one is what a failed rerender falls back to."""
        record = self.read()
        if record.get("status") == DONE:
            self.paid = record
        return record

    # -- submitting ----------------------------------------------------------------------------
    def sending(self, base: Mapping[str, Any], *, start_timeout: float | None) -> dict[str, Any]:
        """unknown, before the POST: the exact body and the time, which find the request again in
        the provider's history if the answer is lost."""
        return self._put(
            {
                **base,
                "status": UNKNOWN,
                "submitting_since": now_iso(),
                "sent_at": time.time(),
                "start_timeout": start_timeout,
            }
        )

    def answer_lost(self, sending: Mapping[str, Any], error: str) -> dict[str, Any]:
        """Still unknown: the submit may have reached the provider, and its answer never came."""
        fields = {k: v for k, v in sending.items() if k not in _STAMP}
        return self._put({**fields, "answer_lost_at": time.time(), "error": error})

    def submitted(
        self, record: Mapping[str, Any], submission: Submission, *, reconciled: str | None = None
    ) -> dict[str, Any]:
        """submitted: accepted as `submission` (`reconciled`: found how, after its answer was lost).
        From here on the request is re-attached to, never sent again."""
        return self._put(
            {
                **record,
                "status": SUBMITTED,
                "submission": submission.to_dict(),
                "request_id": submission.request_id,
                "submitted_at": now_iso(),
                **({"reconciled": reconciled} if reconciled else {}),
            }
        )

    def ambiguous(self, record: Mapping[str, Any], request_ids: Iterable[str]) -> dict[str, Any]:
        """Still unknown: several requests in the history match the lost submit; a person decides."""
        return self._put({**record, "candidates": sorted(request_ids)})

    def failed(self, record: Mapping[str, Any], error: str) -> dict[str, Any]:
        """failed, final: the next run submits it again. A failed rerender keeps the paid record."""
        if self.paid is not None:
            return self._put({**self.paid, "rerender_error": error})
        return self._put({**record, "status": FAILED, "error": error})

    # -- the result ----------------------------------------------------------------------------
    def download_failed(self, record: Mapping[str, Any], outcome: Outcome) -> dict[str, Any]:
        """Still submitted: the render is done and paid for, its clip not fetched; the provider's
        output is kept so the next run fetches it again instead of buying it again."""
        return self._put({**record, "output": outcome.output})

    def done(
        self,
        record: Mapping[str, Any],
        outcome: Outcome,
        *,
        request_id: str,
        clip: Mapping[str, Any],
        cost: Mapping[str, Any],
        parts: list[dict[str, Any] | None] | None = None,
    ) -> dict[str, Any]:
        """done: the clip is in the store and paid for (`cost`: what it cost and how that is known).
        A group's record lists its parts (None: its clip could not be cut; paid for all the same)."""
        return self._put(
            {
                **record,
                "status": DONE,
                "output": outcome.output,
                "video_url": outcome.video_url,
                "seed_returned": outcome.seed,
                "clip": clip,
                **({"parts": parts} if self.group else {}),
                **cost,
                "completed_at": now_iso(),
                "request_id": request_id,
            }
        )

    def rejected(
        self,
        record: Mapping[str, Any],
        outcome: Outcome,
        *,
        request_id: str,
        reason: str,
        clip: Mapping[str, Any],
        cost: Mapping[str, Any],
    ) -> dict[str, Any]:
        """failed: the clip came back and is paid for, but a clip check rejected it (`clip`: the
        rejected file, kept aside in the store). The next run renders it again; a rerender keeps the
        paid record it was to replace."""
        if self.paid is not None:
            return self._put({**self.paid, "rerender_error": reason})
        return self._put(
            {
                **record,
                "status": FAILED,
                "error": reason,
                "output": outcome.output,
                "video_url": outcome.video_url,
                "seed_returned": outcome.seed,
                "rejected_clip": clip,
                **cost,
                "rejected_at": now_iso(),
                "request_id": request_id,
            }
        )

    # -- a done job's copies in the store ------------------------------------------------------
    def clip_restored(self, record: Mapping[str, Any], clip: Mapping[str, Any]) -> dict[str, Any]:
        """Still done: the paid clip fetched again from its result URL into the store."""
        return self._put({**record, "clip": clip})

    async def parts_restored(
        self, record: Mapping[str, Any], parts: list[dict[str, Any] | None]
    ) -> dict[str, Any]:
        """Still done: a group's lost parts put back in the store (copied back, or cut again). From a
        worker thread (its fsync waits there); durable before the parts are delivered."""
        return await self.journal.aput(self.identity, {**record, "parts": parts})

    def _put(self, record: Mapping[str, Any]) -> dict[str, Any]:
        return self.journal.put(self.identity, record)
