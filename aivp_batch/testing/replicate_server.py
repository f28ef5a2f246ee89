"""A fake Replicate HTTP API on loopback, speaking the documented protocol over real sockets.

Served (all under one host; the client takes `base_url` from config):

    GET  /v1/account                                  the token's account (check_auth)
    GET  /v1/models/{owner}/{name}                    model object with latest_version.openapi_schema
    GET  /v1/models/{owner}/{name}/versions/{id}      one version object
    POST /v1/models/{owner}/{name}/predictions        create on an official model   → 201 prediction
    POST /v1/predictions                              create with `version`          → 201 prediction
         (`<id>`, `owner/name:<id>` or, for official models, `owner/name`)
    GET  /v1/predictions/{id}                         the prediction now
    POST /v1/predictions/{id}/cancel                  → 200 prediction (canceled unless already terminal)
    GET  /v1/predictions                              newest first, 100 a page (`page_size`),
         `created_after` (inclusive) / `created_before` (exclusive) ISO-8601, `source`, `cursor`;
         `{"next": url | null, "previous": null, "results": [...]}`
    POST /v1/files                                    multipart `content` (+ filename, type, metadata) → 201
    GET  /v1/files/{id}, /v1/files/{id}/download      the file object / its bytes
    GET  /delivery/{id}/output.mp4                    the output (a small real MP4), like replicate.delivery

Behaviour that matters to a client:
- Auth: `Authorization: Bearer <token>` (or the older `Token <token>`); else 401
  `{"title": "Unauthenticated", "detail": "You did not pass a valid authentication token", "status": 401}`
  as `application/problem+json`, like every error here.
- Input is validated against the version's `components.schemas.Input` (the whole document as the
  `$ref` root, OpenAPI-3.0 `nullable` honoured): 422 "Input validation failed" with
  `invalid_fields` (`type` enum / required / number_lte / number_gte / invalid_type / …,
  `field` like `input.aspect_ratio`). Unknown request-body keys: 422 `additional_property_not_allowed`.
  Undeclared *input* keys are accepted (Cog ignores them), so only local validation catches them.
- Lifecycle (wall clock): `starting` for `latency_s * queue_fraction`, then `processing`, then
  `succeeded` at `latency_s` after creation; `logs` grow ("Using seed: N", progress lines);
  terminal predictions carry `metrics.predict_time` / `total_time`.
- `Cancel-After: <duration>` (`30s`, `5m`, `1h30m45s`, a bare number = seconds; at least
  `min_cancel_after_s`, 5 s like Replicate, else 422): measured from creation; a prediction not
  started by then ends `aborted` (never billed), one still running ends `canceled`. It carries
  `deadline`.
- Official models report `version: "hidden"` on the model route; the served `latest_version.id`
  is what a client must record for reproducibility.
- Outputs and inputs are removed `data_ttl_s` after completion (`data_removed: true`, `output`
  null, input `{}`), and the output file answers 404 from then on.
- `Prefer: wait[=N]` holds the create answer until terminal or N s (≤ 60).
- Every answer carries `ratelimit-remaining` / `ratelimit-reset`.

Faults (`ReplicateFault`, scripted and counted, first matching rule wins): `429` (with
`Retry-After: <retry_after>` and/or the body's `retry_after`), `500|502|503|504`, `reset` (RST, no
answer), `reset_after` (does the work — e.g. creates the prediction — then RSTs: the lost create
answer), `slow` (sleep `seconds`, then answer), `fail` (create: the prediction ends `failed` with
`message`), `truncate` (download: half the body, then RST). `applied=True` makes a 5xx happen
after the work, like `reset_after`, and makes a `slow` one hold the answer after the work (a create
that took effect and is answered `seconds` late: where a killed client leaves it).

Accounting (`ReplicateStats`): calls per kind, `creates` (predictions created by create calls),
`duplicate_creates` (the same model+version+input created more than once), `files` and
`files_by_hash` (uploads per sha256), `cancels`, `faults_fired`, and `billed` (succeeded ones).

    python -m aivp_batch.testing.replicate_server --port 8766 --latency 2
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import json
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlencode, urlsplit

from jsonschema import Draft202012Validator, ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from .clips import clip_for
from .faults import FaultPlan
from .http_fake import Answered as _Answered
from .http_fake import FakeHandler, ThreadedFake, seed_of
from .http_fake import Reset as _Reset

__all__ = [
    "CALL_KINDS",
    "FAULT_KINDS",
    "SCHEMAS_DIR",
    "FakeReplicate",
    "FaultPlan",
    "Prediction",
    "ReplicateFault",
    "ReplicateStats",
    "input_hash",
    "load_models",
    "parse_cancel_after",
]

SCHEMAS_DIR = Path(__file__).with_name("replicate_schemas")
CALL_KINDS = (
    "account",
    "model",  # GET /v1/models/{o}/{n}
    "version",  # GET /v1/models/{o}/{n}/versions/{id}
    "create",  # both create routes
    "get",  # GET /v1/predictions/{id}
    "cancel",
    "list",  # GET /v1/predictions
    "upload",  # POST /v1/files
    "file",  # GET /v1/files/{id}[/download]
    "download",  # GET /delivery/...
)
FAULT_KINDS = frozenset(
    {"429", "500", "502", "503", "504", "reset", "reset_after", "slow", "fail", "truncate"}
)
TERMINAL = ("succeeded", "failed", "canceled", "aborted")
_PROBLEM = "application/problem+json"
_CREATE_KEYS = {"input", "webhook", "webhook_events_filter", "stream"}
_MAX_WAIT_S = 60
_HTML_5XX = "<html><head><title>{code} {reason}</title></head><body><h1>{code} {reason}</h1></body></html>"


@dataclass
class ReplicateFault:
    """One scripted misbehaviour (see the module doc for the kinds).

    on: the call kind it hits (CALL_KINDS). Fires on matching calls number `after+1 …`, only every
    `every`-th of them if set, at most `times` times (None = forever). `match`: a substring the
    request line (and, for create, the raw body) must contain. 429: `retry_after` is the
    `Retry-After` header value (a number, or a string such as an HTTP date; None = no header),
    `body_retry_after` the body's `retry_after` seconds (None = not in the body)."""

    kind: str
    on: str = "create"
    times: int | None = 1
    every: int | None = None
    after: int = 0
    retry_after: float | str | None = None
    body_retry_after: float | None = None
    applied: bool = False
    seconds: float = 1.0
    message: str = "E006: the model failed to generate a video for this input"
    match: str | None = None
    seen: int = field(default=0, init=False)
    fired: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.kind = str(self.kind)
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {sorted(FAULT_KINDS)}")
        if self.on not in CALL_KINDS:
            raise ValueError(f"unknown fault target {self.on!r}; one of {CALL_KINDS}")
        if self.kind == "reset_after":
            self.applied = True


# --------------------------------------------------------------------------- models and predictions


def load_models(folder: Path = SCHEMAS_DIR) -> dict[str, dict[str, Any]]:
    """`owner/name` → model object, from `<owner>__<name>.json` files (names starting `_` skipped)."""
    models = {}
    for path in sorted(Path(folder).glob("*.json")):
        if path.name.startswith("_"):
            continue
        obj = json.loads(path.read_text())
        models[f"{obj['owner']}/{obj['name']}"] = obj
    return models


def input_hash(model: str, version: str, payload: Any) -> str:
    """sha256 of canonical JSON of (model, version id, input): the key of `creates_by_input`."""
    text = json.dumps([model, version, payload], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?")


def parse_cancel_after(text: str) -> float | None:
    """`30s`, `5m`, `1h30m45s`, `1.5s` or a bare number (seconds) → seconds; None if unreadable."""
    text = text.strip().lower()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    m = _DURATION.fullmatch(text)
    if not m or not any(m.groups()):
        return None
    h, mins, s = (float(g) if g else 0.0 for g in m.groups())
    return h * 3600 + mins * 60 + s


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _quantise(epoch: float) -> float:
    """`epoch` as the float its ISO-8601 (microsecond) form parses back to."""
    return datetime.fromtimestamp(epoch, UTC).timestamp()


def _prediction_id() -> str:
    return base64.b32encode(os.urandom(16)).decode().lower().rstrip("=")[:26]


def _duration_of(payload: Any) -> float:
    """The clip length asked for: `duration` or `seconds` (sora), clamped to 0.5–60 s."""
    value = None
    if isinstance(payload, dict):
        value = payload.get("duration", payload.get("seconds"))
    seconds = 5.0
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        seconds = float(value)
    elif isinstance(value, str) and (m := re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*s?\s*", value)):
        seconds = float(m.group(1))
    return min(max(seconds, 0.5), 60.0)


@dataclass
class Prediction:
    """One prediction. Its timeline is fixed at creation (wall-clock epochs) and cut short by a
    cancel or its `Cancel-After` deadline."""

    id: str
    model: str
    version_id: str  # the version it runs
    reported_version: str  # what the API shows (`hidden` for official models on the model route)
    input: Any
    created: float
    start_at: float | None  # None: never starts (aborted, or canceled while starting)
    end_at: float
    final: str = "succeeded"
    error: str | None = None
    seed: int = 0
    deadline: float | None = None
    source: str = "api"
    duration_s: float = 5.0
    output_shape: str = "str"
    progress_at: float | None = None  # when the "50%" log line appears

    def __post_init__(self) -> None:
        if self.progress_at is None and self.start_at is not None:
            self.progress_at = self.start_at + (self.end_at - self.start_at) / 2

    def status(self, now: float) -> str:
        if now >= self.end_at:
            return self.final
        if self.start_at is not None and now >= self.start_at:
            return "processing"
        return "starting"

    def terminal(self, now: float) -> bool:
        return now >= self.end_at

    def started(self, now: float) -> bool:
        return self.start_at is not None and now >= self.start_at

    def logs(self, now: float) -> str:
        if not self.started(now):
            return ""
        lines = [f"Using seed: {self.seed}", "Generating video..."]
        if self.progress_at is not None and now >= self.progress_at and self.progress_at < self.end_at:
            lines.append("Generating video: 50%")
        if self.terminal(now):
            if self.final == "succeeded":
                lines.append("Generating video: 100%")
            elif self.final == "failed" and self.error:
                lines.append(self.error)
        return "".join(line + "\n" for line in lines)

    def output(self, base: str) -> Any:
        url = f"{base}/delivery/{self.id}/output.mp4"
        if self.output_shape == "list":
            return [url]
        if self.output_shape == "dict":
            return {"video": url}
        return url


@dataclass
class StoredFile:
    id: str
    name: str
    content_type: str
    size: int
    sha256: str
    md5: str
    metadata: Any
    created: float
    path: Path

    def body(self, base: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "content_type": self.content_type,
            "size": self.size,
            "etag": self.md5,
            "checksums": {"sha256": self.sha256, "md5": self.md5},
            "metadata": self.metadata,
            "created_at": _iso(self.created),
            "expires_at": _iso(self.created + 86400),
            "urls": {"get": f"{base}/v1/files/{self.id}"},
        }


# --------------------------------------------------------------------------- stats


@dataclass
class ReplicateStats:
    """What the server saw. Mutated under FakeReplicate's lock; read it after the client is done."""

    calls: Counter[str] = field(default_factory=Counter)
    creates_by_input: Counter[str] = field(default_factory=Counter)
    files_by_hash: Counter[str] = field(default_factory=Counter)
    faults_fired: Counter[str] = field(default_factory=Counter)  # "<on>:<kind>"
    cancels: int = 0
    headers: list[dict[str, str]] = field(default_factory=list)  # each create's headers, less Authorization

    @property
    def creates(self) -> int:
        """Predictions created by create calls (a call answered 4xx/429 created none)."""
        return sum(self.creates_by_input.values())

    @property
    def duplicate_creates(self) -> int:
        """Creates of a model+version+input that had been created before: each one billed twice."""
        return sum(n - 1 for n in self.creates_by_input.values() if n > 1)

    @property
    def files(self) -> int:
        return sum(self.files_by_hash.values())


# --------------------------------------------------------------------------- validation


def _nullable(node: Any) -> Any:
    """OpenAPI 3.0 `nullable: true` → `anyOf [X, {type: null}]` (plain JSON Schema ignores it)."""
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _nullable(v) for k, v in node.items() if k != "nullable"}
    return {"anyOf": [out, {"type": "null"}]} if node.get("nullable") is True else out


def _input_validator(openapi_schema: dict[str, Any]) -> Draft202012Validator:
    """Validate against `components.schemas.Input` with the whole document as the `$ref` root."""
    doc = _nullable(copy.deepcopy(openapi_schema))
    uri = "urn:fake-replicate:model"
    registry: Registry = Registry().with_resource(
        uri, Resource.from_contents(doc, default_specification=DRAFT202012)
    )
    return Draft202012Validator({"$ref": f"{uri}#/components/schemas/Input"}, registry=registry)


def _leaf(error: ValidationError) -> ValidationError:
    """The most specific error under anyOf/allOf (the enum behind `allOf`, not the wrapper)."""
    while error.context:
        real = [e for e in error.context if not (e.validator == "type" and e.validator_value == "null")]
        error = min(real or error.context, key=lambda e: -len(e.absolute_path))
    return error


def invalid_fields(validator: Draft202012Validator, payload: Any) -> list[dict[str, str]]:
    """Replicate's `invalid_fields` for `payload`: `{type, field, description}` per problem."""
    out = []
    for error in sorted(validator.iter_errors(payload), key=lambda e: list(map(str, e.absolute_path))):
        error = _leaf(error)
        path = ".".join(str(p) for p in error.absolute_path)
        name = path.rsplit(".", 1)[-1] if path else ""
        kind, where = error.validator, f"input.{path}" if path else "input"
        if kind == "enum":
            allowed = ", ".join(json.dumps(v) for v in error.validator_value)
            text, kind = f"{name} must be one of the following: {allowed}", "enum"
        elif kind == "required":
            missing = re.match(r"'([^']+)'", error.message)
            text = f"{missing.group(1) if missing else 'a field'} is required"
        elif kind == "maximum":
            text, kind = f"{name} must be less than or equal to {error.validator_value}", "number_lte"
        elif kind == "minimum":
            text, kind = f"{name} must be greater than or equal to {error.validator_value}", "number_gte"
        elif kind == "type":
            text, kind = (
                f"Invalid type. Expected: {error.validator_value}, given: {_json_type(error)}",
                "invalid_type",
            )
        elif kind == "maxItems":
            text, kind = f"{name}: array must have at most {error.validator_value} items", "array_max_items"
        else:
            text = error.message
        out.append({"type": str(kind), "field": where, "description": text})
    return out


def _json_type(error: ValidationError) -> str:
    value = error.instance
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number" if isinstance(value, float) else "integer"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


# --------------------------------------------------------------------------- server


class FakeReplicate(ThreadedFake):
    """A Replicate look-alike on `host:port` (port 0 = any free port). Use as a context manager.

    models: `owner/name` → model object (default: the bundled `replicate_schemas/`); `token`: the
    accepted API token; `latency_s`: creation → succeeded; `queue_fraction` of it is `starting`.
    `page_size`: predictions per list page (Replicate: 100). `list_lag_s`: a prediction is listed
    only this long after creation. `output_shape`: `str` (like every video model), `list` or
    `dict`, to exercise a client's output normaliser. `video`: an MP4 served for every output
    (default: a generated clip of the input's `duration`). `max_file_bytes`: files API limit.
    """

    def __init__(
        self,
        token: str = "r8_test-token",
        latency_s: float = 0.2,
        models: Mapping[str, Mapping[str, Any]] | None = None,
        faults: FaultPlan | Iterable[ReplicateFault] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        queue_fraction: float = 0.25,
        page_size: int = 100,
        list_lag_s: float = 0.0,
        data_ttl_s: float = 3600.0,
        min_cancel_after_s: float = 5.0,
        output_shape: str = "str",
        video: Path | None = None,
        max_file_bytes: int = 100 * 1024 * 1024,
        username: str = "aivp-test",
        verbose: bool = False,
    ) -> None:
        super().__init__(host, port)
        self.token = token
        self.latency_s = latency_s
        self.models: dict[str, dict[str, Any]] = {
            k: copy.deepcopy(dict(v)) for k, v in (models if models is not None else load_models()).items()
        }
        if isinstance(faults, FaultPlan):
            self.faults = faults
        else:
            self.faults = FaultPlan(faults or ())
        self.queue_fraction = queue_fraction
        self.page_size = page_size
        self.list_lag_s = list_lag_s
        self.data_ttl_s = data_ttl_s
        self.min_cancel_after_s = min_cancel_after_s
        self.output_shape = output_shape
        self.video = Path(video) if video else None
        self.max_file_bytes = max_file_bytes
        self.username = username
        self.verbose = verbose
        self.stats = ReplicateStats()
        self.predictions: dict[str, Prediction] = {}
        self.files: dict[str, StoredFile] = {}
        self._versions: dict[str, tuple[str, dict[str, Any]]] = {}  # version id → (model, version object)
        self._validators: dict[str, Draft202012Validator] = {}
        for name, model in self.models.items():
            if model.get("latest_version"):
                self._versions[model["latest_version"]["id"]] = (name, model["latest_version"])
        self._bound_port = 0

    # lifecycle (start, stop, context manager, url: ThreadedFake) ---------------------------
    _name = "FakeReplicate"

    def _handler(self) -> type[FakeHandler]:
        return _Handler

    def start(self) -> Self:
        super().start()
        assert self._httpd
        self._bound_port = self._httpd.server_address[1]
        return self

    @property
    def port(self) -> int:
        """The bound port (still known after `stop`, so a test can compare URLs afterwards)."""
        if self._httpd is not None:
            self._bound_port = self._httpd.server_address[1]
        assert self._bound_port, "FakeReplicate was never started"
        return self._bound_port

    # models ---------------------------------------------------------------
    def add_version(self, model: str, openapi_schema: dict[str, Any], latest: bool = False) -> str:
        """A further version of `model` (a new id); `latest` makes it the model's latest_version."""
        version = {
            "id": hashlib.sha256(f"{model}:{uuid.uuid4()}".encode()).hexdigest(),
            "created_at": _iso(time.time()),
            "cog_version": "0.16.8",
            "openapi_schema": openapi_schema,
        }
        with self._lock:
            self._versions[version["id"]] = (model, version)
            if latest:
                self.models[model]["latest_version"] = version
        return version["id"]

    def version(self, version_id: str) -> tuple[str, dict[str, Any]] | None:
        return self._versions.get(version_id)

    def validator(self, version_id: str) -> Draft202012Validator | None:
        found = self._versions.get(version_id)
        if found is None or not isinstance(found[1].get("openapi_schema"), dict):
            return None
        with self._lock:
            if version_id not in self._validators:
                self._validators[version_id] = _input_validator(found[1]["openapi_schema"])
            return self._validators[version_id]

    # state (count, fault: ThreadedFake) ----------------------------------------------------
    def create(
        self,
        model: str,
        version_id: str,
        payload: Any,
        *,
        official_route: bool,
        cancel_after: float | None = None,
        fail: str | None = None,
        source: str = "api",
        created: float | None = None,
        count: bool = True,
    ) -> Prediction:
        """A new prediction on the normal timeline (what a create does)."""
        # Whole microseconds, like Replicate's timestamps: `created_at` read back compares exactly.
        now = _quantise(time.time() if created is None else created)
        start = now + self.latency_s * self.queue_fraction
        official = bool(self.models.get(model, {}).get("is_official"))
        pred = Prediction(
            id=_prediction_id(),
            model=model,
            version_id=version_id,
            reported_version="hidden" if official and official_route else version_id,
            input=copy.deepcopy(payload),
            created=now,
            start_at=start,
            end_at=now + self.latency_s,
            seed=seed_of(payload),
            source=source,
            duration_s=_duration_of(payload),
            output_shape=self.output_shape,
        )
        if fail is not None:
            pred.final, pred.error = "failed", fail
        if cancel_after is not None:
            pred.deadline = now + cancel_after
            if pred.deadline <= start:  # never started in time: aborted, not billed
                pred.start_at, pred.end_at, pred.final, pred.error = None, pred.deadline, "aborted", None
            elif pred.deadline < pred.end_at:  # started, cut short
                pred.end_at, pred.final, pred.error = pred.deadline, "canceled", None
        with self._lock:
            self.predictions[pred.id] = pred
            if count:
                self.stats.creates_by_input[input_hash(model, version_id, payload)] += 1
        return pred

    def inject(
        self, model: str, payload: Any, created: float | None = None, source: str = "api"
    ) -> Prediction:
        """A prediction nobody created through this server (another machine, the website): listed
        and fetchable, not counted in `creates`. `created` (epoch s, default now)."""
        version = self.models[model]["latest_version"]["id"]
        return self.create(
            model, version, payload, official_route=True, created=created, source=source, count=False
        )

    def cancel(self, pred: Prediction) -> None:
        now = time.time()
        with self._lock:
            self.stats.cancels += 1
            if pred.terminal(now):
                return
            if not pred.started(now):
                pred.start_at = None
            pred.end_at, pred.final, pred.error = now, "canceled", None

    def data_removed(self, pred: Prediction, now: float) -> bool:
        return pred.terminal(now) and now > pred.end_at + self.data_ttl_s

    def body(self, pred: Prediction, base: str, now: float | None = None) -> dict[str, Any]:
        """The prediction object as the API shows it at `now`."""
        now = time.time() if now is None else now
        status = pred.status(now)
        removed = self.data_removed(pred, now)
        out: dict[str, Any] = {
            "id": pred.id,
            "model": pred.model,
            "version": pred.reported_version,
            "input": {} if removed else copy.deepcopy(pred.input),
            "logs": "" if removed else pred.logs(now),
            "output": None,
            "data_removed": removed,
            "error": pred.error if status == "failed" else None,
            "status": status,
            "source": pred.source,
            "created_at": _iso(pred.created),
            "started_at": _iso(pred.start_at) if pred.start_at is not None and pred.started(now) else None,
            "completed_at": _iso(pred.end_at) if status in TERMINAL else None,
            "urls": {
                "get": f"{base}/v1/predictions/{pred.id}",
                "cancel": f"{base}/v1/predictions/{pred.id}/cancel",
                "web": f"https://replicate.com/p/{pred.id}",
            },
        }
        if pred.deadline is not None:
            out["deadline"] = _iso(pred.deadline)
        if status == "succeeded" and not removed:
            out["output"] = pred.output(base)
        if status in TERMINAL:
            start = pred.start_at if pred.start_at is not None else pred.end_at
            out["metrics"] = {
                "predict_time": round(max(pred.end_at - start, 0.0), 6),
                "total_time": round(pred.end_at - pred.created, 6),
            }
        return out

    @property
    def billed(self) -> dict[str, float]:
        """prediction id → output seconds, for every prediction that has succeeded by now."""
        now = time.time()
        with self._lock:
            return {p.id: p.duration_s for p in self.predictions.values() if p.status(now) == "succeeded"}

    def listed(self, now: float) -> list[Prediction]:
        """Every prediction the list shows now, newest first (created desc, then id desc)."""
        with self._lock:
            preds = [p for p in self.predictions.values() if p.created + self.list_lag_s <= now]
        return sorted(preds, key=lambda p: (p.created, p.id), reverse=True)

    def video_for(self, pred: Prediction) -> Path:
        return self.video or clip_for(pred.duration_s)

    def store_file(self, name: str, content_type: str, data: bytes, metadata: Any) -> StoredFile:
        assert self._tmp
        sha = hashlib.sha256(data).hexdigest()
        file_id = base64.b32encode(os.urandom(10)).decode().lower().rstrip("=")
        path = self._tmp / file_id
        path.write_bytes(data)
        stored = StoredFile(
            id=file_id,
            name=name,
            content_type=content_type,
            size=len(data),
            sha256=sha,
            md5=hashlib.md5(data).hexdigest(),  # noqa: S324 - an etag, like Replicate's
            metadata=metadata,
            created=time.time(),
            path=path,
        )
        with self._lock:
            self.files[file_id] = stored
            self.stats.files_by_hash[sha] += 1
        return stored


class _Handler(FakeHandler):
    """Replicate's routes on the shared plumbing (`FakeHandler`); every answer has rate-limit headers."""

    # plumbing ---------------------------------------------------------------
    @property
    def rep(self) -> FakeReplicate:
        return self.server.fake  # type: ignore[no-any-return]

    def _begin(self) -> None:
        super()._begin()
        self._raw: bytes | None = None

    def _drain_body(self) -> None:
        self._body()

    def _take_fault(self, on: str, subject: str) -> ReplicateFault | None:
        """Count the call and take its fault, as the shared plumbing does, except that an `applied`
        `slow` one sleeps after the work (`_after_work`), not before it."""
        fake = self.rep
        fake.count(on)
        f: ReplicateFault | None = fake.fault(on, subject)
        if f is not None and f.kind == "slow" and not f.applied:
            time.sleep(f.seconds)
        return f

    def _route(self, method: str, segs: list[str]) -> None:
        if segs == ["v1", "account"] and method == "GET":
            return self._account()
        if segs[:2] == ["v1", "models"] and len(segs) == 4 and method == "GET":
            return self._model(f"{segs[2]}/{segs[3]}")
        if segs[:2] == ["v1", "models"] and len(segs) == 6 and segs[4] == "versions" and method == "GET":
            return self._version(f"{segs[2]}/{segs[3]}", segs[5])
        if segs[:2] == ["v1", "models"] and len(segs) == 5 and segs[4] == "predictions" and method == "POST":
            return self._create(f"{segs[2]}/{segs[3]}")
        if segs == ["v1", "predictions"] and method == "POST":
            return self._create(None)
        if segs == ["v1", "predictions"] and method == "GET":
            return self._list()
        if segs[:2] == ["v1", "predictions"] and len(segs) == 3 and method == "GET":
            return self._get(segs[2])
        if segs[:2] == ["v1", "predictions"] and len(segs) == 4 and segs[3] == "cancel" and method == "POST":
            return self._cancel(segs[2])
        if segs == ["v1", "files"] and method == "POST":
            return self._upload()
        if segs[:2] == ["v1", "files"] and len(segs) in (3, 4) and method == "GET":
            return self._file(segs[2], download=len(segs) == 4 and segs[3] == "download")
        if segs[:1] == ["delivery"] and len(segs) == 3 and method == "GET":
            return self._download(segs[1])
        self._problem(404, "Not found", f"Not found: {method} {urlsplit(self.path).path}")

    def _body(self) -> bytes:
        if self._raw is None:
            self._raw = b"".join(self._length_chunks())
        return self._raw

    def _default_headers(self) -> Iterable[tuple[str, str]]:
        return (("ratelimit-remaining", "599"), ("ratelimit-reset", "1"))

    def _problem(
        self,
        code: int,
        title: str | None,
        detail: str,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        body: dict[str, Any] = {"detail": detail, "status": code, **extra}
        if title:
            body["title"] = title
        self._send(code, json.dumps(body).encode(), _PROBLEM, headers)

    def _apply_fault(self, on: str, subject: str = "") -> ReplicateFault | None:
        """Count the call; apply a fault that replaces the answer now, or return it (`slow` has
        slept already; `fail`, `truncate` and applied ones are the caller's to act on)."""
        f = self._take_fault(on, f"{self.command} {self.path} {subject}")
        if f is None or f.kind == "slow":
            return f  # type: ignore[no-any-return]
        if f.kind == "429":
            self._throttle(f)
        elif f.kind in ("500", "502", "503", "504") and not f.applied:
            self._server_error(int(f.kind))
        elif f.kind == "reset":
            raise _Reset
        elif f.kind == "reset_after" or (f.kind == "truncate" and on != "download"):
            self._reset_after = True  # do the work, then lose the answer
        return f

    def _throttle(self, f: ReplicateFault) -> None:
        headers = {} if f.retry_after is None else {"Retry-After": str(f.retry_after)}
        wait = f.body_retry_after if f.body_retry_after is not None else f.retry_after
        resets = f" Your rate limit resets in ~{wait}s." if isinstance(wait, int | float) else ""
        extra = {} if f.body_retry_after is None else {"retry_after": f.body_retry_after}
        self._problem(429, None, f"Request was throttled.{resets}", headers, **extra)
        raise _Answered

    def _server_error(self, code: int) -> None:
        reason = self.responses.get(code, ("Error",))[0]
        if code == 500:
            self._problem(500, "Internal Server Error", "An unexpected error occurred")
        else:  # the edge in front of the API: HTML, no problem+json
            self._send(code, _HTML_5XX.format(code=code, reason=reason).encode(), "text/html")
        raise _Answered

    def _after_work(self, f: ReplicateFault | None) -> None:
        """An applied 5xx fault answers only now, after the work was done; an applied `slow` one
        holds the answer that long (cut short when the server stops)."""
        if f is not None and f.applied and f.kind in ("500", "502", "503", "504"):
            self._server_error(int(f.kind))
        if f is not None and f.applied and f.kind == "slow":
            self.rep._stopping.wait(f.seconds)

    def _require_token(self) -> None:
        scheme, _, value = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() not in ("bearer", "token") or value.strip() != self.rep.token:
            self._problem(401, "Unauthenticated", "You did not pass a valid authentication token")
            raise _Answered

    def _read_json(self) -> Any:
        raw = self._body()
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            self._problem(400, "Bad request", "The request body is not valid JSON")
            raise _Answered from None

    # account and models ------------------------------------------------------
    def _account(self) -> None:
        f = self._apply_fault("account")
        self._require_token()
        self._after_work(f)
        name = self.rep.username
        self._json(200, {"type": "user", "username": name, "name": name, "github_url": None})

    def _model_or_404(self, name: str) -> dict[str, Any]:
        model = self.rep.models.get(name)
        if model is None:
            self._problem(404, "Not found", f"Model {name} not found")
            raise _Answered
        return model

    def _model(self, name: str) -> None:
        f = self._apply_fault("model")
        self._require_token()
        model = self._model_or_404(name)
        self._after_work(f)
        self._json(200, model)

    def _version(self, name: str, version_id: str) -> None:
        f = self._apply_fault("version")
        self._require_token()
        self._model_or_404(name)
        found = self.rep.version(version_id)
        if found is None or found[0] != name:
            self._problem(404, "Not found", f"Version {version_id} of {name} not found")
            raise _Answered
        self._after_work(f)
        self._json(200, found[1])

    # predictions ---------------------------------------------------------------
    def _create(self, model_route: str | None) -> None:
        raw = self._body()
        f = self._apply_fault("create", raw.decode(errors="replace"))
        self._require_token()
        body = self._read_json()
        if not isinstance(body, dict):
            self._invalid("input", "required", "input is required", title="Invalid request body")
        allowed = _CREATE_KEYS | (set() if model_route else {"version"})
        for key in sorted(set(body) - allowed):
            self._invalid(key, "additional_property_not_allowed", f"Additional property {key} is not allowed")
        if model_route is not None:
            model = self._model_or_404(model_route)
            name, version_id = model_route, model["latest_version"]["id"]
        else:
            name, version_id = self._resolve_version(body.get("version"))
        if not isinstance(body.get("input"), dict):
            self._invalid("input", "required", "input is required")
        payload = body["input"]
        validator = self.rep.validator(version_id)
        problems = invalid_fields(validator, payload) if validator is not None else []
        if problems:
            detail = "".join(f"- {p['field']}: {p['description']}\n" for p in problems)
            self._problem(422, "Input validation failed", detail, invalid_fields=problems)
            raise _Answered
        cancel_after = self._cancel_after()
        missing = self._missing_files(payload)
        fail = f.message if f is not None and f.kind == "fail" else None
        if missing and fail is None:
            fail = f"Could not download input file {missing}: 404 Not Found"
        with self.rep._lock:
            recorded = {k: v for k, v in self.headers.items() if k.lower() != "authorization"}
            self.rep.stats.headers.append(recorded)
        pred = self.rep.create(
            name,
            version_id,
            payload,
            official_route=model_route is not None,
            cancel_after=cancel_after,
            fail=fail,
        )
        self._after_work(f)
        headers = {"Location": f"{self.base}/v1/predictions/{pred.id}"}
        wait = self._prefer_wait()
        if wait is not None:
            until = time.time() + wait
            while time.time() < until and not pred.terminal(time.time()) and not self.rep._stopping.is_set():
                time.sleep(0.01)
            headers["Preference-Applied"] = "wait"
        self._json(201, self.rep.body(pred, self.base), headers)

    def _invalid(self, field_name: str, kind: str, description: str, title: str = "Invalid request") -> None:
        detail = f"- {field_name}: {description}\n"
        fields = [{"type": kind, "field": field_name, "description": description}]
        self._problem(422, title, detail, invalid_fields=fields)
        raise _Answered

    def _resolve_version(self, value: Any) -> tuple[str, str]:
        """`<id>`, `owner/name:<id>` or (official models) `owner/name` → (model, version id)."""
        text = str(value or "")
        if not text:
            self._invalid("version", "required", "version is required")
        name, _, version_id = text.partition(":") if "/" in text else ("", "", text)
        if name and not version_id:  # "owner/name": official models only, their latest version
            model = self.rep.models.get(name)
            if model is not None and model.get("is_official"):
                return name, model["latest_version"]["id"]
        found = self.rep.version(version_id)
        if found is None or (name and found[0] != name):
            self._problem(
                422,
                "Invalid version or not permitted",
                "The specified version does not exist (or perhaps you don't have permission to use it?)",
            )
            raise _Answered
        return found[0], version_id

    def _cancel_after(self) -> float | None:
        text = self.headers.get("Cancel-After")
        if text is None:
            return None
        seconds = parse_cancel_after(text)
        if seconds is None or seconds < self.rep.min_cancel_after_s:
            self._problem(
                422,
                "Invalid Cancel-After header",
                f"Cancel-After must be a duration of at least {self.rep.min_cancel_after_s:g}s, got {text!r}",
            )
            raise _Answered
        return seconds

    def _prefer_wait(self) -> float | None:
        text = (self.headers.get("Prefer") or "").strip()
        m = re.fullmatch(r"wait(?:=(\d+))?", text)
        if not m:
            return None
        return float(min(int(m.group(1) or _MAX_WAIT_S), _MAX_WAIT_S))

    def _missing_files(self, payload: Any) -> str | None:
        """An input URL naming a file of this server that does not exist (the prediction fails)."""
        prefix = f"{self.base}/v1/files/"
        for value in _strings(payload):
            if value.startswith(prefix):
                file_id = value[len(prefix) :].split("/")[0]
                if file_id not in self.rep.files:
                    return value
        return None

    def _prediction(self, pid: str) -> Prediction:
        pred = self.rep.predictions.get(pid)
        if pred is None:
            self._problem(404, "Not found", f"Prediction {pid} not found")
            raise _Answered
        return pred

    def _get(self, pid: str) -> None:
        f = self._apply_fault("get")
        self._require_token()
        pred = self._prediction(pid)
        self._after_work(f)
        self._json(200, self.rep.body(pred, self.base))

    def _cancel(self, pid: str) -> None:
        f = self._apply_fault("cancel")
        self._require_token()
        pred = self._prediction(pid)
        self.rep.cancel(pred)
        self._after_work(f)
        self._json(200, self.rep.body(pred, self.base))

    def _when(self, name: str) -> float | None:
        text = self.query.get(name, [""])[-1].strip()
        if not text:
            return None
        text = re.sub(r" (\d{2}:?\d{2})$", r"+\1", text)  # an unencoded "+00:00"
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            self._problem(400, "Invalid query", f"{name} must be an ISO 8601 date-time, got {text!r}")
            raise _Answered from None
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()

    def _list(self) -> None:
        f = self._apply_fault("list")
        self._require_token()
        after, before = self._when("created_after"), self._when("created_before")
        source = self.query.get("source", [""])[-1] or None
        cursor = self.query.get("cursor", [""])[-1]
        now = time.time()
        preds = [
            p
            for p in self.rep.listed(now)
            if (after is None or p.created >= after)
            and (before is None or p.created < before)
            and (source is None or p.source == source)
        ]
        if cursor:
            try:
                last_created, last_id = json.loads(base64.urlsafe_b64decode(cursor.encode()).decode())
            except ValueError:
                self._problem(400, "Invalid cursor", f"Invalid cursor {cursor!r}")
                raise _Answered from None
            preds = [p for p in preds if (p.created, p.id) < (float(last_created), str(last_id))]
        page, more = preds[: self.rep.page_size], len(preds) > self.rep.page_size
        next_url = None
        if more:
            last = page[-1]
            token = base64.urlsafe_b64encode(json.dumps([last.created, last.id]).encode()).decode()
            params = {k: v[-1] for k, v in self.query.items() if k != "cursor"}
            next_url = f"{self.base}/v1/predictions?{urlencode({**params, 'cursor': token})}"
        self._after_work(f)
        results = [self.rep.body(p, self.base, now) for p in page]
        self._json(200, {"next": next_url, "previous": None, "results": results})

    # files ----------------------------------------------------------------------
    def _upload(self) -> None:
        f = self._apply_fault("upload")
        self._require_token()
        length = int(self.headers.get("Content-Length") or 0)
        if length > self.rep.max_file_bytes + 64 * 1024:
            self._problem(413, "Request Entity Too Large", "Files must be less than 100MB in size")
            self.close_connection = True  # the body is not read
            self._raw = b""
            raise _Answered
        parts = _multipart(self._body(), self.headers.get("Content-Type") or "")
        if parts is None or "content" not in parts:
            self._problem(
                400, "Invalid request", "A multipart/form-data body with a `content` file is required"
            )
            raise _Answered
        headers, data = parts["content"]
        if len(data) > self.rep.max_file_bytes:
            self._problem(413, "Request Entity Too Large", "Files must be less than 100MB in size")
            raise _Answered
        name = _text(parts.get("filename")) or headers.get("filename") or "file"
        ctype = _text(parts.get("type")) or headers.get("content-type") or "application/octet-stream"
        meta_text = _text(parts.get("metadata"))
        try:
            metadata = json.loads(meta_text) if meta_text else {}
        except ValueError:
            metadata = {}
        stored = self.rep.store_file(name[:255], ctype, data, metadata)
        self._after_work(f)
        self._json(201, stored.body(self.base))

    def _file(self, file_id: str, download: bool) -> None:
        f = self._apply_fault("file")
        self._require_token()
        stored = self.rep.files.get(file_id)
        if stored is None:
            self._problem(404, "Not found", f"File {file_id} not found")
            raise _Answered
        self._after_work(f)
        if not download:
            self._json(200, stored.body(self.base))
            return
        self._send_file(stored.path, stored.content_type, truncate=False)

    def _download(self, pid: str) -> None:
        # Like replicate.delivery: signed URLs, no Authorization needed.
        f = self._apply_fault("download")
        pred = self.rep.predictions.get(pid)
        now = time.time()
        if pred is None or pred.status(now) != "succeeded" or self.rep.data_removed(pred, now):
            self._send(404, b"Not Found", "text/plain")
            return
        self._after_work(f)
        self._send_file(
            self.rep.video_for(pred), "video/mp4", truncate=f is not None and f.kind == "truncate"
        )


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _text(part: tuple[dict[str, str], bytes] | None) -> str | None:
    return part[1].decode(errors="replace") if part is not None else None


def _multipart(body: bytes, content_type: str) -> dict[str, tuple[dict[str, str], bytes]] | None:
    """A multipart/form-data body → field name → (headers incl. `filename`, bytes)."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.lower().startswith("multipart/form-data") or not m:
        return None
    delimiter = b"--" + m.group(1).encode()
    out: dict[str, tuple[dict[str, str], bytes]] = {}
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        head, sep, data = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            continue
        headers: dict[str, str] = {}
        for line in head.decode(errors="replace").split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        name = re.search(r'\bname="([^"]*)"', disposition)
        filename = re.search(r'\bfilename="([^"]*)"', disposition)
        if filename:
            headers["filename"] = filename.group(1)
        if name:
            out[name.group(1)] = (headers, data.removesuffix(b"\r\n"))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Run a fake Replicate API on loopback.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8766)
    p.add_argument("--latency", type=float, default=2.0, help="seconds from create to succeeded")
    p.add_argument("--token", default="r8_test-token")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    server = FakeReplicate(
        token=args.token, latency_s=args.latency, host=args.host, port=args.port, verbose=args.verbose
    )
    server.serve_until_interrupted("fake Replicate", f"token {args.token!r}")


if __name__ == "__main__":
    main()
