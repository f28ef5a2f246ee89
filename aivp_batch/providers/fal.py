"""fal.ai's queue protocol, and the Platform API calls a batch runner needs.

submit → (SSE status stream, or polling) → result → download, plus CDN uploads and cancel; from
the Platform API (`api_url`): unit prices (`/v1/models/pricing`, which also proves the key works)
and the request history (`/v1/models/requests/by-endpoint`), which finds a request whose submit
answer was lost.
Every base URL comes from the constructor so tests can point them all at a local `FakeFal`.

Retry rules, the money-relevant part (the loop, backoff and `Retry-After` are `aivp_batch.retry`;
the policy per call kind is data, `RETRY_KINDS`, spelled out in conf/provider/fal.yaml `retry:`;
which answers are transient is fal's error mapping, `transient_reason`):
- submit is retried only when fal surely never saw it (connect failure, 429). A read timeout,
  a reset after sending or a 5xx may hide an accepted (billed) request, so submit raises
  `TransientError` saying so and the runner records the job as unknown instead of resubmitting.
- status, stream, result, download, token, upload, cancel, pricing and history are idempotent
  reads or content-addressed writes: retried with exponential backoff + jitter, honouring
  `Retry-After`, on 429, 408, fal's ingress 502/503/504 (nginx HTML, no `x-fal-request-id`) and
  transport errors. The reads other than result also retry a 500/502/503/504 (as fal-js does
  for status polls) unless it is fal's start timeout. A result's non-2xx is the model's own
  answer replayed (422, 499, 504 start timeout…): final, never retried.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import mimetypes
import re
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import SSEError, aconnect_sse

from ..errors import AuthError, RequestFailed, SubmitNotAccepted, TransientError
from ..keys import HOW_TO_SET, redact
from ..media import sha256_file, sniff_bytes
from ..retry import (
    Attempt,
    GaveUp,
    Retryable,
    RetryableStatus,
    RetryPolicy,
    describe,
    policies,
    policy_for,
    retry_reason,
    retrying,
    send,
)
from .base import (
    Download,
    HistoryRow,
    Outcome,
    Provider,
    StatusCallback,
    StatusUpdate,
    Submission,
    UnitPrice,
    receive,
)
from .http_pool import ClientShards

log = logging.getLogger(__name__)

MISSING_KEY = f"no fal API key found; {HOW_TO_SET}"
MAX_SINGLE_UPLOAD = 100 * 1024 * 1024  # fal's multipart threshold; multipart is not implemented
_STREAM_OPENS = 3  # first open + two re-opens, then fall back to polling
_PRICING_BATCH = 50  # fal accepts 1–50 endpoint ids per pricing call
_HISTORY_PAGES = 50  # 5,000 rows: far more requests than one endpoint sees in a submit window

# fal's retry policy per call kind, over the shared numbers (aivp_batch.retry; fal.yaml's `retry:`
# spells the same out, and config wins). Which answers with these statuses are transient is fal's
# error mapping, `transient_reason`. Transport errors are retried on every kind; on submit only
# those that never sent the request.
_READ_RETRIES = (429, 408, 500, 502, 503, 504)
RETRY_KINDS: dict[str, dict[str, Any]] = {
    "submit": {"retry_on": (429,), "connect_only": True},  # may bill: only where fal surely never saw it
    "status": {"retry_on": _READ_RETRIES},  # status polls and the SSE stream
    "result": {"retry_on": (429, 408, 502, 503, 504)},  # a 5xx there is the app's answer unless ingress
    "download": {"retry_on": _READ_RETRIES},
    "token": {"retry_on": _READ_RETRIES},
    "upload": {"retry_on": _READ_RETRIES},  # content-addressed: a duplicate costs nothing
    "cancel": {"retry_on": _READ_RETRIES},
    "pricing": {"retry_on": _READ_RETRIES},  # the Platform API
    "history": {"retry_on": _READ_RETRIES},
}
RETRY_DEFAULTS: dict[str, Any] = {"max_retry_after_s": 60.0}  # where fal.yaml's numbers differ from retry's
_ANSWER_KINDS = ("submit", "result")  # calls whose 5xx (not the ingress's) is the app's own answer


def is_ingress_error(response: httpx.Response) -> bool:
    """A 502/503/504 from the nginx in front of fal (fal_client's test): the request never got in."""
    return (
        response.status_code in (502, 503, 504)
        and "x-fal-request-id" not in response.headers
        and "nginx" in response.text.lower()
    )


def transient_reason(response: httpx.Response, kind: str) -> str | None:
    """fal's error mapping (`aivp_batch.retry.Transient`): why `response` (body read) is a transient
    failure worth another try, or None where it is an answer. Asked only about statuses that the
    kind's policy retries: 429 and 408; fal's ingress 502/503/504 (the request never got in); any
    other 5xx unless it is an app's own answer (a submit's, a result replaying the model's) or fal's
    start timeout (`x-fal-request-timeout-type`), which are final."""
    code = response.status_code
    if code == 429:
        return "HTTP 429 (rate limited)"
    if code == 408:
        return "HTTP 408 (request timeout)"
    if is_ingress_error(response):
        return f"HTTP {code} from fal's ingress"
    if kind in _ANSWER_KINDS or "x-fal-request-timeout-type" in response.headers:
        return None
    return f"HTTP {code}"


def app_id(endpoint: str) -> str:
    """`owner/app` of an endpoint id (three segments under `workflows`/`comfy`), as fal's clients do."""
    endpoint = endpoint.strip("/")
    if "/" not in endpoint and (m := re.fullmatch(r"(\d+)-(.+)", endpoint)):
        endpoint = f"{m.group(1)}/{m.group(2)}"  # legacy "123-myapp"
    parts = endpoint.split("/")
    return "/".join(parts[: 3 if parts[0] in ("workflows", "comfy") else 2])


def failure_message(endpoint: str, response: httpx.Response, status: dict[str, Any] | None = None) -> str:
    """`<endpoint>: <code> <first detail msg> at <loc> (<type>)` from fal's two error shapes."""
    detail, error_type = "", None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        items = body.get("detail")
        if isinstance(items, list) and items and isinstance(items[0], dict):
            first = items[0]
            loc = ".".join(str(p) for p in first.get("loc") or [])
            detail = str(first.get("msg") or "") + (f" at {loc}" if loc else "")
            error_type = first.get("type")
            if len(items) > 1:
                detail += f" (+{len(items) - 1} more)"
        elif isinstance(items, str):
            detail, error_type = items, body.get("error_type")
        elif body.get("status"):
            detail = str(body["status"])
    if not detail and status:
        detail, error_type = str(status.get("error") or ""), error_type or status.get("error_type")
    if not detail:
        detail = response.reason_phrase or response.text[:200]
    error_type = error_type or response.headers.get("x-fal-error-type")
    message = f"{endpoint}: {response.status_code} {detail}" + (f" ({error_type})" if error_type else "")
    return " ".join(message.split())[:500]


class _Progress:
    """Turns status payloads into StatusUpdates (only on change, only new log lines) and timings."""

    def __init__(self, on_status: StatusCallback | None) -> None:
        self.on_status = on_status
        self.t0 = time.monotonic()
        self.started: float | None = None
        self.completed: float | None = None
        self._seen_logs: set[str] = set()
        self._last: tuple[str, int | None] | None = None

    def feed(self, data: dict[str, Any]) -> str:
        state = str(data.get("status"))
        position = data.get("queue_position") if state == "IN_QUEUE" else None
        new: list[str] = []
        # Polls repeat the full log list and streams send only new lines: dedupe either way.
        for entry in data.get("logs") or []:
            key = json.dumps(entry, sort_keys=True) if isinstance(entry, dict) else str(entry)
            if key not in self._seen_logs:
                self._seen_logs.add(key)
                new.append(str(entry.get("message", "")) if isinstance(entry, dict) else str(entry))
        now = time.monotonic()
        if state in ("IN_PROGRESS", "COMPLETED") and self.started is None:
            self.started = now
        if state == "COMPLETED":
            self.completed = now
        if (state, position) != self._last or new:
            self._last = (state, position)
            if self.on_status:
                self.on_status(StatusUpdate(state, position, tuple(new)))
        return state

    def timings(self) -> dict[str, float]:
        done = self.completed or time.monotonic()
        started = self.started or done
        return {"queued_s": round(started - self.t0, 3), "running_s": round(done - started, 3)}


class FalProvider(Provider):
    """fal.ai over its queue API, with httpx. Use as an async context manager."""

    name = "fal"

    def __init__(
        self,
        key: str | None,
        queue_url: str = "https://queue.fal.run",
        rest_url: str = "https://rest.fal.ai",
        cdn_url: str = "https://v3.fal.media",
        poll_interval: float = 2.0,
        start_timeout: float | None = None,
        client_timeout: float | None = None,
        use_stream: bool = True,
        retry: RetryPolicy | Mapping[str, Any] | None = None,
        max_in_flight: int = 50,
        api_url: str = "https://api.fal.ai",
        price_ttl_s: float = 3600.0,
    ) -> None:
        self._key = key
        self.api_url = api_url.rstrip("/")
        self.price_ttl_s = price_ttl_s
        self._prices: dict[str, UnitPrice] = {}
        self._prices_at = 0.0
        self._priced: tuple[str, ...] = ()
        self.queue_url = queue_url.rstrip("/")
        self.rest_url = rest_url.rstrip("/")
        self.cdn_url = cdn_url.rstrip("/")
        self.poll_interval = poll_interval
        self.start_timeout = start_timeout
        self.client_timeout = client_timeout
        self.use_stream = use_stream
        # Kind → RetryPolicy: config (fal.yaml's `retry:`), one RetryPolicy's numbers, or the defaults.
        self.retry = policies(RETRY_DEFAULTS if retry is None else retry, RETRY_KINDS)
        pool = max_in_flight + 4  # one connection per job in flight, a few spare for uploads and the token
        headers = {"User-Agent": "aivp-batch (fal queue client)"}
        tls = _tls_context()
        # pool=None: with many jobs in flight a request waits for a free connection, never fails for
        # it. Submits, results and downloads are brief: a few connections serve many jobs.
        self._http = ClientShards(
            pool, 16, verify=tls, headers=headers, timeout=httpx.Timeout(120.0, connect=30.0, pool=None)
        )
        # Streams hold a connection for a whole job, so they get their own pools and never starve
        # submits and downloads; when all stream slots are taken a wait polls instead.
        self._sse = ClientShards(
            pool, pool, verify=tls, headers=headers, timeout=httpx.Timeout(60.0, connect=30.0, pool=None)
        )
        self._stream_slots = asyncio.Semaphore(pool)
        self._token: tuple[str, str, float] | None = None  # (type, token, expires epoch)
        self._token_lock = asyncio.Lock()
        self._uploaded: dict[str, str] = {}
        self._upload_locks: dict[str, asyncio.Lock] = {}

    def __repr__(self) -> str:  # never the key
        return f"FalProvider(queue_url={self.queue_url!r}, key={'set' if self._key else 'missing'})"

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._sse.aclose()

    # ------------------------------------------------------------------ plumbing
    def _key_headers(self) -> dict[str, str]:
        if not self._key:
            raise AuthError(MISSING_KEY)
        return {"Authorization": f"Key {self._key}"}

    def _clean(self, text: str) -> str:
        return redact(text, [self._key])

    def _auth_error(self, response: httpx.Response) -> AuthError:
        return AuthError(f"fal rejected the API key (HTTP {response.status_code}); {HOW_TO_SET}")

    def _on_retry(self, kind: str) -> Callable[[Attempt], None]:
        def log_retry(attempt: Attempt) -> None:
            log.warning(
                self._clean(f"fal {kind}: {attempt.reason}; retry {attempt.number} in {attempt.delay_s:.2f}s")
            )

        return log_retry

    def _transient(self, response: httpx.Response, kind: str) -> str | None:
        """Why `response` (body read) is retried under `kind`'s policy and fal's mapping, or None."""
        return retry_reason(response, policy_for(self.retry, kind), kind, transient_reason)

    async def _send(self, kind: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request under `kind`'s policy and fal's error mapping; `GaveUp` (a transport error,
        or retries running out on a transient answer) is the caller's to map."""
        return await send(
            lambda: self._http.pick().request(method, url, **kwargs),
            policy_for(self.retry, kind),
            kind=kind,
            on_retry=self._on_retry(kind),
            transient=transient_reason,
            give_up_on_status=True,
        )

    async def _call(self, kind: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One idempotent request with transient failures retried; exhaustion → TransientError."""
        try:
            return await self._send(kind, method, url, **kwargs)
        except GaveUp as exc:
            raise TransientError(self._clean(_gave_up(url, exc))) from None

    def complete_urls(self, sub: Submission) -> Submission:
        """Fill URLs an old record lacks, from the app-only form fal's clients use for resuming."""
        if sub.status_url and sub.response_url and sub.cancel_url:
            return sub
        base = f"{self.queue_url}/{app_id(sub.endpoint)}/requests/{sub.request_id}"
        return replace(
            sub,
            status_url=sub.status_url or f"{base}/status",
            response_url=sub.response_url or base,
            cancel_url=sub.cancel_url or f"{base}/cancel",
        )

    def attach(self, data: dict[str, Any]) -> Submission:
        return self.complete_urls(Submission.from_dict(data))

    @property
    def upload_scope(self) -> str:
        return f"fal@{httpx.URL(self.cdn_url).netloc.decode()}"

    # ------------------------------------------------------------------ auth and prices
    async def check_auth(self, endpoints: Sequence[str] = ()) -> None:
        """Missing key → AuthError; else the pricing call, which checks the key (model search does
        not) and loads the unit prices of `endpoints` for the billed costs."""
        self._key_headers()
        self._priced = tuple(dict.fromkeys(e.strip("/") for e in endpoints)) or ("fal-ai/flux/dev",)
        try:
            await self._load_prices()
        except (TransientError, RequestFailed) as exc:
            # The Platform API is down, not the key: check the key on the storage host instead and
            # record estimates until prices can be had.
            log.warning(self._clean(f"fal pricing unavailable ({exc}); costs are recorded as estimates"))
            await self._storage_token()

    async def unit_price(self, endpoint: str) -> UnitPrice | None:
        if time.monotonic() - self._prices_at > self.price_ttl_s:
            try:
                await self._load_prices()
            except (TransientError, RequestFailed) as exc:  # keep the prices we have
                log.warning(self._clean(f"fal pricing refresh failed: {exc}"))
        return self._prices.get(endpoint.strip("/"))

    async def _load_prices(self) -> None:
        prices: dict[str, UnitPrice] = {}
        for i in range(0, len(self._priced), _PRICING_BATCH):
            batch = ",".join(self._priced[i : i + _PRICING_BATCH])
            data = await self._platform_get("pricing", "/v1/models/pricing", {"endpoint_id": batch})
            for item in data.get("prices") or []:
                try:
                    prices[str(item["endpoint_id"])] = UnitPrice(
                        float(item["unit_price"]),
                        str(item.get("unit") or ""),
                        str(item.get("currency") or ""),
                    )
                except (KeyError, TypeError, ValueError):
                    continue  # one malformed row must not hide the others
        self._prices, self._prices_at = prices, time.monotonic()

    async def _platform_get(self, kind: str, path: str, params: dict[str, str]) -> dict[str, Any]:
        response = await self._call(
            kind, "GET", self.api_url + path, params=params, headers=self._key_headers()
        )
        if response.status_code in (401, 403):
            raise self._auth_error(response)
        if not response.is_success:
            raise RequestFailed(
                self._clean(f"fal {kind}: {_platform_error(response)}"), status_code=response.status_code
            )
        try:
            data = response.json()
        except ValueError:
            raise RequestFailed(f"fal {kind}: the answer is not JSON") from None
        if not isinstance(data, dict):
            raise RequestFailed(f"fal {kind}: unexpected answer")
        return data

    # ------------------------------------------------------------------ request history
    async def history(self, endpoint: str, since: float) -> list[HistoryRow]:
        """Every request to `endpoint` fal lists since `since`, with its stored input and output.
        fal may filter on completion time, so ask from `since` to now and let the caller match
        `sent_at`; paging is by page number, so rows can shift between pages: dedupe on the id."""
        endpoint = endpoint.strip("/")
        params = {"endpoint_id": endpoint, "start": _iso(since), "expand": "payloads", "limit": "100"}
        rows: dict[str, HistoryRow] = {}
        for _ in range(_HISTORY_PAGES):
            data = await self._platform_get("history", "/v1/models/requests/by-endpoint", params)
            for item in data.get("items") or []:
                row = _history_row(item)
                if row is not None:
                    rows[row.request_id] = row
            cursor = data.get("next_cursor")
            if not data.get("has_more") or not cursor:
                break
            params = {**params, "cursor": str(cursor)}
        return list(rows.values())

    # ------------------------------------------------------------------ submit
    async def submit(self, endpoint: str, payload: dict[str, Any]) -> Submission:
        endpoint = endpoint.strip("/")
        headers = self._key_headers()
        if self.start_timeout is not None:
            headers["X-Fal-Request-Timeout"] = f"{self.start_timeout:g}"

        def not_accepted(reason: str, attempts: int) -> SubmitNotAccepted:
            return SubmitNotAccepted(
                self._clean(
                    f"{endpoint}: submit not accepted ({reason}) after {attempts} attempts; "
                    "nothing was queued"
                )
            )

        unknown = f"{endpoint}: submit outcome unknown, fal may have accepted (and billed) the request"
        try:
            response = await self._send(
                "submit", "POST", f"{self.queue_url}/{endpoint}", json=payload, headers=headers
            )
        except GaveUp as exc:
            # Retries ran out on a connection that never opened, or on 429s: fal queued nothing.
            if exc.never_sent or exc.status_code == 429:
                raise not_accepted(describe(exc.error), exc.attempts) from None
            raise TransientError(self._clean(f"{unknown} ({describe(exc.error)})")) from None
        code = response.status_code
        if code in (401, 403):
            raise self._auth_error(response)
        if code == 429:  # only where config stops retrying it: refused all the same
            raise not_accepted(transient_reason(response, "submit") or f"HTTP {code}", 1)
        if code >= 500 or code == 408:
            raise TransientError(self._clean(f"{unknown} (HTTP {code})"))
        if code >= 400:
            raise RequestFailed(
                self._clean(f"submit rejected: {failure_message(endpoint, response)}"), status_code=code
            )
        try:
            data = response.json()
            request_id = str(data["request_id"])
        except (ValueError, KeyError, TypeError):
            raise TransientError(f"{unknown} (HTTP {code} without a request id)") from None
        return self.complete_urls(
            Submission(
                request_id=request_id,
                endpoint=endpoint,
                status_url=data.get("status_url"),
                response_url=data.get("response_url"),
                cancel_url=data.get("cancel_url"),
            )
        )

    # ------------------------------------------------------------------ wait
    async def wait(self, submission: Submission, on_status: StatusCallback | None = None) -> Outcome:
        sub = self.complete_urls(submission)
        return await self._within_client_timeout(sub, self._wait(sub, on_status), "request")

    async def _wait(self, sub: Submission, on_status: StatusCallback | None) -> Outcome:
        progress = _Progress(on_status)
        status: dict[str, Any] | None = None
        if self.use_stream and not self._stream_slots.locked():
            async with self._stream_slots:
                status = await self._stream_until_completed(sub, progress)
        if status is None:
            status = await self._poll_until_completed(sub, progress)
        return await self._result(sub, status, progress)

    async def _stream_until_completed(self, sub: Submission, progress: _Progress) -> dict[str, Any] | None:
        """The SSE status stream; None when it keeps failing (the caller polls instead)."""
        for attempt in range(1, _STREAM_OPENS + 1):
            retry_after = None
            try:
                final = await self._stream_once(sub, progress)
                if final is not None:
                    return final
                reason = "stream closed before COMPLETED"
            except Retryable as exc:
                reason, retry_after = exc.reason, exc.retry_after
            except _StreamUnusable as exc:
                log.info(self._clean(f"fal stream for {sub.request_id} unusable ({exc}); polling"))
                return None
            except (httpx.TransportError, SSEError, ValueError) as exc:
                reason = describe(exc)
            log.info(
                self._clean(f"fal stream for {sub.request_id}: {reason} (open {attempt}/{_STREAM_OPENS})")
            )
            if attempt < _STREAM_OPENS:
                await asyncio.sleep(policy_for(self.retry, "status").delay(attempt, retry_after))
        return None

    async def _stream_once(self, sub: Submission, progress: _Progress) -> dict[str, Any] | None:
        url = f"{sub.status_url}/stream"
        async with aconnect_sse(
            self._sse.pick(), "GET", url, params={"logs": "1"}, headers=self._key_headers()
        ) as es:
            response = es.response
            if response.status_code != 200:
                await response.aread()
                if response.status_code in (401, 403):
                    raise self._auth_error(response)
                if (reason := self._transient(response, "status")) is not None:
                    raise RetryableStatus(response, reason)
                raise _StreamUnusable(f"HTTP {response.status_code}")
            async for event in es.aiter_sse():
                if not event.data:
                    continue
                data = json.loads(event.data)
                if progress.feed(data) == "COMPLETED":
                    return data
        return None

    async def _poll_until_completed(self, sub: Submission, progress: _Progress) -> dict[str, Any]:
        assert sub.status_url
        while True:
            response = await self._call(
                "status", "GET", sub.status_url, params={"logs": "1"}, headers=self._key_headers()
            )
            code = response.status_code
            if code in (401, 403):
                raise self._auth_error(response)
            if code == 404:
                raise RequestFailed(
                    f"{sub.endpoint}: request {sub.request_id} not found at fal "
                    "(wrong id, or its result expired)",
                    request_id=sub.request_id,
                    status_code=404,
                )
            if code not in (200, 202):
                raise RequestFailed(
                    self._clean(failure_message(sub.endpoint, response)),
                    request_id=sub.request_id,
                    status_code=code,
                )
            try:
                data = response.json()
            except ValueError:
                raise TransientError(f"{sub.endpoint}: unreadable status for {sub.request_id}") from None
            if progress.feed(data) == "COMPLETED":
                return data
            await asyncio.sleep(self.poll_interval)

    async def _result(self, sub: Submission, status: dict[str, Any], progress: _Progress) -> Outcome:
        # Fetched even when the status carries `error`: the result holds the model's real answer.
        assert sub.response_url
        response = await self._call("result", "GET", sub.response_url, headers=self._key_headers())
        code = response.status_code
        if code in (401, 403):
            raise self._auth_error(response)
        if not response.is_success:
            raise RequestFailed(
                self._clean(failure_message(sub.endpoint, response, status)),
                request_id=sub.request_id,
                status_code=code,
            )
        try:
            output = response.json()
            video_url = output["video"]["url"]
        except (ValueError, KeyError, TypeError):
            raise RequestFailed(
                f"{sub.endpoint}: result of {sub.request_id} has no video.url",
                request_id=sub.request_id,
                status_code=code,
            ) from None
        seed = output.get("seed")
        units = _billable_units(response)
        timings = progress.timings()
        inference = (status.get("metrics") or {}).get("inference_time")
        if isinstance(inference, int | float):
            timings["inference_s"] = float(inference)
        return Outcome(
            output=output,
            video_url=str(video_url),
            seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
            billed_units=units,
            timings=timings,
        )

    # ------------------------------------------------------------------ files
    async def download(self, url: str, dest: Path) -> Download:
        """Stream `url` into `dest`, hashing it on the way; a broken transfer restarts the file."""
        policy = policy_for(self.retry, "download")

        async def once() -> Download:
            # No Authorization header: output media URLs are public, and the key must not leak to a CDN.
            async with self._http.pick().stream("GET", url) as response:
                if not response.is_success:
                    await response.aread()
                    if (reason := self._transient(response, "download")) is not None:
                        raise RetryableStatus(response, reason)
                    raise RequestFailed(
                        f"download of {url} failed: HTTP {response.status_code}",
                        status_code=response.status_code,
                    )
                return await receive(response, dest)

        try:
            async for attempt in retrying(policy, "download", on_retry=self._on_retry("download")):
                with attempt:
                    size = await once()
        except (Retryable, httpx.TransportError) as exc:
            raise TransientError(
                f"download of {url} failed after {policy.attempts} attempts: {describe(exc)}"
            ) from None
        return size

    async def upload(self, path: Path) -> str:
        """Upload once per content hash; concurrent callers of the same content share one upload."""
        digest = await asyncio.to_thread(sha256_file, path)
        lock = self._upload_locks.setdefault(digest, asyncio.Lock())
        async with lock:
            if digest not in self._uploaded:
                self._uploaded[digest] = await self._upload_file(path)
            return self._uploaded[digest]

    async def _upload_file(self, path: Path) -> str:
        size = path.stat().st_size
        if size > MAX_SINGLE_UPLOAD:
            raise RequestFailed(
                f"{path.name}: {size} bytes is over fal's single-upload limit "
                f"({MAX_SINGLE_UPLOAD} bytes); multipart upload is not supported"
            )
        data = await asyncio.to_thread(path.read_bytes)  # ≤ 100 MiB, usually a frame image
        # What the bytes are, not what the name says (a JPEG named .png is sent as image/jpeg).
        content_type = sniff_bytes(data) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        for refresh in (False, True):
            token_type, token = await self._storage_token(refresh=refresh)
            headers = {
                "Authorization": f"{token_type} {token}",
                "Content-Type": content_type,
                "X-Fal-File-Name": path.name,
            }
            response = await self._call(
                "upload", "POST", f"{self.cdn_url}/files/upload", content=data, headers=headers
            )
            if response.status_code not in (401, 403):
                break  # else the cached token was revoked or expired early: fetch a new one once
        if response.status_code in (401, 403):
            raise AuthError(
                f"fal storage refused the upload token (HTTP {response.status_code}); {HOW_TO_SET}"
            )
        if not response.is_success:
            raise RequestFailed(
                self._clean(f"upload of {path.name} failed: {failure_message('fal storage', response)}"),
                status_code=response.status_code,
            )
        try:
            return str(response.json()["access_url"])
        except (ValueError, KeyError, TypeError):
            raise RequestFailed(f"upload of {path.name}: fal storage answered without access_url") from None

    async def _storage_token(self, refresh: bool = False) -> tuple[str, str]:
        """The CDN token, cached until shortly before its `expires_at`."""
        async with self._token_lock:
            if self._token and not refresh and self._token[2] > time.time() + 30:
                return self._token[0], self._token[1]
            response = await self._call(
                "token",
                "POST",
                f"{self.rest_url}/storage/auth/token",
                params={"storage_type": "fal-cdn-v3"},
                json={},
                headers=self._key_headers(),
            )
            if response.status_code in (401, 403):
                raise self._auth_error(response)
            if not response.is_success:
                raise RequestFailed(
                    self._clean(f"storage token: {failure_message('fal', response)}"),
                    status_code=response.status_code,
                )
            data = response.json()
            try:
                expires = datetime.fromisoformat(str(data["expires_at"]).replace("Z", "+00:00")).timestamp()
            except (KeyError, ValueError):
                expires = time.time() + 600  # unknown expiry: reuse it briefly
            self._token = (str(data.get("token_type") or "Bearer"), str(data["token"]), expires)
            return self._token[0], self._token[1]

    # ------------------------------------------------------------------ cancel
    async def cancel(self, submission: Submission) -> None:
        """PUT cancel; 2xx (requested), 400 (already completed) and 404 (unknown) are all fine."""
        sub = self.complete_urls(submission)
        assert sub.cancel_url
        response = await self._call("cancel", "PUT", sub.cancel_url, headers=self._key_headers())
        code = response.status_code
        if response.is_success or code in (400, 404):
            return
        if code in (401, 403):
            raise self._auth_error(response)
        raise RequestFailed(
            self._clean(f"cancel of {sub.request_id}: {failure_message(sub.endpoint, response)}"),
            request_id=sub.request_id,
            status_code=code,
        )


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One CA bundle load per process (~70 ms each); SSLContext is safe to share between clients."""
    return httpx.create_ssl_context()


class _StreamUnusable(Exception):
    """The stream endpoint answered with a non-transient error: poll instead of re-opening."""


def _billable_units(response: httpx.Response) -> float | None:
    """`x-fal-billable-units`: what fal charges for, in the endpoint's billing unit (the output's
    real size, e.g. 3.008 s of audio for a 3 s request): recorded as sent, never recomputed."""
    try:
        units = float(response.headers.get("x-fal-billable-units", ""))
    except ValueError:
        return None
    return units if units >= 0 else None


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _epoch(value: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _history_row(item: Any) -> HistoryRow | None:
    if not isinstance(item, dict) or not item.get("request_id"):
        return None
    sent_at = _epoch(item.get("sent_at"))
    if sent_at is None:
        return None
    code = item.get("status_code")
    return HistoryRow(
        request_id=str(item["request_id"]),
        endpoint=str(item.get("endpoint_id") or ""),
        sent_at=sent_at,
        json_input=item.get("json_input"),
        json_output=item.get("json_output"),
        status_code=code if isinstance(code, int) else None,
    )


def _platform_error(response: httpx.Response) -> str:
    """fal's Platform API error shape: `{"error": {"type", "message"}}`."""
    try:
        error = response.json().get("error") or {}
        return f"HTTP {response.status_code} {error.get('type', '')}: {error.get('message', '')}".strip(": ")
    except (ValueError, AttributeError):
        return f"HTTP {response.status_code}"


def _gave_up(url: str, exc: GaveUp) -> str:
    """`fal token: cannot reach https://rest.fal.ai (connection refused) after 8 attempts over 61 s`."""
    tries, error = exc.attempts, exc.error
    spent = f"after {tries} attempt{'s' if tries != 1 else ''} over {_duration(exc.elapsed_s)}"
    if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
        return f"fal {exc.kind}: cannot reach {_origin(url)} ({describe(error)}) {spent}"
    if isinstance(error, httpx.TransportError):
        return f"fal {exc.kind} failed {spent}: {_origin(url)}: {describe(error)}"
    return f"fal {exc.kind} failed {spent}: {describe(error)}"


def _origin(url: str) -> str:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return url
    return f"{parsed.scheme}://{parsed.host}" + (f":{parsed.port}" if parsed.port else "")


def _duration(seconds: float) -> str:
    return f"{seconds:.{2 if seconds < 1 else 1 if seconds < 10 else 0}f} s"
