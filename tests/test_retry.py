"""aivp_batch.retry over real loopback HTTP (the fake Replicate server), no mocks."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from aivp_batch.retry import (
    KIND_RULES,
    NEVER_SENT_ERRORS,
    Attempt,
    GaveUp,
    Retryable,
    RetryableStatus,
    RetryPolicy,
    describe,
    parse_retry_after,
    policies,
    policy_for,
    policy_table,
    retry_after_of,
    retry_reason,
    retrying,
    send,
    statuses,
    transport_reason,
)
from aivp_batch.testing.replicate_server import FakeReplicate, ReplicateFault

TOKEN = "r8_retry-test"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FAST = {"attempts": 4, "base_s": 0.01, "max_s": 0.02}
CREATE = "/v1/models/google/veo-3.1/predictions"


def server(*faults: ReplicateFault, **kw: Any) -> FakeReplicate:
    return FakeReplicate(token=TOKEN, faults=faults, **kw)


async def call(
    url: str,
    kind: str,
    table: dict[str, RetryPolicy],
    method: str = "GET",
    *,
    transient: Any = None,
    give_up_on_status: bool = False,
    **kw: Any,
):
    events: list[Attempt] = []
    async with httpx.AsyncClient(timeout=5) as http:
        started = time.monotonic()
        response = await send(
            lambda: http.request(method, url, headers=AUTH, **kw),
            policy_for(table, kind),
            kind=kind,
            on_retry=events.append,
            transient=transient,
            give_up_on_status=give_up_on_status,
        )
        return response, events, time.monotonic() - started


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- policies as data


def test_the_table_keeps_creates_to_never_sent_failures() -> None:
    table = policy_table()
    assert set(KIND_RULES) <= set(table) and "default" in table
    create = table["create"]
    assert create.retry_on == (429,) and create.connect_only and create.transport
    assert create.retries_error(httpx.ConnectError("refused"))
    assert not create.retries_error(httpx.ReadTimeout("slow")) and not create.retries_status(500)
    get = table["get"]
    assert all(get.retries_status(c) for c in (429, 500, 502, 503, 504)) and not get.retries_status(404)
    assert get.retries_error(httpx.ReadTimeout("slow")) and not get.connect_only


def test_config_overrides_per_kind_and_status_shorthands() -> None:
    table = policy_table(
        attempts=3, base_s=0.1, kinds={"get": {"retry_on": [429, "5xx"]}, "poll": {"attempts": 9}}
    )
    assert table["get"].retry_on[0] == 429 and 599 in table["get"].retry_on and table["get"].attempts == 3
    assert table["poll"].attempts == 9 and table["create"].retry_on == (429,)  # the rules stay under config
    assert policy_for(table, "unheard-of") is table["default"]
    assert statuses([429, "5xx", 503]) == (429, *range(500, 600))
    with pytest.raises(ValueError, match="unknown keys"):
        policy_table(kinds={"get": {"retries": 2}})
    with pytest.raises(ValueError, match="at least 1"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match="retry.kinds.get: must be a mapping"):
        policy_table(kinds={"get": [429]})


def test_policies_turn_a_providers_retry_argument_into_its_table() -> None:
    rules = {"submit": {"retry_on": [429], "connect_only": True}, "poll": {}}  # a provider's own kinds
    default = policies(None, rules)
    assert set(default) == {"submit", "poll", "default"} and default["submit"].connect_only
    numbers = policies(RetryPolicy(attempts=3, base_s=0.1, max_retry_after_s=5.0), rules)
    assert numbers["poll"].attempts == numbers["submit"].attempts == 3 and numbers["submit"].retry_on == (
        429,
    )
    assert numbers["poll"].max_retry_after_s == 5.0 and numbers["poll"].base_s == 0.1
    conf = policies({"attempts": 2, "kinds": {"poll": {"retry_on": [503]}, "extra": None}}, rules)
    assert conf["poll"].retry_on == (503,) and conf["extra"].attempts == 2 and conf["submit"].connect_only
    assert policies(conf, rules) == conf  # a kind → policy table is taken as it is
    assert set(policies()) == {*KIND_RULES, "default"}  # without rules: the module's own kinds
    with pytest.raises(TypeError, match="expected a RetryPolicy"):
        policies(8)


def test_delay_is_backoff_or_the_servers_word_capped() -> None:
    p = RetryPolicy(base_s=0.5, max_s=4.0, jitter=False, max_retry_after_s=10.0)
    assert [p.delay(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert p.delay(1, retry_after=7.0) == 7.0 and p.delay(1, retry_after=300.0) == 10.0
    jittered = RetryPolicy(base_s=1.0, max_s=100.0)
    assert all(0.5 <= jittered.delay(1) <= 1.5 for _ in range(50))


def test_parse_retry_after() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("5") == 5.0 and parse_retry_after("0.25") == 0.25
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 28 <= (parse_retry_after(soon) or 0) <= 30  # against the clock when no `now` is given


def test_retry_after_header_wins_over_the_body() -> None:
    def response(headers: dict[str, str], body: bytes) -> httpx.Response:
        return httpx.Response(429, headers=headers, content=body)

    assert retry_after_of(response({"Retry-After": "3"}, b'{"retry_after": 9}')) == 3.0
    assert retry_after_of(response({}, b'{"detail": "throttled", "retry_after": 9}')) == 9.0
    assert retry_after_of(response({}, b"<html>slow down</html>")) is None


# ---------------------------------------------------------------- over the wire


def test_get_retries_5xx_then_answers() -> None:
    with server(ReplicateFault("503", on="account", times=2)) as rep:
        response, events, _ = asyncio.run(call(f"{rep.url}/v1/account", "get", policy_table(**FAST)))
        assert response.status_code == 200 and rep.stats.calls["account"] == 3
    assert [(e.number, e.status_code) for e in events] == [(1, 503), (2, 503)]


def test_retry_after_header_is_honoured() -> None:
    fault = ReplicateFault("429", on="account", retry_after="0.3")
    with server(fault) as rep:
        response, events, elapsed = asyncio.run(call(f"{rep.url}/v1/account", "get", policy_table(**FAST)))
    assert response.status_code == 200
    assert events[0].retry_after_s == 0.3 and events[0].delay_s == 0.3 and elapsed >= 0.3


def test_the_bodys_retry_after_is_honoured_without_a_header() -> None:
    fault = ReplicateFault("429", on="account", body_retry_after=0.25)
    with server(fault) as rep:
        response, events, elapsed = asyncio.run(call(f"{rep.url}/v1/account", "get", policy_table(**FAST)))
    assert response.status_code == 200 and events[0].delay_s == 0.25 and elapsed >= 0.25


def test_an_http_date_retry_after_is_honoured() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=1), usegmt=True)
    with server(ReplicateFault("429", on="account", retry_after=when)) as rep:
        response, events, _ = asyncio.run(call(f"{rep.url}/v1/account", "get", policy_table(**FAST)))
    assert response.status_code == 200 and 0.0 <= events[0].delay_s <= 1.0


def test_a_5xx_on_create_is_returned_not_retried() -> None:
    with server(ReplicateFault("500", on="create", applied=True)) as rep:
        response, events, _ = asyncio.run(
            call(rep.url + CREATE, "create", policy_table(**FAST), "POST", json={"input": {"prompt": "x"}})
        )
        assert response.status_code == 500 and events == []
        assert rep.stats.calls["create"] == 1 and rep.stats.creates == 1  # it was created: unknown outcome


def test_a_429_on_create_is_retried_and_creates_once() -> None:
    with server(ReplicateFault("429", on="create", times=2, retry_after="0.05")) as rep:
        response, events, _ = asyncio.run(
            call(rep.url + CREATE, "create", policy_table(**FAST), "POST", json={"input": {"prompt": "x"}})
        )
        assert response.status_code == 201 and len(events) == 2
        assert rep.stats.calls["create"] == 3 and rep.stats.creates == 1 and rep.stats.duplicate_creates == 0


def test_retries_running_out_on_a_status_return_the_last_answer() -> None:
    with server(ReplicateFault("429", on="account", times=None, retry_after="0")) as rep:
        response, events, _ = asyncio.run(call(f"{rep.url}/v1/account", "get", policy_table(**FAST)))
        assert response.status_code == 429 and len(events) == FAST["attempts"] - 1
        assert rep.stats.calls["account"] == FAST["attempts"]


def test_a_refused_connection_is_retried_even_for_creates_then_gives_up() -> None:
    url = f"http://127.0.0.1:{free_port()}{CREATE}"
    with pytest.raises(GaveUp) as info:
        asyncio.run(call(url, "create", policy_table(**FAST), "POST", json={"input": {}}))
    assert info.value.never_sent and info.value.attempts == FAST["attempts"] and info.value.retried
    assert isinstance(info.value.error, NEVER_SENT_ERRORS)


def test_a_lost_create_answer_is_not_retried() -> None:
    with server(ReplicateFault("reset_after", on="create")) as rep:
        with pytest.raises(GaveUp) as info:
            asyncio.run(
                call(
                    rep.url + CREATE, "create", policy_table(**FAST), "POST", json={"input": {"prompt": "x"}}
                )
            )
        assert not info.value.never_sent and info.value.attempts == 1
        assert rep.stats.calls["create"] == 1 and rep.stats.creates == 1


def test_a_reset_get_is_retried() -> None:
    with server(ReplicateFault("reset", on="account")) as rep:
        response, events, _ = asyncio.run(call(f"{rep.url}/v1/account", "get", policy_table(**FAST)))
        assert response.status_code == 200 and len(events) == 1 and rep.stats.calls["account"] == 2


def test_a_policy_without_transport_retries_gives_up_at_once() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1/account"
    table = policy_table(**FAST, kinds={"get": {"transport": False}})
    with pytest.raises(GaveUp) as info:
        asyncio.run(call(url, "get", table))
    assert info.value.attempts == 1 and not info.value.retried


def test_retrying_blocks_retry_what_they_raise_as_retryable() -> None:
    async def main() -> tuple[int, list[Attempt]]:
        tries, events = 0, []
        async for attempt in retrying(RetryPolicy(**FAST), "short body", on_retry=events.append):
            with attempt:
                tries += 1
                if tries < 3:
                    raise Retryable("short body", retry_after=0.01)
        return tries, events

    tries, events = asyncio.run(main())
    assert tries == 3 and [e.reason for e in events] == ["short body", "short body"]
    assert all(e.delay_s == 0.01 for e in events)


# ---------------------------------------------------------------- a provider's error mapping


def test_the_providers_mapping_has_the_last_word_on_a_listed_status() -> None:
    seen: list[tuple[int, str]] = []

    def gateway_only(response: httpx.Response, kind: str) -> str | None:
        seen.append((response.status_code, kind))
        return f"HTTP {response.status_code} from the gateway" if response.status_code == 503 else None

    with server(ReplicateFault("503", on="account", times=2)) as rep:
        url = f"{rep.url}/v1/account"
        response, events, _ = asyncio.run(call(url, "get", policy_table(**FAST), transient=gateway_only))
        assert response.status_code == 200 and rep.stats.calls["account"] == 3
    assert [e.reason for e in events] == ["HTTP 503 from the gateway"] * 2 and seen == [(503, "get")] * 2
    with server(ReplicateFault("500", on="account")) as rep:  # listed, but the mapping calls it an answer
        url = f"{rep.url}/v1/account"
        response, events, _ = asyncio.run(call(url, "get", policy_table(**FAST), transient=gateway_only))
        assert response.status_code == 500 and events == [] and rep.stats.calls["account"] == 1
    unlisted = httpx.Response(404)
    assert retry_reason(unlisted, RetryPolicy(), "get", gateway_only) is None and seen[-1] == (500, "get")
    assert retry_reason(httpx.Response(502), RetryPolicy()) == "HTTP 502"  # no mapping: the status decides


def test_give_up_on_status_raises_when_retries_run_out_on_an_answer() -> None:
    with server(ReplicateFault("429", on="account", times=None, retry_after="0")) as rep:
        with pytest.raises(GaveUp) as info:
            asyncio.run(call(f"{rep.url}/v1/account", "get", policy_table(**FAST), give_up_on_status=True))
        assert rep.stats.calls["account"] == FAST["attempts"]
    gave_up = info.value
    assert gave_up.status_code == 429 and gave_up.attempts == FAST["attempts"] and gave_up.retried
    assert not gave_up.never_sent and isinstance(gave_up.error, RetryableStatus)
    assert gave_up.error.response.status_code == 429 and str(gave_up) == "get: HTTP 429 after 4 attempt(s)"


def test_transport_errors_are_described_in_words() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1/account"
    with pytest.raises(GaveUp) as info:
        asyncio.run(call(url, "get", policy_table(attempts=1)))
    assert info.value.status_code is None and describe(info.value.error) == "connection refused"
    assert describe(httpx.ReadTimeout("slow")) == "no answer in time"
    assert (
        transport_reason(httpx.ReadError("odd")) is None
        and describe(httpx.ReadError("odd")) == "ReadError: odd"
    )
    assert describe(Retryable("short body")) == "short body" and describe(ValueError()) == "ValueError"


def test_a_retry_is_logged_here_only_when_the_caller_does_not(caplog: pytest.LogCaptureFixture) -> None:
    async def main(on_retry: Any) -> None:
        tries = 0
        async for attempt in retrying(RetryPolicy(**FAST), "poll", on_retry=on_retry):
            with attempt:
                tries += 1
                if tries < 2:
                    raise Retryable("HTTP 503")

    caplog.set_level(logging.INFO, logger="aivp_batch.retry")
    events: list[Attempt] = []
    asyncio.run(main(events.append))  # the caller logs it, in its words and with its secrets scrubbed
    assert len(events) == 1 and not [r for r in caplog.records if r.name == "aivp_batch.retry"]
    asyncio.run(main(None))
    assert [r.getMessage().split(";")[0] for r in caplog.records if r.name == "aivp_batch.retry"] == [
        "poll: HTTP 503"
    ]
