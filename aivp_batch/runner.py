"""Run validated jobs on a provider: reuse finished work, reserve budget, upload, submit once,
journal the request id, wait, download, verify, record.

The runner knows jobs, the journal, logs and the ledger; the provider knows only its protocol.
Journal states per job identity (see records.py): a `done` job is reused (zero requests), a
`submitted` one is re-attached to its request id, a `failed` one is submitted again, and an
`unknown` one (a submit whose answer was lost) is never resubmitted without `resubmit_unknown`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .budget import Ledger
from .errors import AivpError, MediaError, ProviderError, RequestFailed, SubmitNotAccepted, TransientError
from .files import ensure_dir
from .media import sha256_file, verify_clip
from .planning import Job, replace_strings
from .providers.base import Outcome, Provider, StatusUpdate, Submission
from .records import DONE, FAILED, SUBMITTED, UNKNOWN, Journal, PlanBoard, UploadCache, now_iso, relpath
from .schemas import EndpointSchema

DURATION_TOLERANCE_S = 0.6


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
    uploads: UploadCache | None = None
    on_event: Callable[[str, str, Mapping[str, Any]], None] | None = None
    stop_submitting: asyncio.Event = field(default_factory=asyncio.Event)
    cancel_inflight: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def clips_dir(self) -> Path:
        return self.output_dir / "clips"


@dataclass
class JobResult:
    key: str
    status: str  # done | failed | pending
    error: str | None = None
    cost_usd: float = 0.0
    reused: bool = False
    request_id: str | None = None


class _JobRun:
    """The life of one job in one run; owns its shot log."""

    def __init__(self, job: Job, ctx: RunContext, provider: Provider) -> None:
        self.job, self.ctx, self.provider = job, ctx, provider
        self.log: dict[str, Any] = initial_log(job, ctx)
        self.t0 = time.monotonic()
        self._slot: asyncio.Semaphore | None = None

    # -- records -------------------------------------------------------------------------------
    def record(self, status: str, **fields: Any) -> None:
        self.log.update(fields, status=status, timestamp=now_iso())
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

    # -- the job -------------------------------------------------------------------------------
    async def run(self, slots: asyncio.Semaphore, same_identity: asyncio.Lock) -> JobResult:
        # Two jobs with one identity run one after the other, so the second reuses the first.
        async with same_identity:
            try:
                return await self._run(slots)
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except Exception as exc:  # noqa: BLE001 - a bug in one job must not sink the others
                return self.fail(f"internal error: {type(exc).__name__}: {exc}")

    async def _run(self, slots: asyncio.Semaphore) -> JobResult:
        record = self.ctx.journal.get(self.job.identity) or {}
        if record.get("status") == DONE and await self._restore(record):
            return self._reuse(self.ctx.journal.get(self.job.identity) or record)
        # A slot is a request in flight at the provider: it is given back as soon as the result is
        # in, so the next job is submitted while this one downloads and verifies.
        await slots.acquire()
        self._slot = slots
        try:
            if record.get("status") == SUBMITTED and record.get("submission"):
                return await self._attach(record)
            if record.get("status") == UNKNOWN and not self.ctx.resubmit_unknown:
                return self.fail(
                    "a previous submit's answer was lost, so it may have been accepted and billed; "
                    "not resubmitting (rerun with resubmit_unknown=true to submit again)"
                )
            if self.ctx.stop_submitting.is_set():
                self.record("pending", error="not submitted: run interrupted")
                return JobResult(self.job.key, "pending", error="interrupted")
            return await self._submit(record)
        finally:
            self._release_slot()

    def _release_slot(self) -> None:
        if self._slot is not None:
            self._slot.release()
            self._slot = None

    async def _restore(self, record: Mapping[str, Any]) -> bool:
        """Is the paid-for clip still at hand? From the store, a shot clip, or the result URL."""
        store = self.ctx.journal.clip_path(self.job.identity)
        clip = record.get("clip") or {}
        want = clip.get("sha256")
        if store.exists() and (_unchanged(store, clip) or sha256_file(store) == want):
            return True
        for shot in self.job.shots:
            copy = self.ctx.clips_dir / f"{shot.id}.mp4"
            if copy.exists() and sha256_file(copy) == want:
                ensure_dir(store.parent)
                shutil.copyfile(copy, store)
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
        self._place_clip()
        self.record("done", **_done_fields(record), reused=True)
        return JobResult(self.job.key, "done", reused=True, request_id=record.get("request_id"))

    async def _submit(self, record: Mapping[str, Any]) -> JobResult:
        job, ledger = self.job, self.ctx.ledger
        if not await ledger.reserve(job.key, job.identity, job.estimate_usd):
            return self.fail(
                f"not submitted: ${job.estimate_usd:.2f} would pass budget_usd="
                f"{ledger.budget_usd} (already committed ${ledger.committed_usd:.2f})"
            )
        attempts = int(record.get("attempts", 0)) + 1
        try:
            payload = await self._upload_files()
        except (AivpError, OSError) as exc:
            await ledger.release(job.key, job.identity, "upload failed")
            return self.fail(f"upload failed: {exc}")
        base = {"endpoint": job.endpoint, "provider": job.provider, "attempts": attempts, "payload": payload}
        self.ctx.journal.put(job.identity, {**base, "status": UNKNOWN, "submitting_since": now_iso()})
        try:
            submission = await self.provider.submit(job.endpoint, payload)
        except SubmitNotAccepted as exc:  # never reached the provider: safe to submit again later
            self.ctx.journal.put(job.identity, {**base, "status": FAILED, "error": str(exc)})
            await ledger.release(job.key, job.identity, "submit not accepted")
            return self.fail(str(exc), attempts=attempts)
        except TransientError as exc:  # it may have reached the provider: never resubmit blindly
            self.ctx.journal.put(job.identity, {**base, "status": UNKNOWN, "error": str(exc)})
            return self.fail(f"submit outcome unknown: {exc}", attempts=attempts)
        except ProviderError as exc:
            self.ctx.journal.put(job.identity, {**base, "status": FAILED, "error": str(exc)})
            await ledger.release(job.key, job.identity, "submit refused")
            return self.fail(str(exc), attempts=attempts)
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

    async def _wait(self, submission: Submission, record: dict[str, Any]) -> JobResult:
        job, ledger = self.job, self.ctx.ledger
        try:
            outcome = await self._wait_or_cancel(submission)
        except RequestFailed as exc:
            self.ctx.journal.put(job.identity, {**record, "status": FAILED, "error": str(exc)})
            if exc.may_be_billed:  # it had started: count the estimate rather than assume it was free
                await ledger.settle(job.key, job.identity, job.estimate_usd, "estimate")
            else:
                await ledger.release(job.key, job.identity, "generation failed (not billed)")
            return self.fail(str(exc))
        except (TimeoutError, ProviderError) as exc:
            # Still accepted at the provider: keep `submitted` so the next run re-attaches.
            return self.fail(f"lost contact with request {submission.request_id}: {exc}; rerun to re-attach")
        self._release_slot()
        try:
            clip = await self._download(outcome)
        except (MediaError, ProviderError, OSError) as exc:
            self.ctx.journal.put(job.identity, {**record, "output": outcome.output})
            return self.fail(f"download failed: {exc}; rerun to fetch it again")
        done = self.ctx.journal.put(
            job.identity,
            {
                **record,
                "status": DONE,
                "output": outcome.output,
                "video_url": outcome.video_url,
                "seed_returned": outcome.seed,
                "clip": clip,
                "cost_usd": job.estimate_usd,
                "cost_source": "billed" if outcome.billed_units is not None else "estimate",
                "completed_at": now_iso(),
                "request_id": submission.request_id,
            },
        )
        await ledger.settle(job.key, job.identity, job.estimate_usd, done["cost_source"])
        self._place_clip()
        self.record(
            "done",
            **_done_fields(done),
            timings={
                **self.log.get("timings", {}),
                **outcome.timings,
                "elapsed_s": round(time.monotonic() - self.t0, 2),
            },
        )
        return JobResult(job.key, "done", cost_usd=job.estimate_usd, request_id=submission.request_id)

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
            url = self.ctx.uploads.get(self.job.provider, sha) if self.ctx.uploads else None
            if url is None:
                url = await self.provider.upload(path)
                if self.ctx.uploads and url.startswith(("http://", "https://")):
                    self.ctx.uploads.put(self.job.provider, sha, url)
            uris[path.as_uri()] = url
        return replace_strings(self.job.payload, uris)

    async def _download(self, outcome: Outcome) -> dict[str, Any]:
        dest = self.ctx.journal.clip_path(self.job.identity)
        part = dest.with_name(dest.name + ".part")
        ensure_dir(part.parent)
        size = await self.provider.download(outcome.video_url, part)
        info = await asyncio.to_thread(verify_clip, part, float(self.job.duration_s), DURATION_TOLERANCE_S)
        os.replace(part, dest)
        stat = dest.stat()
        return {
            "mtime_ns": stat.st_mtime_ns,
            "bytes": size,
            "sha256": await asyncio.to_thread(sha256_file, dest),
            "duration_s": round(info.duration_s, 3),
            "frames": info.frames,
            "width": info.width,
            "height": info.height,
            "fps": info.fps,
            "has_audio": info.has_audio,
        }

    def _place_clip(self) -> None:
        """Put the stored clip at video/clips/<shot>.mp4, atomically (a hard link where the disk allows)."""
        src = self.ctx.journal.clip_path(self.job.identity)
        for shot in self.job.shots:
            dest = self.ctx.clips_dir / f"{shot.id}.mp4"
            ensure_dir(dest.parent)
            part = dest.with_name(dest.name + ".part")
            part.unlink(missing_ok=True)
            try:
                os.link(src, part)
            except OSError:
                shutil.copyfile(src, part)
            os.replace(part, dest)


def _schema_attr(ctx: RunContext, endpoint: str, name: str) -> str | None:
    schema = ctx.schemas.get(endpoint)
    return getattr(schema, name) if schema is not None else None


def _unchanged(path: Path, clip: Mapping[str, Any]) -> bool:
    """Same size and mtime as when it was stored and hashed: skip re-hashing a big clip."""
    stat = path.stat()
    return stat.st_size == clip.get("bytes") and stat.st_mtime_ns == clip.get("mtime_ns")


def _done_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "request_id": record.get("request_id"),
        "video_url": record.get("video_url"),
        "seed_returned": record.get("seed_returned"),
        "cost_usd": record.get("cost_usd"),
        "cost_source": record.get("cost_source", "estimate"),
        "clip": record.get("clip"),
        "payload": record.get("payload"),
        "attempts": record.get("attempts"),
        "error": None,
    }


def initial_log(job: Job, ctx: RunContext) -> dict[str, Any]:
    """The spec's log fields, plus everything needed to redo the render."""
    shot = job.shots[0]
    root = ctx.project_dir
    return {
        "id": shot.id,
        "type": "clip",
        "file": relpath(ctx.clips_dir / f"{shot.id}.mp4", root),
        "model": job.endpoint,
        "mode": job.mode,
        "status": "pending",
        "request_id": None,
        "prompt": job.prompt,
        "seed": job.seed,
        "duration": str(job.duration_s),
        "aspect_ratio": shot.aspect_ratio or job.payload.get("aspect_ratio"),
        "input_image": relpath(shot.start_frame, root) if job.mode in ("I2V", "FLF") else None,
        "end_image": relpath(shot.end_frame, root) if job.mode == "FLF" else None,
        "character_refs": [relpath(p, root) for p in shot.character_refs],
        "video_url": None,
        "cost_usd": job.estimate_usd,
        "timestamp": now_iso(),
        "provider": job.provider,
        "endpoint": job.endpoint,
        "model_config": job.model,
        "tier": ctx.tier,
        "shots": [s.id for s in job.shots],
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
        "estimate_usd": job.estimate_usd,
        "cost_source": "estimate",
        "attempts": 0,
        "timings": {},
        "run_dir": str(ctx.run_dir),
        "run_id": ctx.run_id,
        "error": None,
    }


async def run_jobs(jobs: list[Job], provider: Provider, ctx: RunContext) -> list[JobResult]:
    """Run every job with at most `max_in_flight` in flight; per-job failures are results, not raises."""
    runs = [_JobRun(job, ctx, provider) for job in jobs]
    pending = [run for run in runs if (ctx.journal.get(run.job.identity) or {}).get("status") != DONE]
    for run in pending:
        run.record("pending")
    if pending:  # a rejected key stops the run here, before any upload or submit
        await provider.check_auth()
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
