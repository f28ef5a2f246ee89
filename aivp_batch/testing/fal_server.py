"""A fake fal.ai server on loopback that speaks the real queue protocol.

It follows fal's documented queue protocol: queue submit /
status / SSE status stream / result / cancel, CDN storage token + upload, the per-model OpenAPI
endpoint and `/v1/models` search, the platform's request history
(`/v1/models/requests/by-endpoint`) and unit prices (`/v1/models/pricing`), the
`x-fal-billable-units` result header, the `X-Fal-Request-Timeout` start deadline, and
downloadable MP4 outputs that really decode. One server answers every host (queue, rest, cdn,
schema, api); the client takes each base URL from config.

Threads, not asyncio: `ThreadingHTTPServer` gives each connection its own daemon thread, so 60+
open SSE streams are just 60 sleeping threads, and a test's asyncio loop never shares a loop
with the server. Faults are scripted, deterministic and counted (`FaultPlan`).

    python -m aivp_batch.testing.fal_server --port 8765 [--schemas DIR] --latency 2
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import mimetypes
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..snapshot import SNAPSHOT_DIR, Snapshot
from .clips import clip_for
from .faults import Fault, FaultPlan
from .http_fake import Answered as _Answered
from .http_fake import FakeHandler, ThreadedFake, seed_of
from .http_fake import Reset as _Reset

__all__ = ["FakeFal", "FalStats", "Fault", "FaultPlan", "Job", "clip_for", "parse_duration", "payload_hash"]

_THREE_SEGMENT_NAMESPACES = ("workflows", "comfy")
_NGINX_HTML = (
    "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{code} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
_MAX_IDS = 50  # endpoint_id values the platform APIs take per call
_HISTORY_STATUS = {"success": range(200, 300), "user_error": range(400, 500), "error": range(500, 600)}


# --------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class _Event:
    at: float  # time.monotonic()
    status: str
    queue_position: int | None = None
    logs: tuple[dict[str, str], ...] = ()


@dataclass
class Job:
    """One queued request. Its lifecycle is a precomputed timeline of events (time-based)."""

    id: str
    app: str
    endpoint: str
    payload: Any
    headers: dict[str, str]
    seed: int
    timeline: list[_Event]
    failure: tuple[int, dict[str, Any], dict[str, str]] | None = None  # status, body, headers
    error: tuple[str, str] | None = None  # (error, error_type) shown at status when COMPLETED
    cancelled: bool = False
    result_calls: int = 0
    sent_wall: float = field(default_factory=time.time)  # epoch seconds of timeline[0] (submit)
    units: float | None = None  # x-fal-billable-units on a successful result (None: no header)
    wake: threading.Event = field(default_factory=threading.Event)

    def index_at(self, now: float) -> int:
        idx = 0
        for i, ev in enumerate(self.timeline):
            if ev.at <= now:
                idx = i
        return idx

    def next_at(self, idx: int) -> float | None:
        return self.timeline[idx + 1].at if idx + 1 < len(self.timeline) else None

    def completed(self, now: float) -> bool:
        return self.timeline[self.index_at(now)].status == "COMPLETED"

    @property
    def started_at(self) -> float | None:
        """When it reached IN_PROGRESS (monotonic), or None if it never does (dropped, cancelled)."""
        return next((ev.at for ev in self.timeline if ev.status == "IN_PROGRESS"), None)

    @property
    def ended_at(self) -> float:
        """When it reaches (or reached) COMPLETED (monotonic)."""
        return self.timeline[-1].at

    def wall(self, at: float) -> datetime:
        """A monotonic event time as a UTC datetime (microsecond precision)."""
        return datetime.fromtimestamp(self.sent_wall + (at - self.timeline[0].at), UTC)

    def logs_between(self, start: int, end: int) -> list[dict[str, str]]:
        return [log for ev in self.timeline[start : end + 1] for log in ev.logs]

    def status_body(self, idx: int, base: str, logs: list[dict[str, str]] | None) -> dict[str, Any]:
        ev = self.timeline[idx]
        app_url = f"{base}/{self.app}/requests/{self.id}"
        body: dict[str, Any] = {
            "status": ev.status,
            "request_id": self.id,
            "response_url": app_url,
            "status_url": f"{app_url}/status",
            "cancel_url": f"{app_url}/cancel",
            "logs": logs,  # always present (null when not asked): fal_client reads data["logs"]
        }
        if ev.status == "IN_QUEUE":
            body["queue_position"] = ev.queue_position
        if ev.status == "COMPLETED":
            body["metrics"] = {"inference_time": round(ev.at - self.timeline[0].at, 3)}
            if self.error:
                body["error"], body["error_type"] = self.error
        return body


def _log(message: str, at: float, level: str = "INFO") -> dict[str, str]:
    wall = datetime.now(UTC) + timedelta(seconds=at - time.monotonic())
    return {"message": message, "level": level, "source": "USER", "timestamp": wall.isoformat()}


def _iso(dt: datetime) -> str:
    """ISO-8601 UTC with a 'Z', like fal's platform APIs."""
    return dt.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def app_id(endpoint: str) -> str:
    parts = endpoint.strip("/").split("/")
    n = 3 if parts[0] in _THREE_SEGMENT_NAMESPACES else 2
    return "/".join(parts[:n])


def payload_hash(payload: Any) -> str:
    """sha256 of canonical JSON: the key of `FalStats.submits_by_payload`."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def parse_duration(value: Any, default: float = 5.0) -> float:
    """Payload durations come as 5, 5.0, "5" or "8s"; clamp to a sane range."""
    seconds = default
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*s?\s*", value)
        if m:
            seconds = float(m.group(1))
    return min(max(seconds, 0.5), 60.0)


# --------------------------------------------------------------------------- stats


@dataclass
class FalStats:
    """What the server saw. Mutated under FakeFal's lock; read it after the client is done."""

    calls: Counter[str] = field(default_factory=Counter)
    submits_by_payload: Counter[str] = field(default_factory=Counter)
    uploads_by_hash: Counter[str] = field(default_factory=Counter)
    faults_fired: Counter[str] = field(default_factory=Counter)  # "<on>:<kind>"
    open_streams: int = 0
    max_open_streams: int = 0
    _billed: dict[str, float | None] = field(default_factory=dict, repr=False)
    _settle: Callable[[], None] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def duplicate_submits(self) -> int:
        return sum(n - 1 for n in self.submits_by_payload.values() if n > 1)

    @property
    def billed(self) -> dict[str, float | None]:
        """request_id -> billed units, for every request whose generation has COMPLETED successfully
        by now, whether or not anyone fetched the result (fal bills the generation, not the fetch).
        The value is what the result's `x-fal-billable-units` header says, None where the
        `billable_units` hook returned None (billed, units not reported). Failed generations,
        cancelled requests and start-timeout drops are never here. Frozen when the server stops."""
        if self._settle:
            self._settle()
        return dict(self._billed)

    @property
    def billed_requests(self) -> int:
        return len(self.billed)

    @property
    def billed_units(self) -> float:
        """The sum of the reported units in `billed`."""
        return sum(u for u in self.billed.values() if u is not None)


# --------------------------------------------------------------------------- server


class FakeFal(ThreadedFake):
    """A fal look-alike on `host:port` (port 0 = any free port). Use as a context manager.

    Timeline of a job: IN_QUEUE for `latency_s * queue_fraction` seconds (positions counting down
    from `queue_depth`), then IN_PROGRESS, COMPLETED at `latency_s` after submit. Both are plain
    attributes, so a test can make jobs sit in the queue longer (`fal.queue_fraction = 0.9`).

    `X-Fal-Request-Timeout: <s>` on submit is honoured against that timeline: a job that would not
    reach IN_PROGRESS within `s` seconds is dropped at submit + `s` (COMPLETED with error
    `request_timeout`; result 504, `X-Fal-Request-Timeout-Type: user`, `x-fal-billable-units: 0`);
    it never started, so it is neither billed nor listed in the history. A value that is not a
    number > 0.1 is refused at submit with 400 `bad_request`.

    `result_ttl_s`: seconds a completed request's status and result stay in the queue (fal keeps
    them about an hour); after that they answer 404, while the history keeps its output.
    `history_lag_s`: a request appears in `/v1/models/requests/by-endpoint` only once it has
    started and this many more seconds have passed (fal's undocumented listing delay).
    `prices`: endpoint id -> (unit_price, unit) served by `/v1/models/pricing` (others absent).
    `billable_units`: payload -> units for the result's `x-fal-billable-units` header (None: no
    header); by default the payload's `duration` in seconds (`parse_duration`).
    """

    def __init__(
        self,
        schemas_dir: Path | None = None,
        key: str = "test-key",
        latency_s: float = 0.2,
        video: Path | None = None,
        faults: FaultPlan | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        queue_fraction: float = 0.25,
        queue_depth: int = 2,
        keepalive_s: float = 15.0,
        video_size_bytes: int | None = None,
        token_ttl_s: float = 3600.0,
        verbose: bool = False,
        history_lag_s: float = 0.0,
        result_ttl_s: float | None = None,
        prices: dict[str, tuple[float, str]] | None = None,
        billable_units: Callable[[Any], float | None] | None = None,
    ) -> None:
        super().__init__(host, port)
        self.schemas_dir = Path(schemas_dir) if schemas_dir else SNAPSHOT_DIR  # the bundled snapshot
        self.key = key
        self.latency_s = latency_s
        self.video = Path(video) if video else None
        self.faults = faults if faults is not None else FaultPlan()
        self.queue_fraction = queue_fraction
        self.queue_depth = queue_depth
        self.keepalive_s = keepalive_s
        self.video_size_bytes = video_size_bytes
        self.token_ttl_s = token_ttl_s
        self.verbose = verbose
        self.history_lag_s = history_lag_s
        self.result_ttl_s = result_ttl_s
        self.prices: dict[str, tuple[float, str]] = dict(prices or {})
        self.billable_units = billable_units
        self.stats = FalStats()
        self.stats._settle = self._settle_billing
        self._billing_frozen = False
        self.jobs: dict[str, Job] = {}
        self._catalog_lock = threading.Lock()
        self._tokens: dict[str, float] = {}
        self._catalog: list[dict[str, Any]] | None = None

    # lifecycle (start, stop, context manager, port, url: ThreadedFake) ---------------------
    _name = "FakeFal"

    def _handler(self) -> type[FakeHandler]:
        return _Handler

    def _prepare_tmp(self, tmp: Path) -> None:
        (tmp / "up").mkdir()

    def stop(self) -> None:
        self._settle_billing()
        self._billing_frozen = True  # stats read after the server is gone stay as they were
        self._stopping.set()
        with self._lock:
            for job in self.jobs.values():
                job.wake.set()  # let SSE threads finish
        super().stop()

    # state (count, fault: ThreadedFake) ----------------------------------------------------
    def create_job(
        self,
        endpoint: str,
        payload: Any,
        headers: dict[str, str],
        fault: Fault | None,
        start_timeout: float | None = None,
    ) -> Job:
        """A submitted job on the normal timeline; `start_timeout` = the X-Fal-Request-Timeout value."""
        job = self._new_job(endpoint, payload, headers)
        self._build(job, time.monotonic(), self.latency_s * self.queue_fraction, self.latency_s, fault)
        if start_timeout is not None:
            deadline = job.timeline[0].at + start_timeout
            started = job.started_at
            if (started is None and job.ended_at > deadline) or (started is not None and started > deadline):
                _drop_unstarted(job, deadline, "Request timed out before it started", "request_timeout")
        return self._register(job, payload)

    def inject_history(self, endpoint: str, payload: Any, sent_at: datetime | float | None = None) -> Job:
        """Add a request nobody submitted through this server: completed, billed, listed in the
        history (after `history_lag_s`) with exactly `payload` as its `json_input`, and fetchable
        via its queue URLs. `sent_at` (aware datetime, naive = UTC, or epoch seconds; default now)
        is its exact `sent_at`; its run is squeezed to end by now. Two of these (or one next to a
        real submit) with the same payload give two identical history rows. Not counted in
        `stats.calls` / `submits_by_payload` (the client never sent it)."""
        now_wall, now = time.time(), time.monotonic()
        if sent_at is None:
            sent = now_wall
        elif isinstance(sent_at, datetime):
            sent = (sent_at if sent_at.tzinfo else sent_at.replace(tzinfo=UTC)).timestamp()
        else:
            sent = float(sent_at)
        total = min(self.latency_s, now_wall - sent) if sent <= now_wall else self.latency_s
        job = self._new_job(endpoint, payload, {})
        job.sent_wall = sent
        t0 = now - (now_wall - sent)
        self._build(job, t0, total * self.queue_fraction, total, None)
        with self._lock:
            self.jobs[job.id] = job
        return job

    def _new_job(self, endpoint: str, payload: Any, headers: dict[str, str]) -> Job:
        return Job(
            id=str(uuid.uuid4()),
            app=app_id(endpoint),
            endpoint=endpoint,
            payload=payload,
            headers=headers,
            seed=seed_of(payload),
            timeline=[],
            sent_wall=time.time(),
            units=self.units_for(payload),
        )

    def _build(self, job: Job, t0: float, queue_s: float, latency_s: float, fault: Fault | None) -> None:
        """Fill `job`'s timeline from `t0` (monotonic): queued `queue_s`, COMPLETED at t0 + latency_s."""
        run_end = t0 + latency_s
        timeline = job.timeline
        timeline.extend(
            _Event(t0 + queue_s * i / (self.queue_depth + 1), "IN_QUEUE", self.queue_depth - i)
            for i in range(self.queue_depth + 1)
        )
        if fault and fault.kind == "timeout_504":  # never got a runner: stays queued, then 504
            _drop_unstarted(job, run_end, "Request timed out", "startup_timeout")
            return
        start = t0 + queue_s
        mid = start + (run_end - start) / 2
        timeline.append(_Event(start, "IN_PROGRESS", logs=(_log("Starting generation", start),)))
        timeline.append(_Event(mid, "IN_PROGRESS", logs=(_log("Generating: 50%", mid),)))
        if fault and fault.kind == "fail_generation":
            job.error = (fault.message, fault.error_type)
            if fault.status_code == 422:
                body: dict[str, Any] = {
                    "detail": [{"loc": ["body", "prompt"], "msg": fault.message, "type": fault.error_type}]
                }
            else:
                body = {"detail": fault.message, "error_type": fault.error_type}
            job.failure = (fault.status_code, body, {"X-Fal-Error-Type": fault.error_type})
            timeline.append(_Event(run_end, "COMPLETED", logs=(_log(fault.message, run_end, "ERROR"),)))
        else:
            timeline.append(_Event(run_end, "COMPLETED", logs=(_log("Generation complete", run_end),)))

    def _register(self, job: Job, payload: Any) -> Job:
        with self._lock:
            self.jobs[job.id] = job
            self.stats.submits_by_payload[payload_hash(payload)] += 1
        return job

    def cancel_job(self, job: Job) -> bool:
        """Cancel if not completed: the job ends COMPLETED with an error now (result 499)."""
        with self._lock:
            now = time.monotonic()
            if job.completed(now):
                return False
            done = _Event(now, "COMPLETED", logs=(_log("Request cancelled", now, "WARN"),))
            # one assignment, so a reader sees either the old or the new timeline
            job.timeline = [*job.timeline[: job.index_at(now) + 1], done]
            job.cancelled = True
            message = "Request cancelled by the client"
            job.error = (message, "client_cancelled")
            job.failure = (
                499,
                {"detail": message, "error_type": "client_cancelled"},
                {"X-Fal-Error-Type": "client_cancelled"},
            )
        job.wake.set()
        return True

    def units_for(self, payload: Any) -> float | None:
        """Billable units of a successful generation of `payload` (the `billable_units` hook, or
        the payload's duration in seconds)."""
        if self.billable_units is not None:
            units = self.billable_units(payload)
            return None if units is None else float(units)
        return parse_duration(payload.get("duration") if isinstance(payload, dict) else None)

    def _settle_billing(self) -> None:
        """Bill every job whose generation has completed successfully by now (called on read)."""
        if self._billing_frozen:
            return
        now = time.monotonic()
        with self._lock:
            billed = self.stats._billed
            for job in self.jobs.values():
                if job.id not in billed and job.failure is None and job.completed(now):
                    billed[job.id] = job.units

    def output_for(self, job: Job, base: str) -> dict[str, Any]:
        """The result body of a successful job, with URLs on `base`."""
        return {
            "video": {
                "url": f"{base}/files/{job.id}.mp4",
                "content_type": "video/mp4",
                "file_name": f"{job.id}.mp4",
                "file_size": self.video_for(job).stat().st_size,
            },
            "seed": job.seed,
        }

    def history(
        self,
        endpoint_ids: list[str],
        start: datetime,
        end: datetime,
        base: str,
        status: str | None = None,
        request_id: str | None = None,
        payloads: bool = False,
    ) -> list[dict[str, Any]]:
        """The rows `/v1/models/requests/by-endpoint` lists, newest `sent_at` first.

        A job is listed once it has started (reached IN_PROGRESS) and `history_lag_s` more seconds
        have passed; jobs that never start (start-timeout drops, `timeout_504`, cancelled while
        queued) are never listed. `start` <= sent_at < `end`. `status` keeps completed rows whose
        status code is 2xx (success), 4xx (user_error) or 5xx (error). `ended_at`, `status_code`
        and `duration` (ended_at - sent_at, seconds) are null until it completes; `json_output`
        is the result body (the error body for a failed one), null until then."""
        now = time.monotonic()
        with self._lock:
            jobs = list(self.jobs.values())
        rows: list[tuple[float, dict[str, Any]]] = []
        for job in jobs:
            started = job.started_at
            if job.endpoint not in endpoint_ids or started is None or started + self.history_lag_s > now:
                continue
            if request_id is not None and job.id != request_id:
                continue
            sent = job.wall(job.timeline[0].at)
            if not start <= sent < end:
                continue
            done = job.completed(now)
            code = (job.failure[0] if job.failure else 200) if done else None
            if status is not None and (code is None or code not in _HISTORY_STATUS[status]):
                continue
            item: dict[str, Any] = {
                "request_id": job.id,
                "endpoint_id": job.endpoint,
                "sent_at": _iso(sent),
                "started_at": _iso(job.wall(started)),
                "ended_at": _iso(job.wall(job.ended_at)) if done else None,
                "status_code": code,
                "duration": round(job.ended_at - job.timeline[0].at, 3) if done else None,
            }
            if payloads:
                item["json_input"] = job.payload
                output = None
                if done:
                    output = job.failure[1] if job.failure else self.output_for(job, base)
                item["json_output"] = output
            rows.append((job.sent_wall, item))
        rows.sort(key=lambda r: (r[0], r[1]["request_id"]), reverse=True)
        return [item for _, item in rows]

    def issue_token(self) -> str:
        token = uuid.uuid4().hex
        with self._lock:
            self._tokens[token] = time.time() + self.token_ttl_s
        return token

    def token_valid(self, token: str) -> bool:
        with self._lock:
            return self._tokens.get(token, 0) > time.time()

    def video_for(self, job: Job) -> Path:
        """The MP4 served for `job`: the given file, or a generated one for the payload's duration."""
        if self.video:
            return self.video
        duration = parse_duration(job.payload.get("duration") if isinstance(job.payload, dict) else None)
        return clip_for(duration, self.video_size_bytes)

    def catalog(self) -> list[dict[str, Any]]:
        """Every schema document in schemas_dir, with its catalog metadata (loaded once)."""
        with self._catalog_lock:
            if self._catalog is None:
                self._catalog = _load_catalog(self.schemas_dir)
            return self._catalog

    def schema_path(self, endpoint_id: str) -> Path | None:
        if not self.schemas_dir or ".." in endpoint_id or "\\" in endpoint_id:
            return None
        path = self.schemas_dir / (endpoint_id.strip("/").replace("/", "__") + ".json")
        return path if path.is_file() and path.parent == self.schemas_dir else None


def _drop_unstarted(job: Job, at: float, detail: str, error_type: str) -> None:
    """End `job` at `at` before it ever started: fal's start timeout. COMPLETED with an error, the
    result 504 + `X-Fal-Request-Timeout-Type: user`; never billed, never in the history."""
    queued = [ev for ev in job.timeline if ev.status == "IN_QUEUE" and ev.at < at] or job.timeline[:1]
    job.timeline = [*queued, _Event(at, "COMPLETED", logs=(_log(detail, at, "ERROR"),))]
    job.error = (detail, error_type)
    job.failure = (
        504,
        {"detail": detail, "error_type": error_type},
        {"X-Fal-Request-Timeout-Type": "user", "X-Fal-Error-Type": error_type},
    )


def _load_catalog(schemas_dir: Path | None) -> list[dict[str, Any]]:
    if not schemas_dir or not schemas_dir.is_dir():
        return []
    meta_file = schemas_dir / "_catalog-metadata.json"  # a folder of fal's documents has one
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    snapshot = Snapshot(schemas_dir)  # a snapshot folder keeps the same facts in _sources.json
    models = []
    for path in sorted(schemas_dir.glob("*.json")):
        if path.name.startswith("_"):
            continue
        doc = json.loads(path.read_text())
        info = doc.get("info", {})
        fal_meta = info.get("x-fal-metadata", {})
        endpoint_id = fal_meta.get("endpointId") or path.stem.replace("__", "/")
        metadata = dict(
            meta.get(endpoint_id, {}).get("metadata")
            or snapshot.sources.get(endpoint_id, {}).get("metadata")
            or {
                "display_name": endpoint_id,
                "category": fal_meta.get("category"),
                "description": info.get("description", ""),
                "status": "active",
            }
        )
        models.append({"endpoint_id": endpoint_id, "metadata": metadata, "openapi": doc})
    return models


class _Handler(FakeHandler):
    """fal's routes on the shared plumbing (`FakeHandler`); PUT too, for cancel."""

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    # plumbing ---------------------------------------------------------------
    @property
    def fal(self) -> FakeFal:
        return self.server.fake  # type: ignore[no-any-return]

    def _begin(self) -> None:
        super()._begin()
        self._body_read = False

    def _drain_body(self) -> None:
        if not self._body_read:
            for _ in self._body_chunks():
                pass

    def _route(self, method: str, segs: list[str]) -> None:
        url = urlsplit(self.path)
        if segs[:2] == ["files", "upload"] and method == "POST":
            return self._upload()
        if segs[:2] == ["files", "up"] and len(segs) == 3 and method == "GET":
            return self._uploaded_file(segs[2])
        if segs[:1] == ["files"] and len(segs) == 2 and method == "GET":
            return self._download(segs[1])
        if segs == ["storage", "auth", "token"] and method == "POST":
            return self._token()
        if segs == ["api", "openapi", "queue", "openapi.json"] and method == "GET":
            return self._schema()
        if segs == ["v1", "models"] and method == "GET":
            return self._models()
        if segs == ["v1", "models", "requests", "by-endpoint"] and method == "GET":
            return self._history()
        if segs == ["v1", "models", "pricing"] and method == "GET":
            return self._pricing()
        if segs[:1] == ["v1"]:  # the platform API host: not an app, never a queue submit
            return self._platform_error(404, "not_found", f"Not found: {method} {url.path}")
        if "requests" in segs:
            i = segs.index("requests")
            return self._queue_op(method, segs[:i], segs[i + 1 :])
        if method == "POST" and len(segs) >= 2:
            return self._submit("/".join(segs))
        self._json(404, {"detail": f"Not found: {method} {self.path}"})

    def _body_chunks(self) -> Iterator[bytes]:
        """The request body, streamed (Content-Length or chunked)."""
        self._body_read = True
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                yield self.rfile.read(size)
                self.rfile.readline()
        yield from self._length_chunks()

    def _body(self) -> bytes:
        return b"".join(self._body_chunks())

    def _send(
        self,
        code: int,
        body: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
        request_id: str | None = "",
    ) -> None:
        # fal's gateway marks its responses with x-fal-request-id; ingress (nginx) does not
        marks = [] if request_id is None else [("x-fal-request-id", request_id or str(uuid.uuid4()))]
        self._respond(code, body, content_type, [*marks, *(headers or {}).items()])

    def _json(
        self, code: int, obj: Any, headers: Mapping[str, str] | None = None, request_id: str | None = ""
    ) -> None:
        self._send(code, json.dumps(obj).encode(), "application/json", headers, request_id)

    def _apply_fault(self, on: str, subject: str = "") -> Fault | None:
        """Count the call and apply a fault that replaces the response (raising `_Answered` or
        `_Reset`); return the others (slow, reset_after, truncate, fail_generation, …) to the caller."""
        f = self._take_fault(on, subject or self.path)
        if f is None or f.kind == "slow":
            return f  # type: ignore[no-any-return]
        if f.kind == "429":
            retry = {} if f.retry_after is None else {"Retry-After": str(f.retry_after)}
            if on in ("history", "pricing"):
                self._platform_error(429, "rate_limited", "Rate limit exceeded", retry)
                raise _Answered
            body = {"detail": "Too many requests", "error_type": "concurrent_requests_limit"}
            self._json(429, body, {"X-Fal-Needs-Retry": "1", **retry})
            raise _Answered
        elif f.kind.startswith("ingress_"):
            code = int(f.kind.split("_")[1])
            html = _NGINX_HTML.format(code=code, reason=self.responses.get(code, ("Error",))[0]).encode()
            self._send(code, html, "text/html", request_id=None)
            raise _Answered
        elif f.kind == "timeout_504" and on != "submit":
            self._json(
                504,
                {"detail": "Request timed out", "error_type": "request_timeout"},
                {"X-Fal-Request-Timeout-Type": "user", "X-Fal-Error-Type": "request_timeout"},
            )
            raise _Answered
        elif f.kind == "reset_before" or (f.kind == "reset" and on != "submit"):
            raise _Reset
        elif f.kind == "truncate" and on not in ("download", "stream"):
            raise _Reset
        elif f.kind in ("reset", "reset_after"):
            self._reset_after = True  # do the work, then lose the response
        return f

    def _require_key(self) -> None:
        header = self.headers.get("Authorization")
        if not header:
            self._json(401, {"detail": "Missing authorization header"})
            raise _Answered
        scheme, _, value = header.partition(" ")
        if scheme != "Key" or value.strip() != self.fal.key:
            self._json(403, {"detail": "Invalid API key"})
            raise _Answered

    def _platform_error(
        self, code: int, kind: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        """fal's Platform API (api.fal.ai/v1) error shape."""
        self._json(code, {"error": {"type": kind, "message": message}}, headers)

    def _require_platform_key(self) -> None:
        scheme, _, value = (self.headers.get("Authorization") or "").partition(" ")
        if scheme != "Key" or value.strip() != self.fal.key:
            message = "Invalid API key" if scheme else "Missing authorization header"
            self._platform_error(401, "authorization_error", message)
            raise _Answered

    def _invalid(self, message: str) -> None:
        self._platform_error(400, "validation_error", message)
        raise _Answered

    def _endpoint_ids(self) -> list[str]:
        """`endpoint_id`, comma-separated and/or repeated: 1-50 ids (else 400)."""
        ids: list[str] = []
        for value in self.query.get("endpoint_id", []):
            ids.extend(i.strip() for i in value.split(",") if i.strip() and i.strip() not in ids)
        if not ids:
            self._invalid("endpoint_id is required")
        if len(ids) > _MAX_IDS:
            self._invalid(f"endpoint_id takes at most {_MAX_IDS} ids, got {len(ids)}")
        return ids

    def _when(self, name: str, default: datetime) -> datetime:
        """An ISO-8601 date-time or YYYY-MM-DD query value (naive = UTC)."""
        text = self.query.get(name, [""])[-1].strip()
        if not text:
            return default
        text = re.sub(r" (\d{2}:?\d{2})$", r"+\1", text)  # an unencoded "+02:00" arrives as " 02:00"
        try:
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
                return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
            when = datetime.fromisoformat(text)
        except ValueError:
            self._invalid(f"{name} must be an ISO-8601 date-time or YYYY-MM-DD, got {text!r}")
        return when if when.tzinfo else when.replace(tzinfo=UTC)

    # platform APIs --------------------------------------------------------------
    def _history(self) -> None:
        """`GET /v1/models/requests/by-endpoint`: the caller's requests, newest `sent_at` first
        (fal's default sort is ended_at; `sort_by` is accepted and ignored here). See
        `FakeFal.history` for which requests are listed. The cursor is base64 of the page number
        (1-based: the second page is "Mg==")."""
        self._apply_fault("history")
        self._require_platform_key()
        q = self.query
        ids = self._endpoint_ids()
        status = q.get("status", [""])[-1] or None
        if status is not None and status not in _HISTORY_STATUS:
            self._invalid(f"status must be one of {sorted(_HISTORY_STATUS)}, got {status!r}")
        request_id = q.get("request_id", [""])[-1] or None
        if request_id is not None:
            try:
                request_id = str(uuid.UUID(request_id))
            except ValueError:
                self._invalid(f"request_id must be a UUID, got {request_id!r}")
        now = datetime.now(UTC)
        start = self._when("start", now - timedelta(days=90 if request_id else 1))
        end = self._when("end", now)
        expand = {e.strip() for value in q.get("expand", []) for e in value.split(",")}
        limit_text = q.get("limit", ["50"])[-1] or "50"
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= 100:
            self._invalid(f"limit must be an integer from 1 to 100, got {limit_text!r}")
        limit = int(limit_text)
        cursor = q.get("cursor", [""])[-1]
        page = 1
        if cursor:
            try:
                page = int(base64.b64decode(cursor, validate=True).decode())
            except ValueError:
                page = 0
            if page < 1:
                self._invalid(f"invalid cursor {cursor!r}")
        rows = self.fal.history(ids, start, end, self.base, status, request_id, "payloads" in expand)
        items = rows[(page - 1) * limit : page * limit]
        more = page * limit < len(rows)
        next_cursor = base64.b64encode(str(page + 1).encode()).decode() if more else None
        self._json(200, {"items": items, "next_cursor": next_cursor, "has_more": more})

    def _pricing(self) -> None:
        """`GET /v1/models/pricing`: unit prices of the asked ids that have one (others absent)."""
        self._apply_fault("pricing")
        self._require_platform_key()
        prices = [
            {"endpoint_id": i, "unit_price": price, "unit": unit, "currency": "USD"}
            for i in self._endpoint_ids()
            if i in self.fal.prices
            for price, unit in [self.fal.prices[i]]
        ]
        self._json(200, {"prices": prices, "next_cursor": None, "has_more": False})

    # queue ------------------------------------------------------------------
    def _submit(self, endpoint: str) -> None:
        raw = self._body()
        f = self._apply_fault("submit", f"/{endpoint} {raw.decode(errors='replace')}")
        self._require_key()
        start_timeout = None
        if (text := self.headers.get("X-Fal-Request-Timeout")) is not None:
            try:
                start_timeout = float(text)
            except ValueError:
                start_timeout = math.nan
            if not (math.isfinite(start_timeout) and start_timeout > 0.1):
                message = f"Invalid X-Fal-Request-Timeout {text!r}: must be a number of seconds > 0.1"
                self._json(
                    400, {"detail": message, "error_type": "bad_request"}, {"X-Fal-Error-Type": "bad_request"}
                )
                return
        try:
            payload: Any = json.loads(raw) if raw else {}
        except ValueError:
            payload = raw.decode(errors="replace")  # real fal accepts anything at submit
        recorded = {k: v for k, v in self.headers.items() if k.lower().startswith("x-fal-")}
        job = self.fal.create_job(endpoint, payload, recorded, f, start_timeout)
        body = job.status_body(0, self.base, None)
        del body["logs"]  # the submit response has no logs field
        self._json(200, body, request_id=job.id)

    def _queue_op(self, method: str, app_segs: list[str], rest: list[str]) -> None:
        n = 3 if app_segs[:1] and app_segs[0] in _THREE_SEGMENT_NAMESPACES else 2
        if len(app_segs) != n or not rest:  # real fal: 405 when the full endpoint path is used
            self.fal.count("status")
            self._json(405, {"detail": "Method Not Allowed"})
            return
        app, rid, op = "/".join(app_segs), rest[0], rest[1:]
        if method == "GET" and op == ["status"]:
            return self._status(app, rid)
        if method == "GET" and op == ["status", "stream"]:
            return self._stream(app, rid)
        if method == "GET" and op in ([], ["response"]):
            return self._result(app, rid)
        if method == "PUT" and op == ["cancel"]:
            return self._cancel(app, rid)
        self.fal.count("status")
        self._json(405, {"detail": "Method Not Allowed"})

    def _job(self, app: str, rid: str) -> Job:
        job = self.fal.jobs.get(rid)
        ttl, now = self.fal.result_ttl_s, time.monotonic()
        expired = (
            job is not None and ttl is not None and job.completed(now) and now > job.timeline[-1].at + ttl
        )
        if job is None or job.app != app or expired:
            self._json(404, {"status": "NOT_FOUND"})
            raise _Answered
        return job

    def _want_logs(self) -> bool:
        return self.query.get("logs", ["0"])[-1].lower() in ("1", "true")

    def _status(self, app: str, rid: str) -> None:
        self._apply_fault("status")
        self._require_key()
        job = self._job(app, rid)
        idx = job.index_at(time.monotonic())
        body = job.status_body(idx, self.base, job.logs_between(0, idx) if self._want_logs() else None)
        self._json(200 if body["status"] == "COMPLETED" else 202, body, request_id=job.id)

    def _stream(self, app: str, rid: str) -> None:
        f = self._apply_fault("stream")
        self._require_key()
        job = self._job(app, rid)
        if self._reset_after:
            raise _Reset
        self.close_connection = True  # the stream ends by closing (no Content-Length)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.send_header("x-fal-request-id", job.id)
        self.end_headers()
        stats, lock = self.fal.stats, self.fal._lock
        with lock:
            stats.open_streams += 1
            stats.max_open_streams = max(stats.max_open_streams, stats.open_streams)
        try:
            self._stream_events(job, self._want_logs(), truncate=f is not None and f.kind == "truncate")
        finally:
            with lock:
                stats.open_streams -= 1

    def _stream_events(self, job: Job, want_logs: bool, truncate: bool) -> None:
        last = -1
        next_keepalive = time.monotonic() + self.fal.keepalive_s
        while not self.fal._stopping.is_set():
            now = time.monotonic()
            idx = job.index_at(now)
            if idx != last:
                logs = job.logs_between(last + 1, idx) if want_logs else None  # stream: only new lines
                body = job.status_body(idx, self.base, logs)
                self.wfile.write(f"data: {json.dumps(body)}\n\n".encode())
                self.wfile.flush()
                last = idx
                if body["status"] == "COMPLETED" or truncate:
                    return
            if now >= next_keepalive:
                self.wfile.write(b": keepalive\n\n")
                self.wfile.flush()
                next_keepalive = now + self.fal.keepalive_s
            nxt = job.next_at(idx)
            wait = next_keepalive - now if nxt is None else min(nxt - now, next_keepalive - now)
            job.wake.wait(max(wait, 0.001))  # set by cancel and stop

    def _result(self, app: str, rid: str) -> None:
        self._apply_fault("result")
        self._require_key()
        job = self._job(app, rid)
        with self.fal._lock:
            job.result_calls += 1
        if not job.completed(time.monotonic()):
            self._json(400, {"detail": "Request is still in progress"}, request_id=job.id)
            return
        if job.failure:  # the model's own status and body, replayed; failures are not billed
            code, body, headers = job.failure
            self._json(code, body, {**headers, "x-fal-billable-units": "0"}, request_id=job.id)
            return
        units = {} if job.units is None else {"x-fal-billable-units": f"{job.units:g}"}
        self._json(200, self.fal.output_for(job, self.base), units, request_id=job.id)

    def _cancel(self, app: str, rid: str) -> None:
        self._apply_fault("cancel")
        self._require_key()
        job = self._job(app, rid)
        if self.fal.cancel_job(job):
            self._json(202, {"status": "CANCELLATION_REQUESTED"}, request_id=job.id)
        else:
            self._json(400, {"status": "ALREADY_COMPLETED"}, request_id=job.id)

    # storage ------------------------------------------------------------------
    def _token(self) -> None:
        self._apply_fault("token")
        self._require_key()
        self._body()
        expires = datetime.now(UTC) + timedelta(seconds=self.fal.token_ttl_s)
        self._json(
            200,
            {
                "token": self.fal.issue_token(),
                "token_type": "Bearer",
                "base_url": self.base,
                "expires_at": expires.isoformat(),
            },
        )

    def _upload(self) -> None:
        self._apply_fault("upload")
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        if scheme != "Bearer" or not self.fal.token_valid(token.strip()):
            self._json(401, {"detail": "Invalid or expired storage token"})
            return
        assert self.fal._tmp
        digest = hashlib.sha256()
        part = self.fal._tmp / "up" / f".part-{uuid.uuid4().hex}"
        with part.open("wb") as f:
            for chunk in self._body_chunks():
                digest.update(chunk)
                f.write(chunk)
        name = f"{digest.hexdigest()}.{_extension(self.headers)}"
        part.replace(self.fal._tmp / "up" / name)
        with self.fal._lock:
            self.fal.stats.uploads_by_hash[digest.hexdigest()] += 1
        self._json(200, {"access_url": f"{self.base}/files/up/{name}"})

    def _uploaded_file(self, name: str) -> None:
        self.fal.count("download")
        assert self.fal._tmp
        path = self.fal._tmp / "up" / name
        if not re.fullmatch(r"[0-9a-f]{64}\.[A-Za-z0-9]{1,8}", name) or not path.is_file():
            self._json(404, {"detail": "File not found"}, request_id=None)
            return
        self._send_file(path, mimetypes.guess_type(name)[0] or "application/octet-stream", truncate=False)

    def _download(self, name: str) -> None:
        f = self._apply_fault("download")
        job = self.fal.jobs.get(name.removesuffix(".mp4"))
        if job is None or job.failure or not job.completed(time.monotonic()):
            self._json(404, {"detail": "File not found"}, request_id=None)
            return
        self._send_file(self.fal.video_for(job), "video/mp4", truncate=f is not None and f.kind == "truncate")

    # discovery ----------------------------------------------------------------
    def _schema(self) -> None:
        self._apply_fault("schema")
        endpoint_id = self.query.get("endpoint_id", [""])[-1]
        path = self.fal.schema_path(endpoint_id)
        if path is None:
            self._json(404, {"detail": f"No OpenAPI document for endpoint_id={endpoint_id!r}"})
            return
        self._send(200, path.read_bytes(), "application/json")

    def _models(self) -> None:
        self._apply_fault("schema")
        q = self.query
        ids = set(q.get("endpoint_id", []))
        text = q.get("q", [""])[-1].lower()
        category, status = q.get("category", [""])[-1], q.get("status", [""])[-1]
        expand = "openapi-3.0" in q.get("expand", [])
        hits = []
        for m in self.fal.catalog():
            meta = m["metadata"]
            tags = meta.get("tags") or []
            words = [m["endpoint_id"], meta.get("display_name"), meta.get("description"), *tags]
            hay = " ".join(str(w) for w in words if w).lower()
            if (ids and m["endpoint_id"] not in ids) or (text and text not in hay):
                continue
            if (category and meta.get("category") != category) or (status and meta.get("status") != status):
                continue
            hits.append(
                {
                    "endpoint_id": m["endpoint_id"],
                    "metadata": meta,
                    **({"openapi": m["openapi"]} if expand else {}),
                }
            )
        limit = max(1, int(q.get("limit", ["50"])[-1] or 50))
        cursor = q.get("cursor", [""])[-1]
        start = int(base64.b64decode(cursor).decode()) if cursor else 0
        page, more = hits[start : start + limit], start + limit < len(hits)
        next_cursor = base64.b64encode(str(start + limit).encode()).decode() if more else None
        self._json(200, {"models": page, "next_cursor": next_cursor, "has_more": more})


def _extension(headers: Any) -> str:
    name = headers.get("X-Fal-File-Name") or ""
    ext = Path(name).suffix.lstrip(".")
    if not ext:
        guessed = mimetypes.guess_extension((headers.get("Content-Type") or "").split(";")[0].strip())
        ext = (guessed or ".bin").lstrip(".")
    return ext if re.fullmatch(r"[A-Za-z0-9]{1,8}", ext) else "bin"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Run a fake fal.ai server on loopback.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument(
        "--schemas",
        type=Path,
        help="folder of <endpoint id with / as __>.json OpenAPI docs (default: the bundled snapshot)",
    )
    p.add_argument("--latency", type=float, default=2.0, help="seconds from submit to COMPLETED")
    p.add_argument("--key", default="test-key")
    p.add_argument("--video-size", type=int, default=None, help="pad served MP4s to this many bytes")
    p.add_argument(
        "--history-lag", type=float, default=0.0, help="seconds before a started request is listed"
    )
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    fal = FakeFal(
        args.schemas,
        key=args.key,
        latency_s=args.latency,
        host=args.host,
        port=args.port,
        video_size_bytes=args.video_size,
        verbose=args.verbose,
        history_lag_s=args.history_lag,
    )
    fal.serve_until_interrupted("fake fal", f"key {args.key!r}")


if __name__ == "__main__":
    main()
