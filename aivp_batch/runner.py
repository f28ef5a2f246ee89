"""Run validated jobs on a provider: reuse finished work, reserve budget, upload, submit once,
journal the request id, wait, download, verify, record.

The runner knows jobs, the journal, logs and the ledger; the provider knows only its protocol.
Journal states per job identity (see records.py): a `done` job is reused (zero requests), a
`submitted` one is re-attached to its request id, a `failed` one is submitted again, and an
`unknown` one (a submit whose answer was lost) is never resubmitted without `resubmit_unknown`.

This module is the flow of a job (`_JobRun`): locks and slots, submit, wait, reconcile a lost
submit. The journal's state transitions are transitions.JobEntry's; the output step (download,
verify, the clip checks, cut a group's clip into its shots, deliver) is output.JobOutput's; what
the shot logs say is shot_logs'.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .billing import billed_cost, drift_warning, expected_units
from .budget import Ledger
from .errors import AivpError, MediaError, ProviderError, RequestFailed, SubmitNotAccepted, TransientError
from .in_flight import SharedSlots, Slots, slots_for
from .openapi import EndpointSchema
from .output import ClipCheck, ClipRejected, JobOutput
from .planning import Job, replace_strings
from .providers.base import HistoryRow, Outcome, Provider, StatusUpdate, Submission
from .reconcile import LostSubmit, ReconcilePolicy, Verdict
from .records import DONE, FAILED, SUBMITTED, UNKNOWN, Journal, PlanBoard, UploadCache, now_iso, relpath
from .shot_logs import done_fields, initial_log, job_logs
from .store_lock import JobLocks
from .transitions import JobEntry


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
    # A sweep member beside others (a parallel launcher): the sweep's one in-flight limit is held
    # through this folder's slot locks (in_flight.SharedSlots).
    shared_slots: Path | None = None
    on_event: Callable[[str, str, Mapping[str, Any]], None] | None = None
    stop_submitting: asyncio.Event = field(default_factory=asyncio.Event)
    cancel_inflight: asyncio.Event = field(default_factory=asyncio.Event)
    warn: Callable[[str], None] = field(default=lambda line: print(f"warning: {line}", file=sys.stderr))
    drift_warned: set[str] = field(default_factory=set)
    # Run on each clip the provider returns, verified, before it is accepted (output.ClipCheck):
    # None accepts it, a reason rejects it (the job fails with it; nothing is delivered).
    clip_checks: Sequence[ClipCheck] = ()

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
    """The life of one job in one run: its journal entry moves from state to state (`entry`), its
    clip goes through the output step (`out`), and its shot logs say where it stands (`log`)."""

    def __init__(self, job: Job, ctx: RunContext, provider: Provider) -> None:
        self.job, self.ctx, self.provider = job, ctx, provider
        self.log: dict[str, Any] = initial_log(job, ctx)
        self.entry = JobEntry(ctx.journal, job.identity, group=bool(job.shot_durations_s))
        self.out = JobOutput(job, provider, ctx.journal, ctx.delivered, ctx.board.delivered, ctx.clip_checks)
        self.t0 = time.monotonic()
        self._slot: Slots | None = None

    @property
    def is_group(self) -> bool:
        """A multi-shot group: one request, one clip, cut into one part per shot."""
        return bool(self.job.shot_durations_s)

    def priced(self, estimate_usd: float) -> None:
        """Its estimate, where the plan had none (from the provider's unit price)."""
        self.job = self.out.job = dataclasses.replace(self.job, estimate_usd=estimate_usd)
        self.log["estimate_usd"] = estimate_usd

    # -- records -------------------------------------------------------------------------------
    def record(self, status: str, **fields: Any) -> None:
        """The job's shot logs say `status` (and `fields`); those of edited deliveries stay."""
        self.log.update(fields, status=status, timestamp=now_iso())
        for log_id, log in job_logs(self.job, self.ctx, self.log, kept=self.out.kept):
            self.ctx.board.update(log_id, log)
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
    async def run(self, slots: Slots, same_identity: asyncio.Lock) -> JobResult:
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

    async def _run(self, slots: Slots) -> JobResult:
        record = self.entry.begin()
        edited = {} if self.rerender else self.out.edited(record)
        if edited and not (self.is_group and record.get("status") == DONE):
            return self._keep(list(edited.values()))
        if edited:  # a finished group: the edited files stay; its other files are delivered
            self._warn_kept(list(edited.values()))
            self.out.kept = edited
        if record.get("status") == DONE and not self.rerender:
            if not await self._restore(record):
                return self.fail(
                    "its paid clip is gone (not in the store, not in video/clips, and the result URL has "
                    f"expired); not paying for it again without rerender=[{self.job.key}]"
                )
            record = self.entry.read() or record
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

    @property
    def rerender(self) -> bool:
        """Asked for again (`rerender=`): rendered and paid for although a finished clip exists."""
        return any(shot.id in self.ctx.rerender for shot in self.job.shots)

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
        if self.out.at_hand(record):
            return True
        clip = await self.out.refetch(record)
        if clip is None:
            return False  # gone everywhere: render it again
        self.entry.clip_restored(record, clip)
        return True

    async def _ensure_parts(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """A finished group's parts, each at hand in the store (put back where lost, and journalled)."""
        parts = await self.out.restore_parts(record)
        if parts is None:
            return dict(record)
        return await self.entry.parts_restored(record, parts)

    def _reuse(self, record: Mapping[str, Any]) -> JobResult:
        try:
            stamps = self.out.place(record)
        except OSError as exc:
            return self._undelivered(exc)
        unchanged = all(
            (last := self.ctx.board.delivered.get(log_id) or {}).get("identity") == self.job.identity
            and last.get("delivered") == stamps.get(log_id)
            and (last.get("clip") or {}).get("sha256") == (clip or {}).get("sha256")
            for log_id, _, clip in self.out.deliveries(record)
            if log_id not in self.out.kept
        )
        if unchanged:
            # Nothing about the shot changed: its log and row stay exactly as they are.
            if self.ctx.on_event:
                self.ctx.on_event(self.job.key, "done", {**self.log, **done_fields(record), "reused": True})
        else:
            self.record(
                "done", **done_fields(record), **self.out.delivered_fields(stamps), reused=True, note="reused"
            )
        return JobResult(
            self.job.key, "done", reused=True, request_id=record.get("request_id"), kept=bool(self.out.kept)
        )

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
        sending = self.entry.sending(base, start_timeout=self.provider.start_timeout)
        try:
            submission = await self.provider.submit(job.endpoint, payload)
        except SubmitNotAccepted as exc:  # never reached the provider: safe to submit again later
            self.entry.failed(base, str(exc))
            await ledger.release(job.key, job.identity, "submit not accepted")
            return self.refuse(str(exc))
        except TransientError as exc:  # it may have reached the provider: never resubmit blindly
            lost = self.entry.answer_lost(sending, str(exc))
            self.record("unknown", attempts=attempts, error=f"submit outcome unknown: {exc}")
            return await self._resolve_lost(lost)
        except ProviderError as exc:
            self.entry.failed(base, str(exc))
            await ledger.release(job.key, job.identity, "submit refused")
            return self.refuse(str(exc))
        journal = self.entry.submitted(base, submission)
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
        policy, lost = self.ctx.reconcile, LostSubmit.from_record(record)
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
            self.entry.ambiguous(record, (row.request_id for row in rows))
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
        journal = self.entry.submitted(record, submission, reconciled="request history")
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
            self.entry.failed(record, str(exc))
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
            clip = await self.out.fetch(outcome)
        except ClipRejected as rejected:
            return await self._rejected(submission, record, outcome, rejected)
        except (MediaError, ProviderError, OSError) as exc:
            self.entry.download_failed(record, outcome)
            return self.fail(f"download failed: {exc}; rerun to fetch it again")
        parts: list[dict[str, Any] | None] | None = None
        uncut: BaseException | None = None
        if self.is_group:  # cut into its shots before it is journalled done: the record has the parts
            try:
                parts = await self.out.cut_parts([None] * len(job.shots), clip)
            except (MediaError, OSError) as exc:  # paid for all the same: journalled, never bought again
                uncut = exc
        cost = await self._cost(outcome)
        done = self.entry.done(
            record, outcome, request_id=submission.request_id, clip=clip, cost=cost, parts=parts
        )
        await ledger.settle(job.key, job.identity, done["cost_usd"], done["cost_source"])
        if uncut is not None:
            return self._uncut(uncut, **done_fields(done))
        try:  # a copy of a big clip, off the event loop
            stamps = await asyncio.to_thread(self.out.place, done)
        except OSError as exc:
            return self._undelivered(exc, cost_usd=done["cost_usd"])
        self.record(
            "done",
            **done_fields(done),
            **self.out.delivered_fields(stamps),
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

    async def _rejected(
        self, submission: Submission, record: dict[str, Any], outcome: Outcome, rejected: ClipRejected
    ) -> JobResult:
        """A clip check rejected the clip: it is paid for (and kept aside), never delivered; the
        next run renders the job again."""
        job, cost = self.job, await self._cost(outcome)
        self.entry.rejected(
            record,
            outcome,
            request_id=submission.request_id,
            reason=str(rejected),
            clip=rejected.clip,
            cost=cost,
        )
        await self.ctx.ledger.settle(job.key, job.identity, cost["cost_usd"], cost["cost_source"])
        result = self.fail(
            str(rejected),
            video_url=outcome.video_url,
            cost_usd=cost["cost_usd"],
            cost_source=cost["cost_source"],
        )
        return dataclasses.replace(
            result, cost_usd=cost["cost_usd"], estimate_usd=job.estimate_usd, cost_source=cost["cost_source"]
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


async def _price_unpriced(runs: list[_JobRun], provider: Provider) -> None:
    """Jobs with no estimate (model=auto without model.pricing) are priced from the provider's unit
    price where its unit is plain, so the budget holds them too."""
    for run in runs:
        if run.job.estimate_usd:
            continue
        price = await provider.unit_price(run.job.endpoint)
        units = expected_units(price.unit, float(run.job.duration_s)) if price else None
        if price is not None and units is not None:
            run.priced(round(units * price.unit_price, 4))


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


def _utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


async def run_jobs(jobs: list[Job], provider: Provider, ctx: RunContext) -> list[JobResult]:
    """Run every job with at most `max_in_flight` in flight; per-job failures are results, not raises."""
    runs = [_JobRun(job, ctx, provider) for job in jobs]
    pending = [run for run in runs if run.rerender or run.entry.read().get("status") != DONE]
    for run in pending:
        # New shots show up as pending at once; a shot with a log keeps it until its state changes.
        if not any(shot.id in ctx.board.delivered or ctx.board.has(shot.id) for shot in run.job.shots):
            run.record("pending")
    if pending:  # a rejected key stops the run here, before any upload or submit
        await provider.check_auth([run.job.endpoint for run in pending])
        await _price_unpriced(pending, provider)
        await _check_prices([run.job for run in pending], provider, ctx)
    slots = slots_for(ctx.max_in_flight, ctx.shared_slots)
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
        if isinstance(slots, SharedSlots):
            slots.close()
