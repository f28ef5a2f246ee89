"""Retrying HTTP calls: one policy per call kind, as data, on tenacity.

A provider names the kind of each call (`create`, `get`, `upload`, `download`, `cancel`, …) and
runs it under that kind's `RetryPolicy`. The money-relevant rule lives in the table, not in code:
a `create` (a POST that can start a billed generation) is retried only where the service surely
did not act on it (a 429, or a connection that never opened), because a retry after a 5xx or a
timeout can create, and bill, the same request twice. Idempotent reads and content-addressed
writes retry 429, 5xx and transport errors.

The table says which statuses each kind may retry; a provider whose answers need a closer look
(fal: a 502 from its ingress never reached the app, one from the app is the app's answer) passes
its error mapping as `transient(response, kind)`: the reason a response is worth another try, or
None where it is an answer. A response is retried when both agree. A provider with its own kinds
passes them as `rules` (`policy_table`, `policies`).

Waits: the server's `Retry-After` header (seconds or an HTTP date) wins, then a JSON body's
`retry_after` (Replicate's throttle body), else exponential backoff with jitter; never more than
`max_retry_after_s`.

    table = policy_table(attempts=8, kinds={"create": {"retry_on": [429]}})
    response = await send(lambda: http.get(url), table["get"], kind="get")

`send` returns the last response when retries run out on a status (the caller's error mapping
decides what it means; `give_up_on_status=True` raises `GaveUp` instead) and raises `GaveUp` for a
transport error it does not (or no longer) retry.
"""

from __future__ import annotations

import asyncio
import email.utils
import errno
import json
import logging
import random
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

log = logging.getLogger(__name__)

TRANSIENT_STATUSES: tuple[int, ...] = (429, 500, 502, 503, 504)
# Errors raised before a single byte of the request left: the server never saw it.
NEVER_SENT_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)

Rules = Mapping[str, Mapping[str, Any]]  # kind → RetryPolicy fields

# Per-kind rules over the shared attempts/backoff (Replicate's kinds; a provider with others passes
# its own as `rules`). `create` may bill: only 429 and never-sent.
KIND_RULES: dict[str, dict[str, Any]] = {
    "create": {"retry_on": (429,), "transport": True, "connect_only": True},
    "get": {},  # status polls, lists, model documents, the account
    "upload": {},  # a duplicate upload costs nothing but storage
    "download": {},
    "cancel": {},  # cancelling twice is harmless
}


def statuses(values: Iterable[int | str]) -> tuple[int, ...]:
    """`[429, "5xx"]` → (429, 500, …, 599): a config-friendly way to write status sets."""
    out: list[int] = []
    for value in values:
        text = str(value).strip().lower()
        if len(text) == 3 and text.endswith("xx") and text[0].isdigit():
            out.extend(range(int(text[0]) * 100, int(text[0]) * 100 + 100))
        else:
            out.append(int(text))
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class RetryPolicy:
    """How one kind of call is retried.

    attempts: tries in all (1 = never retried). Wait before try n+1: `Retry-After` if the server
    sent one (capped at `max_retry_after_s`), else min(base_s * 2**(n-1), max_s) × U(0.5, 1.5).
    retry_on: HTTP statuses worth another try. transport: retry httpx transport errors;
    connect_only: of those, only the ones that surely never sent the request (`NEVER_SENT_ERRORS`).
    """

    attempts: int = 8
    base_s: float = 0.5
    max_s: float = 30.0
    retry_on: tuple[int, ...] = TRANSIENT_STATUSES
    transport: bool = True
    connect_only: bool = False
    jitter: bool = True
    max_retry_after_s: float = 120.0

    def __post_init__(self) -> None:
        # Config hands lists (or OmegaConf ListConfigs); keep a hashable, comparable tuple.
        object.__setattr__(self, "retry_on", statuses(self.retry_on))
        if int(self.attempts) < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")
        object.__setattr__(self, "attempts", int(self.attempts))

    def retries_status(self, status_code: int) -> bool:
        return status_code in self.retry_on

    def retries_error(self, exc: BaseException) -> bool:
        if not self.transport or not isinstance(exc, httpx.TransportError):
            return False
        return not self.connect_only or isinstance(exc, NEVER_SENT_ERRORS)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed try number `attempt` (1-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after_s)
        delay = min(self.base_s * 2 ** (attempt - 1), self.max_s)
        return min(delay * random.uniform(0.5, 1.5), self.max_s) if self.jitter else delay


def policy_table(
    attempts: int = 8,
    base_s: float = 0.5,
    max_s: float = 30.0,
    max_retry_after_s: float = 120.0,
    jitter: bool = True,
    kinds: Rules | None = None,
    rules: Rules = KIND_RULES,
) -> dict[str, RetryPolicy]:
    """Kind → policy: the shared numbers, `rules` (the provider's per-kind rules, `KIND_RULES` by
    default), then `kinds` (config) per kind on top. A kind only in `kinds` is added; `default` is
    what `policy_for` falls back to."""
    shared = {
        "attempts": attempts,
        "base_s": base_s,
        "max_s": max_s,
        "max_retry_after_s": max_retry_after_s,
        "jitter": jitter,
    }
    known = {f.name for f in fields(RetryPolicy)}
    table: dict[str, RetryPolicy] = {}
    for kind in dict.fromkeys([*rules, "default", *(kinds or {})]):
        given = (kinds or {}).get(kind) or {}
        if not isinstance(given, Mapping):
            raise ValueError(f"retry.kinds.{kind}: must be a mapping of policy keys, got {given!r}")
        merged = {**shared, **rules.get(kind, {}), **dict(given)}
        unknown = set(merged) - known
        if unknown:
            raise ValueError(f"retry.kinds.{kind}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        table[str(kind)] = RetryPolicy(**merged)
    return table


def policies(retry: Any = None, rules: Rules = KIND_RULES) -> dict[str, RetryPolicy]:
    """A provider's `retry` argument as a kind → policy table under `rules`: None → the defaults;
    a RetryPolicy → its numbers with the per-kind rules; a kind → policy mapping as is; else config
    (`attempts`, `base_s`, `max_s`, …, `kinds`) for `policy_table`."""
    if retry is None:
        return policy_table(rules=rules)
    if isinstance(retry, RetryPolicy):
        return policy_table(
            retry.attempts, retry.base_s, retry.max_s, retry.max_retry_after_s, retry.jitter, rules=rules
        )
    if isinstance(retry, Mapping) and retry and all(isinstance(v, RetryPolicy) for v in retry.values()):
        return dict(retry)
    if isinstance(retry, Mapping):
        conf = {str(k): v for k, v in retry.items() if k != "_target_"}
        kinds = conf.pop("kinds", None)
        return policy_table(
            **conf, kinds={str(k): v if v is not None else {} for k, v in (kinds or {}).items()}, rules=rules
        )
    raise TypeError(f"retry: expected a RetryPolicy, a kind → RetryPolicy mapping or config, got {retry!r}")


def policy_for(table: Mapping[str, RetryPolicy], kind: str) -> RetryPolicy:
    return table.get(kind) or table.get("default") or RetryPolicy()


# --------------------------------------------------------------------------- Retry-After


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """`Retry-After` in seconds: a (possibly fractional) number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(float(value.strip()), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


def retry_after_of(response: httpx.Response) -> float | None:
    """The server's wait: the `Retry-After` header, else a JSON body's `retry_after` (seconds)."""
    header = parse_retry_after(response.headers.get("retry-after"))
    if header is not None:
        return header
    try:
        body = json.loads(response.content or b"null")
    except (ValueError, UnicodeDecodeError, httpx.ResponseNotRead):
        return None
    value = body.get("retry_after") if isinstance(body, dict) else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return max(float(value), 0.0)
    if isinstance(value, str):
        return parse_retry_after(value)
    return None


# --------------------------------------------------------------------------- running calls


class Retryable(Exception):
    """Raise inside a `retrying` block for a failure worth another try (e.g. a short body)."""

    def __init__(self, reason: str, status_code: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_code = status_code
        self.retry_after = retry_after


class RetryableStatus(Retryable):
    """A response whose status the policy retries; carries the (read) response. `reason`: the
    provider's words for it (its `transient` mapping), else `HTTP <code>`."""

    def __init__(self, response: httpx.Response, reason: str | None = None) -> None:
        code = response.status_code
        super().__init__(reason or f"HTTP {code}", code, retry_after_of(response))
        self.response = response


# A provider's error mapping: why a response is worth another try (`kind` names the call), or None
# where it is an answer. Only asked about statuses the kind's policy retries.
Transient = Callable[[httpx.Response, str], str | None]


def retry_reason(
    response: httpx.Response, policy: RetryPolicy, kind: str = "call", transient: Transient | None = None
) -> str | None:
    """Why `response` (body read) is retried under `policy`, or None: its status is one the policy
    retries and the provider's `transient` mapping (if any) calls it transient."""
    if not policy.retries_status(response.status_code):
        return None
    return transient(response, kind) if transient is not None else f"HTTP {response.status_code}"


@dataclass(frozen=True)
class Attempt:
    """One failed try that is about to be retried (for logs and tests)."""

    kind: str
    number: int  # 1-based: the try that failed
    reason: str
    status_code: int | None
    retry_after_s: float | None  # what the server asked for, if anything
    delay_s: float  # what will be waited


@dataclass
class GaveUp(Exception):
    """A transport error that ended the call: not retried by the policy, or retries ran out; with
    `send(..., give_up_on_status=True)` also retries running out on a status (`error` is then the
    last try's `RetryableStatus`)."""

    kind: str
    error: httpx.TransportError | RetryableStatus
    attempts: int
    elapsed_s: float
    retried: bool = field(default=False)

    def __post_init__(self) -> None:
        what = self.error.reason if isinstance(self.error, Retryable) else type(self.error).__name__
        super().__init__(f"{self.kind}: {what} after {self.attempts} attempt(s)")

    @property
    def never_sent(self) -> bool:
        """True when the last try surely never reached the server (and no earlier try did either:
        a policy that retries only never-sent errors guarantees that)."""
        return isinstance(self.error, NEVER_SENT_ERRORS)

    @property
    def status_code(self) -> int | None:
        """The last try's status when retries ran out on one; None for a transport error."""
        return self.error.status_code if isinstance(self.error, RetryableStatus) else None


def _is_retryable(policy: RetryPolicy) -> Callable[[BaseException], bool]:
    def check(exc: BaseException) -> bool:
        return isinstance(exc, Retryable) or policy.retries_error(exc)

    return check


_TIMEOUTS = {
    httpx.ConnectTimeout: "connection timed out",
    httpx.ReadTimeout: "no answer in time",
    httpx.WriteTimeout: "sending timed out",
    httpx.PoolTimeout: "no free connection in time",
}
_ERRNOS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.ECONNABORTED: "connection aborted",
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ETIMEDOUT: "connection timed out",
    errno.EPIPE: "connection closed while sending",
}


def transport_reason(exc: httpx.TransportError) -> str | None:
    """What a transport error means in words, from the OS error under it (None: nothing known)."""
    for kind, words in _TIMEOUTS.items():
        if isinstance(exc, kind):
            return words
    cause: BaseException | None = exc
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, socket.gaierror):
            if cause.errno == getattr(socket, "EAI_AGAIN", None):
                return "name lookup failed (temporary failure in name resolution)"
            return "host name not found"
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS certificate not trusted: {cause.verify_message}"
        if isinstance(cause, ssl.SSLError):
            return f"TLS failed: {cause.reason or cause}"
        if isinstance(cause, OSError) and cause.errno in _ERRNOS:
            return _ERRNOS[cause.errno]
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"the server broke the connection ({exc})" if str(exc) else "the server broke the connection"
    return None


def describe(exc: BaseException | None) -> str:
    """A failure in words: a `Retryable`'s reason, a transport error's meaning where known
    (`transport_reason`), else `Type: message`."""
    if exc is None:
        return "unknown error"
    if isinstance(exc, Retryable):
        return exc.reason
    if isinstance(exc, httpx.TransportError) and (reason := transport_reason(exc)):
        return reason
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def retrying(
    policy: RetryPolicy,
    kind: str = "call",
    *,
    on_retry: Callable[[Attempt], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
) -> AsyncRetrying:
    """A tenacity loop under `policy`: `Retryable` and the policy's transport errors are retried;
    after the last try the last exception is re-raised unchanged. Each retry goes to `on_retry`
    (which logs it in the provider's words, secrets scrubbed), else to this module's log."""

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        after = exc.retry_after if isinstance(exc, Retryable) else None
        return policy.delay(state.attempt_number, after)

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        event = Attempt(
            kind=kind,
            number=state.attempt_number,
            reason=describe(exc),
            status_code=exc.status_code if isinstance(exc, Retryable) else None,
            retry_after_s=exc.retry_after if isinstance(exc, Retryable) else None,
            delay_s=delay,
        )
        if on_retry is not None:
            on_retry(event)
        else:
            log.info("%s: %s; retry %d in %.2fs", kind, event.reason, event.number, delay)

    kwargs: dict[str, Any] = {}
    if sleep is not None:
        kwargs["sleep"] = sleep
    return AsyncRetrying(
        stop=stop_after_attempt(policy.attempts),
        wait=wait,
        retry=retry_if_exception(_is_retryable(policy)),
        before_sleep=before_sleep,
        reraise=True,
        **kwargs,
    )


async def send(
    call: Callable[[], Awaitable[httpx.Response]],
    policy: RetryPolicy,
    *,
    kind: str = "call",
    on_retry: Callable[[Attempt], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    transient: Transient | None = None,
    give_up_on_status: bool = False,
) -> httpx.Response:
    """Run `call` (one HTTP request, body read) under `policy`.

    A response is retried when the policy retries its status and `transient` (the provider's error
    mapping, see `retry_reason`) agrees. Returns the first response that is not retried, or the last
    one when tries run out (the caller maps it to an error; with `give_up_on_status` that raises
    `GaveUp` instead). Raises `GaveUp` for a transport error the policy does not retry or after the
    last try; any other exception propagates at once."""
    loop = asyncio.get_running_loop()
    started, tries = loop.time(), 0
    try:
        async for attempt in retrying(policy, kind, on_retry=on_retry, sleep=sleep):
            with attempt:
                tries += 1
                response = await call()
                if policy.retries_status(response.status_code):
                    await response.aread()
                    if (reason := retry_reason(response, policy, kind, transient)) is not None:
                        raise RetryableStatus(response, reason)
    except RetryableStatus as exc:
        if give_up_on_status:
            raise GaveUp(kind, exc, tries, loop.time() - started, retried=tries > 1) from None
        return exc.response
    except httpx.TransportError as exc:
        raise GaveUp(kind, exc, tries, loop.time() - started, retried=tries > 1) from exc
    return response
