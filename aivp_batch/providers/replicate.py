"""Replicate's HTTP API: create a prediction, poll it, download its output, cancel, reconcile.

Endpoints are Replicate model ids: `owner/name` runs the official model
(`POST /v1/models/{owner}/{name}/predictions`); `owner/name:<version id>` pins a version
(`POST /v1/predictions` with `version`). Either way the version that ran is recorded on the
`ReplicateSubmission` (and in the outcome's `output`): the pinned id, the id the prediction
reports, or, where an official model reports `hidden`, the model's `latest_version.id` read at
submit time. No `Prefer: wait` (video takes minutes): `urls.get` is polled until `succeeded`,
`failed`, `canceled` or `aborted`. `cancel_after` (a tier's or the provider's deadline) is sent
as `Cancel-After`: Replicate aborts (unbilled) a prediction not started by then and cancels one
still running.

Retry rules (policy as data, `aivp_batch.retry`, kinds `create` / `get` / `upload` / `download`
/ `cancel`): GETs retry 429, 5xx and transport errors; the create POST only a 429 (`Retry-After`,
then the body's `retry_after`) or a connection that never opened. A create that timed out, was
reset or answered 5xx may have created (and billed) a prediction: it raises `TransientError` and
the runner reconciles it through `history` (`GET /v1/predictions?created_after=`), matching the
exact input and model/version, instead of creating again. Every HTTP failure becomes one of our
exceptions in one place: `ReplicateProvider.error`.

Files: local inputs go up once per content sha256 (`POST /v1/files`, the file's `urls.get` is
the input value), or inline as a data URL up to `data_url_max_bytes` (Replicate: ≤ 256 KB).
Outputs (a URL string for every video model; lists and dicts are normalised) are downloaded at
once: Replicate deletes API outputs about an hour after completion.

Validation: `fetch_schema(endpoint)` returns the version's `openapi_schema` (a Cog OpenAPI 3.0
document). Validate a payload against `components.schemas.Input` with the *whole* document as
the `$ref` root (enums sit behind `allOf: [{$ref}]`) and `nullable` rewritten; the project's
`EndpointSchema` does exactly that once `endpoint_document` has pointed the endpoint's request
body at `Input` (Cog's own `/predictions` body is `PredictionRequest`, which it cannot root on).
A run gets its documents that way through `schema_sources.ReplicateSchemaSource` (the provider
config's `schema_source`), cached like fal's.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import logging
import mimetypes
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import httpx

from ..errors import (
    AuthError,
    ProviderError,
    RequestFailed,
    SchemaUnavailable,
    SubmitNotAccepted,
    TransientError,
)
from ..keys import how_to_set, redact
from ..media import sha256_file, sniff_bytes
from ..retry import (
    GaveUp,
    Retryable,
    RetryableStatus,
    describe,
    policies,
    policy_for,
    retrying,
    send,
)
from .base import (
    ClipSink,
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

DEFAULT_BASE_URL = "https://api.replicate.com"
KEY_ENV = "REPLICATE_API_TOKEN"
MISSING_KEY = f"no Replicate API token found; {how_to_set(KEY_ENV)}"
TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})
DATA_URL_MAX_BYTES = 256 * 1024  # Replicate: data URLs for files <= 256 KB, which it does not store
MAX_FILE_BYTES = 100 * 1024 * 1024  # the files API: "Files must be less than 100MB in size"
_STATES = {"starting": "IN_QUEUE", "processing": "IN_PROGRESS"}  # anything terminal: COMPLETED
_VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".m4v", ".mkv")
_HISTORY_PAGES = 50  # 5,000 predictions: far more than one submit window holds
_MODEL_ID = re.compile(r"([A-Za-z0-9][\w.-]*)/([A-Za-z0-9][\w.-]*)(?::([A-Za-z0-9][\w.-]*))?")
_SEED_LOG = re.compile(r"(?im)^\s*(?:using\s+)?(?:random\s+)?seed\s*[:=]\s*(-?\d+)")
_TRUSTED_OUTPUT_HOST = "replicate.delivery"  # the token goes to the API host and here, nowhere else


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class ReplicateSubmission(Submission):
    """A created prediction. Adds what `Submission` has no field for: the version that ran (for
    reproducibility) and where that fact came from (`pinned`, `prediction`, or
    `model latest_version` when an official model reports `hidden`)."""

    version: str | None = None
    version_source: str | None = None
    created_at: str | None = None
    web_url: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReplicateSubmission:
        return cls(**{f.name: data.get(f.name) for f in fields(cls)})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class InputRejected(RequestFailed):
    """422 "Input validation failed": `invalid_fields` as Replicate sent them."""

    def __init__(self, message: str, invalid_fields: list[dict[str, Any]], **kw: Any) -> None:
        super().__init__(message, status_code=422, **kw)
        self.invalid_fields = invalid_fields


class ModelRef(NamedTuple):
    owner: str
    name: str
    version: str | None

    @property
    def model(self) -> str:
        return f"{self.owner}/{self.name}"


def parse_endpoint(endpoint: str) -> ModelRef:
    """`owner/name` or `owner/name:<version id>` → ModelRef; RequestFailed for anything else."""
    m = _MODEL_ID.fullmatch(endpoint.strip().strip("/"))
    if not m:
        raise RequestFailed(
            f"{endpoint!r} is not a Replicate model id "
            "(owner/name, or owner/name:<version id> to pin a version)"
        )
    return ModelRef(m.group(1), m.group(2), m.group(3))


def endpoint_document(openapi_schema: Mapping[str, Any], endpoint: str) -> dict[str, Any]:
    """A copy of a Cog `openapi_schema` whose `paths["/<endpoint>"]` POST body is
    `#/components/schemas/Input`, so `openapi.EndpointSchema(endpoint, doc)` validates against
    `Input` with the whole document (all of `components.schemas`) as the `$ref` root, rewrites
    OpenAPI-3.0 `nullable`, and reports undeclared keys — the same validator as fal's."""
    doc = copy.deepcopy(dict(openapi_schema))
    body = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Input"}}}}
    doc.setdefault("paths", {})["/" + endpoint.strip("/")] = {"post": {"requestBody": body}}
    return doc


def output_urls(output: Any) -> list[str]:
    """Every URL in a prediction's output, in order: `str` → [str], lists flattened, dict values
    walked. Only `http(s):` and `data:` strings count."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            if value.startswith(("https://", "http://", "data:")):
                found.append(value)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)
        elif isinstance(value, Mapping):
            for item in value.values():
                walk(item)

    walk(output)
    return list(dict.fromkeys(found))


def pick_video(urls: Sequence[str]) -> str | None:
    """The first URL that looks like a video (by suffix or data URL type), else the first one."""
    for url in urls:
        if url.startswith("data:video/") or urlsplit(url).path.lower().endswith(_VIDEO_SUFFIXES):
            return url
    return urls[0] if urls else None


def cancel_after_header(seconds: float) -> str:
    """Seconds → Replicate's duration syntax (`90s`, `1.5s`); Replicate's minimum is 5 s."""
    return f"{seconds:g}s"


def _epoch(value: Any) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def problem_detail(response: httpx.Response) -> str:
    """One line from Replicate's problem+json (`title: detail`), else the reason phrase."""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict):
        title, detail = body.get("title"), body.get("detail")
        lines = [ln.strip().lstrip("- ").strip() for ln in str(detail or "").splitlines() if ln.strip()]
        text = "; ".join(lines)
        if title and text:
            return f"{title}: {text}"
        if title or text:
            return str(title or text)
    if "html" not in response.headers.get("content-type", "") and response.text.strip():
        return " ".join(response.text.split())[:200]
    return response.reason_phrase or f"HTTP {response.status_code}"


def _transport_words(exc: httpx.TransportError) -> str:
    return {
        httpx.ConnectError: "connection failed",
        httpx.ConnectTimeout: "connection timed out",
        httpx.ReadTimeout: "no answer in time",
        httpx.WriteTimeout: "sending timed out",
        httpx.PoolTimeout: "no free connection in time",
        httpx.RemoteProtocolError: "the server broke the connection",
        httpx.ReadError: "the connection broke while reading the answer",
    }.get(type(exc), describe(exc))


# --------------------------------------------------------------------------- progress


class _Progress:
    """Prediction JSON → StatusUpdates (on a change of state or new log lines)."""

    def __init__(self, on_status: StatusCallback | None) -> None:
        self.on_status = on_status
        self._logs = ""
        self._last: str | None = None

    def feed(self, data: Mapping[str, Any]) -> bool:
        """True when something changed."""
        status = str(data.get("status"))
        state = _STATES.get(status, "COMPLETED" if status in TERMINAL else "IN_QUEUE")
        logs = data.get("logs") if isinstance(data.get("logs"), str) else ""
        new_text = logs[len(self._logs) :] if logs.startswith(self._logs) else logs
        self._logs = logs
        new = tuple(line for line in new_text.splitlines() if line.strip())
        if state == self._last and not new:
            return False
        self._last = state
        if self.on_status:
            self.on_status(StatusUpdate(state, None, new))
        return True


# --------------------------------------------------------------------------- provider


class ReplicateProvider(Provider):
    """Replicate over its HTTP API with httpx. Use as an async context manager."""

    name = "replicate"

    def __init__(
        self,
        key: str | None,
        base_url: str = DEFAULT_BASE_URL,
        poll_interval: float = 2.0,
        poll_max_s: float = 10.0,
        retry: Any = None,
        max_in_flight: int = 8,
        cancel_after: float | None = None,
        client_timeout: float | None = None,
        data_url_max_bytes: int = DATA_URL_MAX_BYTES,
        timeout_s: float = 60.0,
        record_version: bool = True,
    ) -> None:
        self._key = key
        self.base_url = base_url.rstrip("/")
        self.poll_interval = poll_interval
        self.poll_max_s = max(poll_max_s, poll_interval)
        self.retry = policies(retry)
        self.cancel_after = cancel_after
        # For the runner's reconciliation: a created prediction is listed at once, whatever its
        # status (an aborted one too), so one absent after this deadline (plus the runner's margin)
        # was never created. Without a Cancel-After nothing bounds it: a lost create stays unknown.
        self.start_timeout = cancel_after
        self.client_timeout = client_timeout
        self.data_url_max_bytes = data_url_max_bytes
        self.record_version = record_version
        pool = max(max_in_flight, 1) + 4  # one connection per job in flight, a few spare for uploads
        # Sharded (providers.http_pool): with hundreds of jobs polling, one pool's scans would cost
        # O(in flight) per request. pool=None: a request waits for a free connection, never fails for it.
        self._http = ClientShards(
            pool,
            pool,
            headers={"User-Agent": "aivp-batch (replicate client)"},
            timeout=httpx.Timeout(timeout_s, connect=15.0, pool=None),
        )
        self._models: dict[str, dict[str, Any]] = {}
        self._model_locks: dict[str, asyncio.Lock] = {}
        self._uploaded: dict[str, tuple[str, float]] = {}  # sha256 → (url, expires epoch)
        self._upload_locks: dict[str, asyncio.Lock] = {}

    def __repr__(self) -> str:  # never the token
        return f"ReplicateProvider(base_url={self.base_url!r}, key={'set' if self._key else 'missing'})"

    async def aclose(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------------ plumbing
    @property
    def upload_scope(self) -> str:
        return f"replicate@{urlsplit(self.base_url).netloc}"

    def _auth(self) -> dict[str, str]:
        if not self._key:
            raise AuthError(MISSING_KEY)
        return {"Authorization": f"Bearer {self._key}"}

    def _clean(self, text: str) -> str:
        return redact(text, [self._key])

    def _api(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def _same_origin(self, url: str) -> bool:
        a, b = urlsplit(url), urlsplit(self.base_url)
        return (a.scheme, a.netloc) == (b.scheme, b.netloc)

    def _token_for(self, url: str) -> dict[str, str]:
        """The Authorization header for `url` only if it is the API host or replicate.delivery."""
        host = (urlsplit(url).hostname or "").lower()
        trusted = (
            self._same_origin(url)
            or host == _TRUSTED_OUTPUT_HOST
            or host.endswith("." + _TRUSTED_OUTPUT_HOST)
        )
        return self._auth() if trusted and self._key else {}

    async def _call(self, kind: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request under `kind`'s policy (GaveUp propagates for the caller to map)."""

        def on_retry(attempt: Any) -> None:
            log.warning(
                self._clean(
                    f"replicate {kind}: {attempt.reason}; retry {attempt.number} in {attempt.delay_s:.2f}s"
                )
            )

        return await send(
            lambda: self._http.pick().request(method, url, **kwargs),
            policy_for(self.retry, kind),
            kind=kind,
            on_retry=on_retry,
        )

    def error(
        self,
        what: str,
        response: httpx.Response | None = None,
        gave_up: GaveUp | None = None,
        *,
        create: bool = False,
        download: bool = False,
        request_id: str | None = None,
    ) -> ProviderError:
        """The one place an HTTP outcome becomes one of our exceptions.

        download=True: an output URL (signed, no token needed): 401/403/404/410 there mean the
        output has expired, not that the token is wrong.

        create=True: the call may have created (and so billed) a prediction. There a 429 or a
        connection that never opened is `SubmitNotAccepted` (safe to create again); a 5xx, a
        timeout or a reset after sending is `TransientError` "outcome unknown" (reconcile)."""
        if gave_up is not None:
            reason = _transport_words(gave_up.error)
            tries = f"after {gave_up.attempts} attempt{'s' if gave_up.attempts != 1 else ''}"
            if create and gave_up.never_sent:
                return SubmitNotAccepted(
                    self._clean(f"{what}: not accepted ({reason}) {tries}; nothing was created")
                )
            if create:
                return TransientError(
                    self._clean(
                        f"{what}: create outcome unknown ({reason}); Replicate may have created "
                        "(and will bill) the prediction"
                    )
                )
            return TransientError(self._clean(f"{what}: {reason} {tries}"))
        assert response is not None
        code, detail = response.status_code, self._clean(problem_detail(response))
        if download and code in (401, 403, 404, 410):
            return RequestFailed(
                f"{what}: HTTP {code} (Replicate deletes outputs about an hour after completion)",
                status_code=code,
            )
        if code in (401, 403):
            return AuthError(
                f"Replicate rejected the API token (HTTP {code}: {detail}); {how_to_set(KEY_ENV)}"
            )
        if code == 429:
            if create:
                return SubmitNotAccepted(f"{what}: throttled (HTTP 429: {detail}); nothing was created")
            return TransientError(f"{what}: throttled (HTTP 429: {detail})")
        if code >= 500:
            if create:
                return TransientError(
                    f"{what}: create outcome unknown (HTTP {code}: {detail}); Replicate may have "
                    "created (and will bill) the prediction"
                )
            return TransientError(f"{what}: HTTP {code}: {detail}")
        if code == 422:
            fields_ = _invalid_fields(response)
            if fields_:
                shown = "; ".join(f"{f.get('field')}: {f.get('description')}" for f in fields_[:5])
                more = f" (+{len(fields_) - 5} more)" if len(fields_) > 5 else ""
                return InputRejected(
                    self._clean(f"{what}: input rejected (HTTP 422): {shown}{more}"),
                    fields_,
                    request_id=request_id,
                )
        if code == 404 and request_id:
            return RequestFailed(
                f"{what}: not found at Replicate (wrong id or token)", request_id=request_id, status_code=404
            )
        return RequestFailed(f"{what}: HTTP {code}: {detail}", request_id=request_id, status_code=code)

    # ------------------------------------------------------------------ auth, models, schemas
    async def check_auth(self, endpoints: Sequence[str] = ()) -> None:
        """A missing token or one `GET /v1/account` refuses → AuthError. Also reads each official
        model's `latest_version` (best effort) so submits can record the version."""
        headers = self._auth()
        try:
            response = await self._call("get", "GET", self._api("/v1/account"), headers=headers)
        except GaveUp as exc:
            log.warning(
                str(self.error("replicate account", gave_up=exc)) + "; the token is checked on first use"
            )
            return
        if response.status_code in (401, 403):
            raise self.error("replicate account", response)
        if not response.is_success:
            log.warning(f"{self.error('replicate account', response)}; the token is checked on first use")
            return
        if self.record_version:
            for endpoint in dict.fromkeys(endpoints):
                try:
                    ref = parse_endpoint(endpoint)
                    if ref.version is None:
                        await self.model(ref.model)
                except ProviderError as exc:
                    if isinstance(exc, AuthError):
                        raise
                    log.warning(f"replicate: could not read model {endpoint}: {exc}")

    async def model(self, model: str) -> dict[str, Any]:
        """`GET /v1/models/{owner}/{name}` (once per provider)."""
        lock = self._model_locks.setdefault(model, asyncio.Lock())
        async with lock:
            if model not in self._models:
                what = f"replicate model {model}"
                try:
                    response = await self._call(
                        "get", "GET", self._api(f"/v1/models/{model}"), headers=self._auth()
                    )
                except GaveUp as exc:
                    raise self.error(what, gave_up=exc) from None
                if not response.is_success:
                    raise self.error(what, response)
                data = _json_object(response, what)
                self._models[model] = data
            return self._models[model]

    def latest_version(self, model: str) -> str | None:
        """The model's `latest_version.id`, if `model()` has read it."""
        latest = (self._models.get(model) or {}).get("latest_version") or {}
        return str(latest["id"]) if isinstance(latest, dict) and latest.get("id") else None

    async def fetch_schema(self, endpoint: str) -> dict[str, Any]:
        """The endpoint's Cog OpenAPI document (`latest_version.openapi_schema`, or the pinned
        version's). Validate against its `components.schemas.Input` with the whole document as
        the `$ref` root (see `endpoint_document`)."""
        ref = parse_endpoint(endpoint)
        try:
            if ref.version is None:
                version = (await self.model(ref.model)).get("latest_version") or {}
            else:
                what = f"replicate version {endpoint}"
                url = self._api(f"/v1/models/{ref.model}/versions/{ref.version}")
                try:
                    response = await self._call("get", "GET", url, headers=self._auth())
                except GaveUp as exc:
                    raise self.error(what, gave_up=exc) from None
                if not response.is_success:
                    raise self.error(what, response)
                version = _json_object(response, what)
        except AuthError:
            raise
        except ProviderError as exc:
            raise SchemaUnavailable(
                f"{endpoint}: could not fetch its OpenAPI schema from Replicate ({exc})"
            ) from None
        schema = version.get("openapi_schema") if isinstance(version, dict) else None
        if not isinstance(schema, dict):
            raise SchemaUnavailable(f"{endpoint}: Replicate publishes no openapi_schema for this version")
        return schema

    async def unit_price(self, endpoint: str) -> UnitPrice | None:
        return None  # Replicate has no pricing API: costs are the model config's estimates

    # ------------------------------------------------------------------ submit
    async def submit(self, endpoint: str, payload: dict[str, Any]) -> ReplicateSubmission:
        ref = parse_endpoint(endpoint)
        endpoint = endpoint.strip().strip("/")
        headers = {**self._auth(), "Content-Type": "application/json"}
        if self.cancel_after is not None:
            headers["Cancel-After"] = cancel_after_header(self.cancel_after)
        latest = None
        if ref.version is None:
            url, body = self._api(f"/v1/models/{ref.model}/predictions"), {"input": payload}
            if self.record_version:
                try:
                    await self.model(ref.model)
                except AuthError:
                    raise
                except ProviderError as exc:  # a record detail: never a reason not to submit
                    log.warning(f"replicate: could not read {ref.model}'s latest version: {exc}")
                latest = self.latest_version(ref.model)
        else:
            url, body = self._api("/v1/predictions"), {"version": ref.version, "input": payload}
        what = f"{endpoint}: create"
        try:
            response = await self._call("create", "POST", url, content=_dumps(body), headers=headers)
        except GaveUp as exc:
            raise self.error(what, gave_up=exc, create=True) from None
        if not response.is_success:
            raise self.error(what, response, create=True)
        try:
            data = response.json()
            request_id = str(data["id"])
        except (ValueError, KeyError, TypeError):
            raise TransientError(
                f"{what}: HTTP {response.status_code} without a prediction id; Replicate may have created "
                "(and will bill) the prediction"
            ) from None
        reported = data.get("version") if isinstance(data.get("version"), str) else None
        if ref.version is not None:
            version, source = ref.version, "pinned"
        elif reported and reported != "hidden":
            version, source = reported, "prediction"
        elif latest:
            version, source = latest, "model latest_version"
        else:
            version, source = None, None
        urls = data.get("urls") if isinstance(data.get("urls"), dict) else {}
        return self._complete(
            ReplicateSubmission(
                request_id=request_id,
                endpoint=endpoint,
                status_url=urls.get("get"),
                response_url=urls.get("get"),
                cancel_url=urls.get("cancel"),
                version=version,
                version_source=source,
                created_at=data.get("created_at"),
                web_url=urls.get("web"),
            )
        )

    def _complete(self, sub: Submission) -> ReplicateSubmission:
        """Fill (or, when off the API host, replace) the prediction URLs from the id."""
        if not isinstance(sub, ReplicateSubmission):
            sub = ReplicateSubmission.from_dict(sub.to_dict())
        base = self._api(f"/v1/predictions/{sub.request_id}")
        status = sub.status_url if sub.status_url and self._same_origin(sub.status_url) else base
        cancel = sub.cancel_url if sub.cancel_url and self._same_origin(sub.cancel_url) else f"{base}/cancel"
        return replace(sub, status_url=status, response_url=status, cancel_url=cancel)

    def attach(self, data: dict[str, Any]) -> ReplicateSubmission:
        return self._complete(ReplicateSubmission.from_dict(data))

    # ------------------------------------------------------------------ wait
    async def wait(self, submission: Submission, on_status: StatusCallback | None = None) -> Outcome:
        sub = self._complete(submission)
        return await self._within_client_timeout(sub, self._wait(sub, on_status), "prediction")

    async def _wait(self, sub: ReplicateSubmission, on_status: StatusCallback | None) -> Outcome:
        progress, delay = _Progress(on_status), self.poll_interval
        while True:
            data = await self.prediction(sub)
            changed = progress.feed(data)
            if data.get("status") in TERMINAL:
                return self._outcome(sub, data)
            await asyncio.sleep(delay)
            delay = self.poll_interval if changed else min(delay * 1.5, self.poll_max_s)

    async def prediction(self, submission: Submission) -> dict[str, Any]:
        """`GET urls.get`: the prediction now."""
        sub = self._complete(submission)
        assert sub.status_url
        what = f"{sub.endpoint}: prediction {sub.request_id}"
        try:
            response = await self._call("get", "GET", sub.status_url, headers=self._auth())
        except GaveUp as exc:
            raise self.error(what, gave_up=exc) from None
        if not response.is_success:
            raise self.error(what, response, request_id=sub.request_id)
        try:
            data = response.json()
        except ValueError:
            raise TransientError(f"{what}: unreadable answer") from None
        if not isinstance(data, dict):
            raise TransientError(f"{what}: unexpected answer")
        return data

    def _outcome(self, sub: ReplicateSubmission, data: dict[str, Any]) -> Outcome:
        status, pid = data.get("status"), sub.request_id
        started = bool(data.get("started_at"))
        where = f"{sub.endpoint}: prediction {pid}"
        if status == "aborted":
            raise RequestFailed(
                f"{where} aborted: its Cancel-After deadline passed before it started (not billed)",
                request_id=pid,
            )
        if status == "canceled":
            deadline = _epoch(data.get("deadline"))
            ended = _epoch(data.get("completed_at")) or time.time()
            why = (
                "its Cancel-After deadline passed"
                if deadline and ended >= deadline - 0.5
                else "it was cancelled"
            )
            raise RequestFailed(
                f"{where} canceled: {why}" + (" while it ran" if started else " before it started"),
                request_id=pid,
                may_be_billed=started,
            )
        if status == "failed":
            error = " ".join(str(data.get("error") or "no error message").split())[:300]
            raise RequestFailed(f"{where} failed: {error}", request_id=pid, may_be_billed=started)
        urls = output_urls(data.get("output"))
        video = pick_video(urls)
        if video is None:
            removed = data.get("data_removed")
            why = (
                "its output was removed (Replicate deletes API outputs about an hour after completion)"
                if removed
                else "it has no output URL"
            )
            raise RequestFailed(f"{where} succeeded but {why}", request_id=pid, may_be_billed=True)
        summary = {
            key: data.get(key)
            for key in ("id", "model", "version", "status", "output", "metrics", "created_at")
            if key in data
        }
        summary.update(
            {
                "started_at": data.get("started_at"),
                "completed_at": data.get("completed_at"),
                "deadline": data.get("deadline"),
                "web_url": (data.get("urls") or {}).get("web")
                if isinstance(data.get("urls"), dict)
                else None,
                "version_recorded": sub.version,
                "version_source": sub.version_source,
            }
        )
        return Outcome(output=summary, video_url=video, seed=_seed(data), timings=_timings(data))

    # ------------------------------------------------------------------ cancel
    async def cancel(self, submission: Submission) -> None:
        """`POST …/cancel`; 2xx and 404 (unknown, or long gone) are fine."""
        sub = self._complete(submission)
        assert sub.cancel_url
        what = f"{sub.endpoint}: cancel of {sub.request_id}"
        try:
            response = await self._call("cancel", "POST", sub.cancel_url, headers=self._auth())
        except GaveUp as exc:
            raise self.error(what, gave_up=exc) from None
        if response.is_success or response.status_code == 404:
            return
        raise self.error(what, response, request_id=sub.request_id)

    # ------------------------------------------------------------------ history
    async def history(self, endpoint: str, since: float) -> list[HistoryRow]:
        """Predictions of `endpoint`'s model (and pinned version) created since `since`, with the
        input each was sent: `GET /v1/predictions?created_after=`, newest first, following `next`.
        A row whose input was removed (`data_removed`) has `json_input` None: it cannot match."""
        ref = parse_endpoint(endpoint)
        endpoint = endpoint.strip().strip("/")
        url: str | None = self._api("/v1/predictions")
        params: dict[str, str] | None = {"created_after": _iso(since)}
        rows: dict[str, HistoryRow] = {}
        for _ in range(_HISTORY_PAGES):
            assert url is not None
            what = "replicate predictions list"
            try:
                response = await self._call("get", "GET", url, params=params, headers=self._auth())
            except GaveUp as exc:
                raise self.error(what, gave_up=exc) from None
            if not response.is_success:
                raise self.error(what, response)
            data = _json_object(response, what)
            older = False
            for item in data.get("results") or []:
                if not isinstance(item, dict) or not item.get("id"):
                    continue
                sent_at = _epoch(item.get("created_at"))
                if sent_at is None:
                    continue
                if sent_at < since:
                    older = True  # newest first: the rest is older still
                    continue
                if item.get("model") != ref.model or (ref.version and item.get("version") != ref.version):
                    continue
                if "input" not in item and not item.get("data_removed"):
                    item = await self.prediction(ReplicateSubmission(str(item["id"]), endpoint))
                json_input = None if item.get("data_removed") else item.get("input")
                rows[str(item["id"])] = HistoryRow(
                    request_id=str(item["id"]),
                    endpoint=endpoint,
                    sent_at=sent_at,
                    json_input=json_input,
                    json_output=item.get("output"),
                )
            url, params = data.get("next"), None
            if older or not url or not self._same_origin(str(url)):
                break
        return list(rows.values())

    # ------------------------------------------------------------------ files
    async def upload(self, path: Path) -> str:
        """Once per content sha256 (concurrent callers of the same content share one upload):
        a data URL up to `data_url_max_bytes`, else `POST /v1/files` and its `urls.get`."""
        digest = await asyncio.to_thread(sha256_file, path)
        lock = self._upload_locks.setdefault(digest, asyncio.Lock())
        async with lock:
            cached = self._uploaded.get(digest)
            if cached and cached[1] > time.time() + 60:
                return cached[0]
            self._uploaded[digest] = await self._upload_file(path, digest)
            return self._uploaded[digest][0]

    async def _upload_file(self, path: Path, digest: str) -> tuple[str, float]:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise RequestFailed(f"{path.name}: {size} bytes is over Replicate's 100 MB file limit")
        data = await asyncio.to_thread(path.read_bytes)
        content_type = sniff_bytes(data) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if size <= self.data_url_max_bytes:
            return f"data:{content_type};base64,{base64.b64encode(data).decode()}", float("inf")
        what = f"upload of {path.name}"
        form = {"filename": path.name[:255], "type": content_type, "metadata": json.dumps({"sha256": digest})}
        try:
            response = await self._call(
                "upload",
                "POST",
                self._api("/v1/files"),
                files={"content": (path.name, data, content_type)},
                data=form,
                headers=self._auth(),
            )
        except GaveUp as exc:
            raise self.error(what, gave_up=exc) from None
        if not response.is_success:
            raise self.error(what, response)
        body = _json_object(response, what)
        url = (body.get("urls") or {}).get("get") if isinstance(body.get("urls"), dict) else None
        if not url:
            raise RequestFailed(f"{what}: Replicate answered without urls.get")
        expires = _epoch(body.get("expires_at")) or time.time() + 3600
        return str(url), expires

    async def download(self, url: str, dest: Path) -> Download:
        """Stream `url` into `dest` through a `ClipSink` (hashed as it arrives); a broken or short
        transfer starts the file again. A `data:` output is decoded in place."""
        if url.startswith("data:"):
            head, _, payload = url.partition(",")
            raw = base64.b64decode(payload) if head.endswith(";base64") else payload.encode()
            async with ClipSink(dest) as sink:
                await sink.write(raw)
            return sink.result()
        policy = policy_for(self.retry, "download")
        headers = self._token_for(url)
        what = f"download of {url}"

        async def once() -> Download:
            async with self._http.pick().stream("GET", url, headers=headers) as response:
                if policy.retries_status(response.status_code):
                    await response.aread()
                    raise RetryableStatus(response)
                if not response.is_success:
                    await response.aread()
                    raise self.error(what, response, download=True)
                return await receive(response, dest)

        try:
            async for attempt in retrying(policy, "download"):
                with attempt:
                    done = await once()
        except RetryableStatus as exc:
            raise self.error(what, exc.response, download=True) from None
        except (Retryable, httpx.TransportError) as exc:
            reason = _transport_words(exc) if isinstance(exc, httpx.TransportError) else exc.reason
            raise TransientError(
                f"download of {url} failed after {policy.attempts} attempts: {reason}"
            ) from None
        return done


# --------------------------------------------------------------------------- helpers


def _dumps(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        raise RequestFailed(f"{what}: the answer is not JSON", status_code=response.status_code) from None
    if not isinstance(data, dict):
        raise RequestFailed(f"{what}: unexpected answer", status_code=response.status_code)
    return data


def _invalid_fields(response: httpx.Response) -> list[dict[str, Any]]:
    try:
        body = response.json()
    except ValueError:
        return []
    items = body.get("invalid_fields") if isinstance(body, dict) else None
    return [dict(i) for i in items if isinstance(i, dict)] if isinstance(items, list) else []


def _seed(data: Mapping[str, Any]) -> int | None:
    """The seed the model says it used (its logs), else the one it was sent."""
    logs = data.get("logs")
    if isinstance(logs, str) and (m := _SEED_LOG.search(logs)):
        return int(m.group(1))
    seed = (data.get("input") or {}).get("seed") if isinstance(data.get("input"), dict) else None
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def _timings(data: Mapping[str, Any]) -> dict[str, float]:
    created, started, done = (_epoch(data.get(k)) for k in ("created_at", "started_at", "completed_at"))
    out: dict[str, float] = {}
    if created is not None and done is not None:
        start = started if started is not None else done
        out["queued_s"] = round(max(start - created, 0.0), 3)
        out["running_s"] = round(max(done - start, 0.0), 3)
    metrics = data.get("metrics") if isinstance(data.get("metrics"), dict) else {}
    for key, name in (("predict_time", "predict_s"), ("total_time", "total_s")):
        value = metrics.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    return out
