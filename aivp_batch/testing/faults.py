"""Scripted, deterministic misbehaviour for the fake fal server: which call kind, when, how often."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

CALL_KINDS = (
    "submit",
    "status",
    "stream",
    "result",
    "cancel",
    "upload",
    "token",
    "download",
    "schema",
    "history",  # GET /v1/models/requests/by-endpoint
    "pricing",  # GET /v1/models/pricing
)
FAULT_KINDS = frozenset(
    {
        "429",
        "ingress_502",
        "ingress_503",
        "ingress_504",
        "reset",
        "reset_before",
        "reset_after",
        "truncate",
        "slow",
        "fail_generation",
        "timeout_504",
    }
)
# Namespaces whose app id has three segments (fal's AppId.from_endpoint_id).


# --------------------------------------------------------------------------- faults


@dataclass
class Fault:
    """One scripted misbehaviour.

    kind: `429` (with `Retry-After` when `retry_after` is set; on `history` / `pricing` the body is
    the platform shape `{"error": {"type": "rate_limited", ...}}`), `ingress_502|503|504` (nginx
    HTML, no `x-fal-request-id`), `reset` / `reset_before` / `reset_after` (RST without a response;
    before or after the action took effect; plain `reset` on submit means `reset_after`, the
    dangerous lost-response case), `truncate` (download: half the body then RST; stream: first
    event then a clean close), `slow` (sleep `seconds` then answer normally), `fail_generation`
    (submit only: the job ends COMPLETED with `error`, the result is `status_code` with `message`),
    `timeout_504` (504 + `X-Fal-Request-Timeout-Type: user`; on submit the job never starts and
    ends that way at its would-be completion time).

    On submit, `reset_before` means the request never reached the app: no job, no history row, no
    bill; it never existed. `reset_after` (and plain `reset`) creates the request exactly as a
    normal submit would and then drops the connection before answering: the job runs its normal
    timeline, shows up in the request history once it has started (plus `history_lag_s`), and is
    billed once it completes, just as on fal, so the client only learns of it by reconciling.
    on: which call kind it hits (see CALL_KINDS). Fires on matching calls number `after+1 …`,
    only every `every`-th of them if set, at most `times` times (None = forever). `match` is a
    substring the request path (or, for submit, the raw body) must contain.
    """

    kind: str
    on: str = "submit"
    times: int | None = 1
    every: int | None = None
    after: int = 0
    retry_after: float | str | None = None
    seconds: float = 1.0
    match: str | None = None
    status_code: int = 422
    message: str = "The content was flagged by a content checker."
    error_type: str = "content_policy_violation"
    seen: int = field(default=0, init=False)
    fired: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.kind in ("502", "503", "504"):
            self.kind = f"ingress_{self.kind}"
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {sorted(FAULT_KINDS)}")
        if self.on not in CALL_KINDS:
            raise ValueError(f"unknown fault target {self.on!r}; one of {CALL_KINDS}")


class FaultPlan:
    """An ordered, thread-safe list of `Fault` rules; the first rule that fires wins."""

    def __init__(self, faults: Iterable[Fault] = ()) -> None:
        self._faults = list(faults)
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def faults(self) -> list[Fault]:
        return list(self._faults)

    def take(self, on: str, subject: str = "") -> Fault | None:
        with self._lock:
            for f in self._faults:
                if f.on != on or (f.match is not None and f.match not in subject):
                    continue
                if f.times is not None and f.fired >= f.times:
                    continue
                f.seen += 1
                n = f.seen - f.after
                if n <= 0 or (f.every and n % f.every):
                    continue
                f.fired += 1
                return f
        return None
