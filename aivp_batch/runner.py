"""Run validated jobs on a provider: reuse finished work, reserve budget, upload, submit once,
journal the request id, wait, download, verify, record.

The runner knows jobs, the journal, logs and the ledger; the provider knows only its protocol.
Journal states per job identity (see records.py): a `done` job is reused (zero requests), a
`submitted` one is re-attached to its request id, a `failed` one is submitted again, and an
`unknown` one (a submit whose answer was lost) is never resubmitted without `resubmit_unknown`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .billing import billed_cost, drift_warning, expected_units
from .budget import Ledger
from .errors import AivpError, MediaError, ProviderError, RequestFailed, SubmitNotAccepted, TransientError
from .files import ensure_dir
from .media import sha256_file, verify_clip
from .planning import Job, replace_strings
from .providers.base import HistoryRow, Outcome, Provider, StatusUpdate, Submission
from .reconcile import LostSubmit, ReconcilePolicy, Verdict
from .records import DONE, FAILED, SUBMITTED, UNKNOWN, Journal, PlanBoard, UploadCache, now_iso, relpath
from .schemas import EndpointSchema
from .split import split_clip
from .store_lock import JobLocks
from .versions import versions

DURATION_TOLERANCE_S = 0.6
_FICLONE = 0x40049409  # linux/fs.h: share the source's extents (btrfs, XFS, bcachefs, APFS-like CoW)


@dataclass
class RunContext:
    output_dir: Path  # <project>/video: clips/, log/, plan.md, costs.jsonl
    project_dir: Path | None
    run_dir: Path
    run_id: str
    tier: str
    journal: Journal
    ledger: Ledger
    board: PlanBoard
    max_in_flight: int = 2
    # What each endpoint's payloads were validated against (its sha256 and source are logged).
    schemas: Mapping[str, EndpointSchema] = field(default_factory=dict)
    resubmit_unknown: bool = False
    rerender: frozenset[str] = frozenset()  # shot ids to render (and pay for) again
    reconcile: ReconcilePolicy = field(default_factory=ReconcilePolicy)
    price_drift: float = 0.05  # warn once per endpoint when fal's price and ours differ by more
    uploads: UploadCache | None = None
    job_locks: JobLocks | None = None  # one render per identity across processes (sweep members)
    on_event: Callable[[str, str, Mapping[str, Any]], None] | None = None
    stop_submitting: asyncio.Event = field(default_factory=asyncio.Event)
    cancel_inflight: asyncio.Event = field(default_factory=asyncio.Event)
    warn: Callable[[str], None] = field(default=lambda line: print(f"warning: {line}", file=sys.stderr))
    drift_warned: set[str] = field(default_factory=set)

    @property
    def clips_dir(self) -> Path:
        return self.output_dir / "clips"

    def delivered(self, shot_id: str) -> Path:
        return self.clips_dir / f"{shot_id}.mp4"


@dataclass
class JobResult:
    key: str
    status: str  # done | failed | pending
    error: str | None = None
    cost_usd: float = 0.0
    reused: bool = False
    request_id: str | None = None
    kept: bool = False  # the delivered clip was changed on disk and left as it is
    estimate_usd: float = 0.0
    cost_source: str = "estimate"  # billed: the provider's units × its unit price


class _JobRun:
    """The life of one job in one run; owns its shot log."""

    def __init__(self, job: Job, ctx: RunContext, provider: Provider) -> None:
        self.job, self.ctx, self.provider = job, ctx, provider
        self.log: dict[str, Any] = initial_log(job, ctx)
        self._paid: Mapping[str, Any] | None = None  # the done record a rerender may fail to replace
        self.t0 = time.monotonic()
        self._slot: asyncio.Semaphore | None = None
        # A group's deliveries someone edited: kept as they are, and their logs too.
        self._kept: dict[str, Path] = {}

    @property
    def is_group(self) -> bool:
        """A multi-shot group: one request, one clip, cut into one part per shot."""
        return bool(self.job.shot_durations_s)

    # -- records -------------------------------------------------------------------------------
    def record(self, status: str, **fields: Any) -> None:
        self.log.update(fields, status=status, timestamp=now_iso())
        if self.is_group:
            if self.job.key not in self._kept:
                self.ctx.board.update(self.job.key, group_log(self.job, self.log))
            for k, shot in enumerate(self.job.shots):
                if shot.id not in self._kept:
                    self.ctx.board.update(shot.id, part_log(self.job, self.ctx, self.log, k))
        else:
            for shot in self.job.shots:
                self.ctx.board.update(shot.id, {**self.log, "id": shot.id})
        if self.ctx.on_event:
            self.ctx.on_event(self.job.key, status, self.log)

    def status_update(self, update: StatusUpdate) -> None:
        if self.ctx.on_event:
            info = {
                "queue_position": update.queue_position,
                "state": update.state,
                "logs": list(update.logs[-1:]),
                "elapsed_s": round(time.monotonic() - self.t0, 1),
            }
            self.ctx.on_event(self.job.key, "progress", info)

    def fail(self, message: str, **fields: Any) -> JobResult:
        self.record("failed", error=message, **fields)
        return JobResult(self.job.key, "failed", error=message, request_id=self.log.get("request_id"))

    def refuse(self, message: str) -> JobResult:
        """Not sent (budget, upload, a refused or unreachable submit, an interrupt): nothing changed
        at the provider, so a shot whose clip exists keeps its log as it was; a new shot's log says
        why, at no cost."""
        if any(shot.id in self.ctx.board.delivered for shot in self.job.shots):
            if self.ctx.on_event:
                self.ctx.on_event(self.job.key, "failed", {**self.log, "error": message})
            return JobResult(self.job.key, "failed", error=message)
        return self.fail(message, cost_usd=0.0)

    # -- the job -------------------------------------------------------------------------------
    async def run(self, slots: asyncio.Semaphore, same_identity: asyncio.Lock) -> JobResult:
        # Two jobs with one identity run one after the other, so the second reuses the first; in
        # another process (a parallel sweep member), the job's lock in the store does the same.
        async with same_identity, self._held_elsewhere():
            try:
                return await self._run(slots)
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except Exception as exc:  # noqa: BLE001 - a bug in one job must not sink the others
                return self.fail(f"internal error: {type(exc).__name__}: {exc}")

    def _held_elsewhere(self) -> AbstractAsyncContextManager[None]:
        if self.ctx.job_locks is None:
            return nullcontext()

        def waiting() -> None:
            if self.ctx.on_event:
                self.ctx.on_event(self.job.key, "progress", {"state": "waiting for another run's render"})

        return self.ctx.job_locks.hold(self.job.identity, waiting)

    async def _run(self, slots: asyncio.Semaphore) -> JobResult:
        record = self.ctx.journal.get(self.job.identity) or {}
        edited = {} if self.rerender else self._edited_deliveries(record)
        if edited and not (self.is_group and record.get("status") == DONE):
            return self._keep(list(edited.values()))
        if edited:  # a finished group: the edited files stay; its other files are delivered
            self._warn_kept(list(edited.values()))
            self._kept = edited
        if record.get("status") == DONE:
            self._paid = record
        if record.get("status") == DONE and not self.rerender:
            if not await self._restore(record):
                return self.fail(
                    "its paid clip is gone (not in the store, not in video/clips, and the result URL has "
                    f"expired); not paying for it again without rerender=[{self.job.key}]"
                )
            record = self.ctx.journal.get(self.job.identity) or record
            if self.is_group:
                try:
                    record = await self._ensure_parts(record)
                except (MediaError, OSError) as exc:
                    return self._uncut(exc)
            return self._reuse(record)
        # A slot is a request in flight at the provider: it is given back as soon as the result is
        # in, so the next job is submitted while this one downloads and verifies.
        await slots.acquire()
        self._slot = slots
        try:
            if record.get("status") == SUBMITTED and record.get("submission"):
                return await self._attach(record)
            if record.get("status") == UNKNOWN and not self.ctx.resubmit_unknown:
                return await self._resolve_lost(record)
            if self.ctx.stop_submitting.is_set():
                if not any(shot.id in self.ctx.board.delivered for shot in self.job.shots):
                    self.record("pending", error="not submitted: run interrupted")
                return JobResult(self.job.key, "pending", error="interrupted")
            return await self._submit(record)
        finally:
            self._release_slot()

    def _journal_failure(self, record: Mapping[str, Any], exc: BaseException) -> None:
        """A final failure. A failed rerender leaves the clip it was to replace as the job's record:
        that clip is paid for and still delivered, so the next run must not buy it again."""
        if self._paid is not None:
            self.ctx.journal.put(self.job.identity, {**self._paid, "rerender_error": str(exc)})
        else:
            self.ctx.journal.put(self.job.identity, {**record, "status": FAILED, "error": str(exc)})

    @property
    def rerender(self) -> bool:
        """Asked for again (`rerender=`): rendered and paid for although a finished clip exists."""
        return any(shot.id in self.ctx.rerender for shot in self.job.shots)

    def _deliveries(self, record: Mapping[str, Any]) -> list[tuple[str, Path, Mapping[str, Any] | None]]:
        """(log id, delivered file, the clip the record says it is) of each file the job delivers:
        a shot's clip; or a group's clip and each of its shots' parts."""
        if not self.is_group:
            return [(shot.id, self.ctx.delivered(shot.id), record.get("clip")) for shot in self.job.shots]
        parts = _parts_of(record, len(self.job.shots))
        return [(self.job.key, self.ctx.delivered(self.job.key), record.get("clip"))] + [
            (shot.id, self.ctx.delivered(shot.id), part)
            for shot, part in zip(self.job.shots, parts, strict=True)
        ]

    def _edited_deliveries(self, record: Mapping[str, Any]) -> dict[str, Path]:
        """Delivered clips whose bytes are neither this job's stored clip (a group's part) nor the
        one last delivered for the shot: someone edited (or replaced) them, and they are theirs now."""
        edited = {}
        for log_id, path, clip in self._deliveries(record):
            if not path.is_file():
                continue
            last = self.ctx.board.delivered.get(log_id) or {}
            if _unchanged(path, last.get("delivered") or {}):
                continue
            known = {(clip or {}).get("sha256"), (last.get("clip") or {}).get("sha256")}
            if sha256_file(path) not in known - {None}:
                edited[log_id] = path
        return edited

    def _warn_kept(self, edited: list[Path]) -> None:
        for path in edited:
            shown = relpath(path, self.ctx.output_dir.parent)
            self.ctx.warn(
                f"{shown} was changed on disk; keeping it (rerender=[{self.job.key}] renders it again)"
            )

    def _keep(self, edited: list[Path]) -> JobResult:
        self._warn_kept(edited)
        # Its log stays as it was: it describes the render that was delivered, not this plan.
        return JobResult(self.job.key, "done", reused=True, kept=True)

    def _release_slot(self) -> None:
        if self._slot is not None:
            self._slot.release()
            self._slot = None

    async def _restore(self, record: Mapping[str, Any]) -> bool:
        """Is the paid-for clip still at hand? From the store, a shot clip (a group's own clip), or
        the result URL."""
        store = self.ctx.journal.clip_path(self.job.identity)
        clip = record.get("clip") or {}
        want = clip.get("sha256")
        if store.exists() and (_unchanged(store, clip) or sha256_file(store) == want):
            return True
        copies = [self.job.key] if self.is_group else [shot.id for shot in self.job.shots]
        for log_id in copies:
            delivered = self.ctx.delivered(log_id)
            if delivered.exists() and sha256_file(delivered) == want:
                copy_file(delivered, store)
                return True
        if not record.get("video_url"):
            return False
        try:
            outcome = Outcome(output=record.get("output") or {}, video_url=record["video_url"])
            clip = await self._download(outcome)
        except (AivpError, OSError):
            return False  # gone everywhere: render it again
        self.ctx.journal.put(self.job.identity, {**record, "clip": clip})
        return True

    def _reuse(self, record: Mapping[str, Any]) -> JobResult:
        try:
            stamps = self._place_clips(record)
        except OSError as exc:
            return self._undelivered(exc)
        unchanged = all(
            (last := self.ctx.board.delivered.get(log_id) or {}).get("identity") == self.job.identity
            and last.get("delivered") == stamps.get(log_id)
            and (last.get("clip") or {}).get("sha256") == (clip or {}).get("sha256")
            for log_id, _, clip in self._deliveries(record)
            if log_id not in self._kept
        )
        if unchanged:
            # Nothing about the shot changed: its log and row stay exactly as they are.
            if self.ctx.on_event:
                self.ctx.on_event(self.job.key, "done", {**self.log, **_done_fields(record), "reused": True})
        else:
            self.record(
                "done", **_done_fields(record), **self._delivered_fields(stamps), reused=True, note="reused"
            )
        return JobResult(
            self.job.key, "done", reused=True, request_id=record.get("request_id"), kept=bool(self._kept)
        )

    def _delivered_fields(self, stamps: Mapping[str, dict[str, int]]) -> dict[str, Any]:
        """The log fields saying what was delivered: the file's size and mtime (a group: its own
        clip's, and each shot's part's under `delivered_parts`)."""
        if not self.is_group:
            return {"delivered": stamps.get(self.job.shots[-1].id) if self.job.shots else {}}
        return {
            "delivered": stamps.get(self.job.key),
            "delivered_parts": {shot.id: stamps.get(shot.id) for shot in self.job.shots},
        }

    async def _submit(self, record: Mapping[str, Any]) -> JobResult:
        job, ledger = self.job, self.ctx.ledger
        if not await ledger.reserve(job.key, job.identity, job.estimate_usd):
            return self.refuse(
                f"not submitted: ${job.estimate_usd:.2f} would pass budget_usd="
                f"{ledger.budget_usd} (already committed ${ledger.committed_usd:.2f})"
            )
        attempts = int(record.get("attempts", 0)) + 1
        try:
            payload = await self._upload_files()
        except (AivpError, OSError) as exc:
            await ledger.release(job.key, job.identity, "upload failed")
            return self.refuse(f"upload failed: {exc}")
        base = {
            "endpoint": job.endpoint,
            "provider": job.provider,
            "attempts": attempts,
            "payload": payload,
            "requested_seed": job.seed,  # what the log shows when the clip is reused
            "seed_sent": job.seed_field is not None,
        }
        # The exact body and the time, durably, before the POST: what finds it again if the answer is lost.
        sending = {
            **base,
            "status": UNKNOWN,
            "submitting_since": now_iso(),
            "sent_at": time.time(),
            "start_timeout": self.provider.start_timeout,
        }
        self.ctx.journal.put(job.identity, sending)
        try:
            submission = await self.provider.submit(job.endpoint, payload)
        except SubmitNotAccepted as exc:  # never reached the provider: safe to submit again later
            self._journal_failure(base, exc)
            await ledger.release(job.key, job.identity, "submit not accepted")
            return self.refuse(str(exc))
        except TransientError as exc:  # it may have reached the provider: never resubmit blindly
            lost = self.ctx.journal.put(
                job.identity, {**sending, "answer_lost_at": time.time(), "error": str(exc)}
            )
            self.record("unknown", attempts=attempts, error=f"submit outcome unknown: {exc}")
            return await self._resolve_lost(lost)
        except ProviderError as exc:
            self._journal_failure(base, exc)
            await ledger.release(job.key, job.identity, "submit refused")
            return self.refuse(str(exc))
        journal = self.ctx.journal.put(
            job.identity,
            {
                **base,
                "status": SUBMITTED,
                "submission": submission.to_dict(),
                "request_id": submission.request_id,
                "submitted_at": now_iso(),
            },
        )
        self.record(
            "queued",
            request_id=submission.request_id,
            payload=payload,
            attempts=attempts,
            timings={"submitted_at": journal["submitted_at"]},
        )
        return await self._wait(submission, journal)

    async def _resolve_lost(self, record: Mapping[str, Any]) -> JobResult:
        """Look the lost submit up in the provider's history (see reconcile.py) until it is found,
        proven never accepted, or this run's `reconcile.wait_s` is up."""
        policy, lost = self.ctx.reconcile, _lost_submit(record)
        give_up = time.monotonic() + policy.wait_s
        attempt, verdict, rows = 0, Verdict.NOT_YET, []
        while True:
            attempt += 1
            try:
                found = await self.provider.history(lost.endpoint, lost.sent_from - policy.skew_s)
            except (TransientError, RequestFailed) as exc:
                found, reason = [], f"its request history is unavailable ({exc})"
            else:
                reason = "no matching request in its history yet"
            if found is None:  # a provider without a history: only a person can decide
                return self.fail(
                    "a previous submit's answer was lost, so it may have been accepted and billed; "
                    "not resubmitting (rerun with resubmit_unknown=true to submit again)"
                )
            rows = lost.matches(found, policy)
            verdict = lost.judge(found, policy, time.time())
            if verdict is not Verdict.NOT_YET or time.monotonic() >= give_up:
                break
            wait = min(policy.delay(attempt), give_up - time.monotonic())
            deadline = lost.deadline(policy)
            if deadline is not None:
                wait = min(wait, max(deadline - time.time(), 0.0) + 0.05)
            await asyncio.sleep(max(wait, 0.0))
        if verdict is Verdict.FOUND:
            return await self._adopt(rows[0], record)
        if verdict is Verdict.NEVER_ACCEPTED:
            self.ctx.warn(
                f"{self.job.key}: the lost submit of {_utc(lost.sent_from)} is not in the provider's "
                f"history after its {lost.start_timeout:g} s start timeout: it was never accepted; "
                "submitting again"
            )
            await self.ctx.ledger.release(self.job.key, self.job.identity, "lost submit never accepted")
            return await self._submit({**record, "status": FAILED})
        if verdict is Verdict.AMBIGUOUS:
            ids = ", ".join(sorted(row.request_id for row in rows))
            self.ctx.journal.put(
                self.job.identity, {**record, "candidates": sorted(r.request_id for r in rows)}
            )
            return self.fail(
                f"submit answer lost and {len(rows)} requests in the provider's history match it ({ids}); "
                "not resubmitting: check them, then rerun with resubmit_unknown=true if none is this shot's"
            )
        deadline = lost.deadline(policy)
        when = (
            f"it is resubmitted automatically from {_utc(deadline)} if it never appears"
            if deadline is not None
            else "without a start timeout nothing proves it was never accepted (resubmit_unknown=true "
            "submits again and may pay twice)"
        )
        return self.fail(f"submit answer lost; {reason}; rerun to look again ({when})")

    async def _adopt(self, row: HistoryRow, record: Mapping[str, Any]) -> JobResult:
        """The lost submit was accepted as `row.request_id`: journal it and wait for it."""
        submission = self.provider.attach({"request_id": row.request_id, "endpoint": self.job.endpoint})
        journal = self.ctx.journal.put(
            self.job.identity,
            {
                **record,
                "status": SUBMITTED,
                "submission": submission.to_dict(),
                "request_id": submission.request_id,
                "submitted_at": now_iso(),
                "reconciled": "request history",
            },
        )
        if not self.ctx.ledger.holds(self.job.key):  # reserved by the run that lost the answer
            await self.ctx.ledger.reserve(self.job.key, self.job.identity, 0.0)
        self.record(
            "queued", request_id=row.request_id, error=None, note="reconciled from the request history"
        )
        # The history keeps the output for 30 days; the queue result only about an hour.
        output = row.json_output if isinstance(row.json_output, dict) else {}
        video = output.get("video") if isinstance(output.get("video"), dict) else {}
        fallback = Outcome(output=output, video_url=str(video["url"])) if video.get("url") else None
        return await self._wait(submission, journal, fallback)

    async def _attach(self, record: Mapping[str, Any]) -> JobResult:
        submission = self.provider.attach(record["submission"])
        # Accepted (and reserved) by an earlier run: nothing new to reserve; it is settled when done.
        await self.ctx.ledger.reserve(self.job.key, self.job.identity, 0.0)
        self.record(
            "queued",
            request_id=submission.request_id,
            payload=record.get("payload"),
            attempts=record.get("attempts", 1),
            reattached=True,
        )
        return await self._wait(submission, dict(record))

    async def _wait(
        self, submission: Submission, record: dict[str, Any], fallback: Outcome | None = None
    ) -> JobResult:
        job, ledger = self.job, self.ctx.ledger
        try:
            outcome = await self._wait_or_cancel(submission)
        except RequestFailed as exc:
            if fallback is not None and exc.status_code == 404:  # the queue forgot it; the history did not
                return await self._finish(submission, {**record, "result_from": "request history"}, fallback)
            self._journal_failure(record, exc)
            if exc.may_be_billed:  # it had started: count the estimate rather than assume it was free
                await ledger.settle(job.key, job.identity, job.estimate_usd, "estimate")
            else:
                await ledger.release(job.key, job.identity, "generation failed (not billed)")
            return self.fail(str(exc))
        except (TimeoutError, ProviderError) as exc:
            # Still accepted at the provider: keep `submitted` so the next run re-attaches.
            return self.fail(f"lost contact with request {submission.request_id}: {exc}; rerun to re-attach")
        return await self._finish(submission, record, outcome)

    async def _finish(self, submission: Submission, record: dict[str, Any], outcome: Outcome) -> JobResult:
        job, ledger = self.job, self.ctx.ledger
        self._release_slot()
        try:
            clip = await self._download(outcome)
        except (MediaError, ProviderError, OSError) as exc:
            self.ctx.journal.put(job.identity, {**record, "output": outcome.output})
            return self.fail(f"download failed: {exc}; rerun to fetch it again")
        cut: dict[str, Any] = {}
        uncut: BaseException | None = None
        if self.is_group:  # cut into its shots before it is journalled done: the record has the parts
            try:
                cut["parts"] = await self._cut_parts([None] * len(job.shots), clip)
            except (MediaError, OSError) as exc:  # paid for all the same: journalled, never bought again
                cut["parts"], uncut = None, exc
        done = self.ctx.journal.put(
            job.identity,
            {
                **record,
                "status": DONE,
                "output": outcome.output,
                "video_url": outcome.video_url,
                "seed_returned": outcome.seed,
                "clip": clip,
                **cut,
                **(await self._cost(outcome)),
                "completed_at": now_iso(),
                "request_id": submission.request_id,
            },
        )
        await ledger.settle(job.key, job.identity, done["cost_usd"], done["cost_source"])
        if uncut is not None:
            return self._uncut(uncut, **_done_fields(done))
        try:  # a copy of a big clip, off the event loop
            stamps = await asyncio.to_thread(self._place_clips, done)
        except OSError as exc:
            return self._undelivered(exc, cost_usd=done["cost_usd"])
        self.record(
            "done",
            **_done_fields(done),
            **self._delivered_fields(stamps),
            timings={
                **self.log.get("timings", {}),
                **outcome.timings,
                "elapsed_s": round(time.monotonic() - self.t0, 2),
            },
        )
        return JobResult(
            job.key,
            "done",
            cost_usd=done["cost_usd"],
            request_id=submission.request_id,
            estimate_usd=job.estimate_usd,
            cost_source=done["cost_source"],
        )

    async def _cost(self, outcome: Outcome) -> dict[str, Any]:
        """What the provider billed (its units × its unit price), else our estimate, said so."""
        job = self.job
        price = await self.provider.unit_price(job.endpoint) if outcome.billed_units is not None else None
        billed = billed_cost(outcome.billed_units, price)
        fields: dict[str, Any] = {
            "estimate_usd": job.estimate_usd,
            "billable_units": outcome.billed_units,
            "unit_price": price.unit_price if price else None,
            "unit": price.unit if price else None,
        }
        if billed is None:
            return {**fields, "cost_usd": job.estimate_usd, "cost_source": "estimate"}
        line = drift_warning(
            job.endpoint, job.estimate_usd, billed, outcome.billed_units, price, self.ctx.price_drift
        )
        if line and job.endpoint not in self.ctx.drift_warned:
            self.ctx.drift_warned.add(job.endpoint)
            self.ctx.warn(line)
        return {**fields, "cost_usd": billed, "cost_source": "billed"}

    async def _wait_or_cancel(self, submission: Submission) -> Outcome:
        waiter = asyncio.ensure_future(self.provider.wait(submission, self.status_update))
        cancel = asyncio.ensure_future(self.ctx.cancel_inflight.wait())
        try:
            done, _ = await asyncio.wait({waiter, cancel}, return_when=asyncio.FIRST_COMPLETED)
            if waiter in done:
                return waiter.result()
            waiter.cancel()
            await self.provider.cancel(submission)
            raise RequestFailed(
                f"cancelled by user; request {submission.request_id}", request_id=submission.request_id
            )
        finally:
            cancel.cancel()

    async def _upload_files(self) -> dict[str, Any]:
        uris = {}
        for key, path in self.job.files.items():
            sha = self.job.file_hashes[key]
            scope = self.provider.upload_scope  # the storage host: its URLs mean nothing elsewhere
            url = self.ctx.uploads.get(scope, sha) if self.ctx.uploads else None
            if url is None:
                url = await self.provider.upload(path)
                if self.ctx.uploads and url.startswith(("http://", "https://")):
                    self.ctx.uploads.put(scope, sha, url)
            uris[path.as_uri()] = url
        return replace_strings(self.job.payload, uris)

    async def _download(self, outcome: Outcome) -> dict[str, Any]:
        dest = self.ctx.journal.clip_path(self.job.identity)
        part = dest.with_name(dest.name + ".part")
        ensure_dir(part.parent)
        got = await self.provider.download(outcome.video_url, part)
        info = await asyncio.to_thread(verify_clip, part, float(self.job.duration_s), DURATION_TOLERANCE_S)
        os.replace(part, dest)
        stat = dest.stat()
        return {
            "mtime_ns": stat.st_mtime_ns,
            "bytes": got.size,
            "sha256": got.sha256,  # taken while downloading: the clip is never read again to hash it
            "duration_s": round(info.duration_s, 3),
            "frames": info.frames,
            "width": info.width,
            "height": info.height,
            "fps": info.fps,
            "has_audio": info.has_audio,
        }

    # -- multi-shot groups: the parts -----------------------------------------------------------
    async def _ensure_parts(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Every part of the group's stored clip at hand in the store: a lost one is copied back
        from its delivered shot clip, else cut again from the stored group clip (never bought)."""
        job, journal = self.job, self.ctx.journal
        parts = _parts_of(record, len(job.shots))
        missing = []
        changed = False
        for k, (shot, part) in enumerate(zip(job.shots, parts, strict=True)):
            stored = journal.part_path(job.identity, k)
            want = (part or {}).get("sha256")
            if want is None:
                missing.append(k)
            elif stored.is_file() and (_unchanged(stored, part or {}) or sha256_file(stored) == want):
                continue
            elif (delivered := self.ctx.delivered(shot.id)).is_file() and sha256_file(delivered) == want:
                copy_file(delivered, stored.with_name(stored.name + ".part"))
                os.replace(stored.with_name(stored.name + ".part"), stored)
                parts[k] = {**(part or {}), **_stamp(stored)}
                changed = True
            else:
                missing.append(k)
        if missing:
            parts = await self._cut_parts(parts, record.get("clip") or {}, only=missing)
        if not (missing or changed):
            return dict(record)
        return await journal.aput(job.identity, {**record, "parts": parts})

    async def _cut_parts(
        self, parts: list[dict[str, Any] | None], clip: Mapping[str, Any], only: list[int] | None = None
    ) -> list[dict[str, Any] | None]:
        """Cut the stored group clip at its shots' durations (split.split_clip, in a worker thread),
        into `<store>/clips/<identity>/part-NN.mp4`; `only` the parts at those indices replace the
        stored ones (the others stay as they are). Returns the parts, each with its sha256."""
        job, journal = self.job, self.ctx.journal
        src = journal.clip_path(job.identity)
        finals = [journal.part_path(job.identity, k) for k in range(len(job.shots))]
        scratch = finals[0].parent / f".cut-{os.getpid()}-{id(self):x}"
        try:
            infos = await asyncio.to_thread(
                split_clip,
                src,
                [scratch / final.name for final in finals],
                [float(d) for d in job.shot_durations_s],
            )
            out = list(parts)
            for k, info in enumerate(infos):
                if only is not None and k not in only:
                    continue
                os.replace(info.path, finals[k])
                out[k] = {
                    "shot": job.shots[k].id,
                    **_stamp(finals[k]),
                    "sha256": info.sha256,
                    "start_s": round(info.start_s, 3),
                    "duration_s": round(info.duration_s, 3),
                    "expected_s": info.expected_s,
                    "frames": info.frames,
                    "width": clip.get("width"),
                    "height": clip.get("height"),
                    "fps": clip.get("fps"),
                    "has_audio": info.has_audio,
                }
            return out
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _uncut(self, exc: BaseException, **fields: Any) -> JobResult:
        """The group's clip is paid for and stored, but could not be cut into its shots."""
        fields.pop("error", None)
        return self.fail(
            f"its clip could not be cut into its shots ({exc}); nothing is bought again: "
            f"rerender=[{self.job.key}] renders the group again",
            **fields,
        )

    def _undelivered(self, exc: OSError, **fields: Any) -> JobResult:
        """The clip is paid for and safe in the store; only its copy in video/clips failed."""
        where = relpath(self.ctx.delivered(self.job.key), self.ctx.output_dir.parent)
        reason = exc.strerror or type(exc).__name__
        return self.fail(
            f"could not write {where} ({reason}); rerun to deliver it: nothing is bought again", **fields
        )

    def _place_clips(self, record: Mapping[str, Any]) -> dict[str, dict[str, int]]:
        """Deliver the stored clip to video/clips/<shot>.mp4 (a group: its clip to
        video/clips/group-NN.mp4 and each stored part to its shot's) as a copy of its own (a reflink
        where the file system has them), so editing it never touches the paid-for original. Returns
        each delivered file's size and mtime by log id, which let the next run skip re-hashing it."""
        journal = self.ctx.journal
        sources = [journal.clip_path(self.job.identity)] * len(self.job.shots)
        if self.is_group:
            sources = [journal.clip_path(self.job.identity)] + [
                journal.part_path(self.job.identity, k) for k in range(len(self.job.shots))
            ]
        stamps: dict[str, dict[str, int]] = {}
        for src, (log_id, dest, clip) in zip(sources, self._deliveries(record), strict=True):
            if log_id in self._kept:
                continue
            last = self.ctx.board.delivered.get(log_id) or {}
            want = (clip or {}).get("sha256")
            # What was delivered before, untouched since, if it was this clip; else compare the bytes.
            same = (last.get("clip") or {}).get("sha256") == want
            in_place = dest.is_file() and (
                (same and _unchanged(dest, last.get("delivered") or {})) or sha256_file(dest) == want
            )
            if not in_place:
                part = dest.with_name(dest.name + ".part")
                copy_file(src, part)
                os.replace(part, dest)
            stamps[log_id] = _stamp(dest)
        return stamps


async def _price_unpriced(runs: list[_JobRun], provider: Provider) -> None:
    """Jobs with no estimate (model=auto without model.pricing) are priced from the provider's unit
    price where its unit is plain, so the budget holds them too."""
    for run in runs:
        if run.job.estimate_usd:
            continue
        price = await provider.unit_price(run.job.endpoint)
        units = expected_units(price.unit, float(run.job.duration_s)) if price else None
        if price is not None and units is not None:
            run.job = dataclasses.replace(run.job, estimate_usd=round(units * price.unit_price, 4))
            run.log["estimate_usd"] = run.job.estimate_usd


async def _check_prices(jobs: list[Job], provider: Provider, ctx: RunContext) -> None:
    """Before spending: warn once per endpoint where fal's unit price and the model config's rate
    disagree (for units whose meaning is plain; the others are compared when billed)."""
    for job in {job.endpoint: job for job in reversed(jobs)}.values():
        price = await provider.unit_price(job.endpoint)
        units = expected_units(price.unit, float(job.duration_s)) if price else None
        if price is None or units is None:
            continue
        fal_usd = units * price.unit_price
        line = drift_warning(
            job.endpoint, job.estimate_usd, fal_usd, units, price, ctx.price_drift, billed=False
        )
        if line:
            ctx.drift_warned.add(job.endpoint)
            ctx.warn(line)


def _lost_submit(record: Mapping[str, Any]) -> LostSubmit:
    sent = record.get("sent_at")
    if not isinstance(sent, int | float):  # journalled by an older version: second precision
        sent = _epoch(record.get("submitting_since")) or time.time()
    lost = record.get("answer_lost_at")
    return LostSubmit(
        endpoint=str(record.get("endpoint")),
        body=record.get("payload"),
        sent_from=float(sent),
        sent_until=float(lost) if isinstance(lost, int | float) else float(sent) + 120.0,
        start_timeout=record.get("start_timeout"),
    )


def _epoch(iso: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(iso).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _schema_attr(ctx: RunContext, endpoint: str, name: str) -> str | None:
    schema = ctx.schemas.get(endpoint)
    return getattr(schema, name) if schema is not None else None


def _stamp(path: Path) -> dict[str, int]:
    stat = path.stat()
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _parts_of(record: Mapping[str, Any], count: int) -> list[dict[str, Any] | None]:
    """A group record's parts, one per shot (None where a part is not known)."""
    parts = record.get("parts")
    if not isinstance(parts, list) or len(parts) != count:
        return [None] * count
    return [dict(p) if isinstance(p, Mapping) and p.get("sha256") else None for p in parts]


def _unchanged(path: Path, clip: Mapping[str, Any]) -> bool:
    """Same size and mtime as when it was stored and hashed: skip re-hashing a big clip."""
    if not clip.get("mtime_ns"):
        return False
    stat = path.stat()
    return stat.st_size == clip.get("bytes") and stat.st_mtime_ns == clip.get("mtime_ns")


def copy_file(src: Path, dest: Path) -> None:
    """An independent copy: a reflink (FICLONE) where the file system shares extents, else bytes."""
    dest.parent.mkdir(parents=True, exist_ok=True)  # not ensure_dir: the store may have been cleared
    if hasattr(fcntl, "ioctl"):
        try:
            with open(src, "rb") as s, open(dest, "wb") as d:
                fcntl.ioctl(d.fileno(), _FICLONE, s.fileno())
            return
        except OSError:
            pass  # not a reflink-capable file system (ext4, tmpfs, across devices): copy the bytes
    shutil.copyfile(src, dest)


def _done_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    """The log fields of a finished render, from its journal record: what was sent, returned, paid."""
    seed = record.get("requested_seed")
    if seed is None:  # journalled before requested_seed was: the seed it sent, if any
        seed = (record.get("payload") or {}).get("seed")
    seeds = {"seed": seed, "requested_seed": seed} if isinstance(seed, int) else {}
    if record.get("seed_sent") is not None:
        seeds["seed_sent"] = record["seed_sent"]
    return {
        **seeds,
        "request_id": record.get("request_id"),
        "video_url": record.get("video_url"),
        "seed_returned": record.get("seed_returned"),
        "cost_usd": record.get("cost_usd"),
        "cost_source": record.get("cost_source", "estimate"),
        "estimate_usd": record.get("estimate_usd"),
        "billable_units": record.get("billable_units"),
        "unit_price": record.get("unit_price"),
        "unit": record.get("unit"),
        "clip": record.get("clip"),
        **({"parts": record.get("parts")} if "parts" in record else {}),
        "payload": record.get("payload"),
        "attempts": record.get("attempts"),
        "error": None,
    }


def initial_log(job: Job, ctx: RunContext) -> dict[str, Any]:
    """The spec's log fields, plus everything needed to redo the render. A multi-shot group's log
    (`video/log/group-NN.json`); each of its shots' logs derive from it (`part_log`)."""
    shot = job.shots[0]
    root = ctx.project_dir
    group = bool(job.shot_durations_s)
    if group:
        sent = set(job.files.values())
        start = shot.start_frame if shot.start_frame in sent else None
        input_image, end_image = relpath(start, root), None
        portraits = list(dict.fromkeys(p for s in job.shots for p in s.character_refs))
    else:
        input_image = relpath(shot.start_frame, root) if job.mode in ("I2V", "FLF") else None
        end_image = relpath(shot.end_frame, root) if job.mode == "FLF" else None
        portraits = list(shot.character_refs)
    log_id = job.key if group else shot.id
    return {
        "id": log_id,
        "type": "group" if group else "clip",
        # Relative to the folder holding video/ (the project, or a sweep member's run dir).
        "file": relpath(ctx.delivered(log_id), ctx.output_dir.parent),
        "model": job.endpoint,
        "mode": job.mode,
        "status": "pending",
        "request_id": None,
        "prompt": job.prompt,
        "seed": job.seed,
        "duration": str(job.duration_s),
        "aspect_ratio": shot.aspect_ratio or job.payload.get("aspect_ratio"),
        "input_image": input_image,
        "end_image": end_image,
        "character_refs": [relpath(p, root) for p in portraits],
        "video_url": None,
        "cost_usd": 0.0,  # nothing is spent until the provider reports the render done
        "timestamp": now_iso(),
        "provider": job.provider,
        "endpoint": job.endpoint,
        "model_config": job.model,
        "tier": ctx.tier,
        "shots": [s.id for s in job.shots],
        **({"shot_durations_s": list(job.shot_durations_s)} if group else {}),
        "identity": job.identity,
        "payload": job.payload,
        "payload_files": {
            k: {"path": relpath(p, root), "sha256": job.file_hashes.get(k)} for k, p in job.files.items()
        },
        "schema_sha256": _schema_attr(ctx, job.endpoint, "sha256"),
        "schema_source": _schema_attr(ctx, job.endpoint, "source"),
        "requested_seed": job.seed,
        "seed_sent": job.seed_field is not None,
        "seed_random": job.seed_random,
        "seed_returned": None,
        "prompt_variant": job.prompt_variant,
        "requested_duration_s": job.requested_duration_s,
        "duration_note": job.duration_note,
        "notes": list(job.notes),
        "estimate_usd": job.estimate_usd,
        "cost_source": "estimate",
        "attempts": 0,
        "timings": {},
        "run_dir": str(ctx.run_dir),
        "hydra_dir": str(ctx.run_dir / ".hydra"),  # the composed config and overrides (`aivp rerun`)
        "run_id": ctx.run_id,
        "versions": versions(),
        "error": None,
    }


def group_log(job: Job, log: Mapping[str, Any]) -> dict[str, Any]:
    """A multi-shot group's own log: its clip, its shots and where each is cut out (`parts`)."""
    parts = _parts_of(log, len(job.shots))
    starts = _starts(job)
    planned = [
        part or {"shot": shot.id, "start_s": start, "expected_s": seconds}
        for shot, start, seconds, part in zip(job.shots, starts, job.shot_durations_s, parts, strict=True)
    ]
    out = {k: v for k, v in log.items() if k != "delivered_parts"}
    return {**out, "id": job.key, "type": "group", "parts": planned}


def part_log(job: Job, ctx: RunContext, log: Mapping[str, Any], k: int) -> dict[str, Any]:
    """Shot k of a multi-shot group: its own clip (its part of the group's, with its own sha256),
    its item's prompt and length, and the group it came from. Its cost is its share of the group's
    by seconds (`group_cost_usd` is the whole); plan.md counts the group's once, on its row."""
    shot = job.shots[k]
    seconds = job.shot_durations_s[k]
    share = seconds / job.duration_s if job.duration_s else 0.0
    others = [f"{s.id}:" for s in job.shots if s.id != shot.id]
    mine = [n for n in log.get("notes") or () if not str(n).startswith(tuple(others))]
    duration_notes = [n for n in str(log.get("duration_note") or "").split("; ") if n]
    duration_notes = [n for n in duration_notes if not n.startswith(tuple(others))]
    out = {k2: v for k2, v in log.items() if k2 not in ("parts", "delivered_parts")}
    return {
        **out,
        "id": shot.id,
        "type": "clip",
        "group": job.key,
        "part": f"{k + 1}/{len(job.shots)}",
        "file": relpath(ctx.delivered(shot.id), ctx.output_dir.parent),
        "group_file": log.get("file"),
        "prompt": job.shot_prompts[k] if k < len(job.shot_prompts) else log.get("prompt"),
        "duration": str(seconds),
        "start_s": _starts(job)[k],
        "aspect_ratio": shot.aspect_ratio or log.get("aspect_ratio"),
        "input_image": log.get("input_image") if k == 0 else None,
        "end_image": None,
        "character_refs": [relpath(p, ctx.project_dir) for p in shot.character_refs],
        "requested_duration_s": shot.duration_s,
        "duration_note": "; ".join(duration_notes) or None,
        "notes": mine,
        "clip": _parts_of(log, len(job.shots))[k],
        "group_clip": log.get("clip"),
        "delivered": (log.get("delivered_parts") or {}).get(shot.id),
        "cost_usd": round(float(log.get("cost_usd") or 0.0) * share, 4),
        "estimate_usd": round(float(log.get("estimate_usd") or 0.0) * share, 4),
        "group_cost_usd": log.get("cost_usd"),
        "group_estimate_usd": log.get("estimate_usd"),
    }


def _starts(job: Job) -> list[int]:
    """Where each shot of a group starts in the group's clip, in seconds."""
    out, at = [], 0
    for seconds in job.shot_durations_s:
        out.append(at)
        at += seconds
    return out


async def run_jobs(jobs: list[Job], provider: Provider, ctx: RunContext) -> list[JobResult]:
    """Run every job with at most `max_in_flight` in flight; per-job failures are results, not raises."""
    runs = [_JobRun(job, ctx, provider) for job in jobs]
    pending = [
        run for run in runs if run.rerender or (ctx.journal.get(run.job.identity) or {}).get("status") != DONE
    ]
    for run in pending:
        # New shots show up as pending at once; a shot with a log keeps it until its state changes.
        if not any(shot.id in ctx.board.delivered or ctx.board.has(shot.id) for shot in run.job.shots):
            run.record("pending")
    if pending:  # a rejected key stops the run here, before any upload or submit
        await provider.check_auth([run.job.endpoint for run in pending])
        await _price_unpriced(pending, provider)
        await _check_prices([run.job for run in pending], provider, ctx)
    slots = asyncio.Semaphore(max(1, ctx.max_in_flight))
    locks: dict[str, asyncio.Lock] = {}
    try:
        return list(
            await asyncio.gather(
                *(run.run(slots, locks.setdefault(run.job.identity, asyncio.Lock())) for run in runs)
            )
        )
    finally:
        ctx.board.flush()
        ctx.ledger.close()
