"""What the runner needs of a provider: submit, wait, download, cancel, upload.

A provider speaks one service's protocol and nothing else: it knows no shots, logs or budgets.
The runner journals the `Submission` (request id and URLs) before it calls `wait`, so a crashed
run can `attach` to the same request instead of paying for a new one.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import httpx

from ..errors import RequestFailed
from ..retry import Retryable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Submission:
    """An accepted request: everything needed to find it again."""

    request_id: str
    endpoint: str
    status_url: str | None = None
    response_url: str | None = None
    cancel_url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Submission:
        return cls(
            **{k: data.get(k) for k in ("request_id", "endpoint", "status_url", "response_url", "cancel_url")}
        )


@dataclass(frozen=True)
class StatusUpdate:
    state: str  # IN_QUEUE | IN_PROGRESS | COMPLETED
    queue_position: int | None = None
    logs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outcome:
    """A completed request's result."""

    output: dict[str, Any]
    video_url: str
    seed: int | None = None
    billed_units: float | None = None
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class UnitPrice:
    """The provider's own billing price of an endpoint: `unit_price` per `unit` (free text)."""

    unit_price: float
    unit: str
    currency: str = "USD"


@dataclass(frozen=True)
class HistoryRow:
    """One request in the provider's request history, with the body it was sent."""

    request_id: str
    endpoint: str
    sent_at: float  # epoch seconds
    json_input: Any = None
    json_output: Any = None
    status_code: int | None = None


@dataclass(frozen=True)
class Download:
    """A finished download: its size and the sha256 of its bytes, taken as they arrived."""

    size: int
    sha256: str


class ClipSink:
    """Where a provider writes a download: the bytes are hashed on their way to disk (the clip is
    never read a second time to hash it), and gathered into blocks written from a worker thread,
    so a big clip never stalls the event loop.
    `async with ClipSink(dest) as sink: await sink.write(chunk)`."""

    BLOCK = 1 << 20
    INLINE_TAIL = 1 << 16  # a tail up to this size is written on the loop (most preview-size clips whole)

    def __init__(self, dest: Path) -> None:
        self.dest = Path(dest)
        self._hash = hashlib.sha256()
        self._buffer = bytearray()
        self._file: BinaryIO | None = None
        self.size = 0

    async def __aenter__(self) -> ClipSink:
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.dest, "wb")  # noqa: SIM115 - closed in __aexit__
        return self

    async def write(self, chunk: bytes) -> None:
        self._buffer += chunk
        self.size += len(chunk)
        if len(self._buffer) >= self.BLOCK:
            block, self._buffer = self._buffer, bytearray()  # handed over whole: no copy of it
            await asyncio.to_thread(self._put, block)

    def _put(self, block: bytes | bytearray) -> None:
        assert self._file is not None
        self._hash.update(block)  # hashlib and file writes release the GIL for big blocks
        self._file.write(block)

    def result(self) -> Download:
        return Download(self.size, self._hash.hexdigest())

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._file is not None
        if exc_type is not None:
            self._file.close()  # a failed transfer: nothing more to write
            return
        tail, self._buffer = self._buffer, bytearray()
        if len(tail) <= self.INLINE_TAIL:  # a small clip: one short write, cheaper than a thread hop
            self._finish(tail)
        else:  # when the page cache is full of dirty clip pages, a long write can stall a while
            await asyncio.to_thread(self._finish, tail)

    def _finish(self, tail: bytes | bytearray) -> None:
        assert self._file is not None
        try:
            if tail:
                self._put(tail)
        finally:
            self._file.close()


async def receive(response: httpx.Response, dest: Path) -> Download:
    """A successful streamed response's body into `dest` through a `ClipSink`. A body shorter than
    its Content-Length is `Retryable`: the transfer broke, and the file starts again."""
    async with ClipSink(dest) as sink:
        async for chunk in response.aiter_bytes():  # as they arrive: re-chunking would copy them
            await sink.write(chunk)
    expected = response.headers.get("content-length")
    if expected and expected.isdigit() and response.num_bytes_downloaded != int(expected):
        raise Retryable(f"short body ({response.num_bytes_downloaded} of {expected} bytes)")
    return sink.result()


StatusCallback = Callable[[StatusUpdate], None]


class Provider(abc.ABC):
    """One hosted or local video service. Use as an async context manager."""

    name: str = "provider"
    # Seconds a submitted request may wait to start before the provider drops it unbilled (sent
    # with every submit), or None. It is what makes "that lost submit was never accepted" provable.
    start_timeout: float | None = None
    client_timeout: float | None = None  # how long `wait` waits before cancelling, or None

    def _clean(self, text: str) -> str:
        """`text` with the provider's secrets taken out (a provider with a key overrides this)."""
        return text

    async def _within_client_timeout(
        self, sub: Submission, waiting: Awaitable[Outcome], noun: str
    ) -> Outcome:
        """Await `waiting`; after `client_timeout` s cancel `sub` and fail (the provider may bill it)."""
        if self.client_timeout is None:
            return await waiting
        try:
            async with asyncio.timeout(self.client_timeout):
                return await waiting
        except TimeoutError:
            try:
                await self.cancel(sub)
            except Exception as exc:  # noqa: BLE001 - the timeout is the error to report
                log.debug(self._clean(f"cancel of {sub.request_id} after timeout failed: {exc}"))
            raise RequestFailed(
                f"{sub.endpoint}: timed out after {self.client_timeout:g}s; "
                f"cancelled {noun} {sub.request_id}",
                request_id=sub.request_id,
                may_be_billed=True,
            ) from None

    async def __aenter__(self) -> Provider:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    async def check_auth(self, endpoints: Sequence[str] = ()) -> None:  # noqa: B027 - optional hook
        """Raise AuthError (one clear line) before anything is uploaded or submitted; a provider may
        also load what it needs for `endpoints` here (prices)."""

    @property
    def upload_scope(self) -> str:
        """Where uploads live: a URL uploaded to one storage host is no use on another."""
        return self.name

    async def unit_price(self, endpoint: str) -> UnitPrice | None:
        """The billing price of `endpoint`, when the provider publishes one."""
        return None

    async def history(self, endpoint: str, since: float) -> list[HistoryRow] | None:
        """Requests to `endpoint` sent since `since` (epoch s), with their bodies; None when the
        provider keeps no history, so a lost submit cannot be looked up."""
        return None

    @abc.abstractmethod
    async def upload(self, path: Path) -> str:
        """Make a local file reachable by the service; return the URL to put in a payload."""

    @abc.abstractmethod
    async def submit(self, endpoint: str, payload: dict[str, Any]) -> Submission:
        """Submit once. Must not retry unless the request surely did not reach the service."""

    @abc.abstractmethod
    async def wait(self, submission: Submission, on_status: StatusCallback | None = None) -> Outcome:
        """Wait for completion; raise RequestFailed for a final failure."""

    @abc.abstractmethod
    async def download(self, url: str, dest: Path) -> Download:
        """Stream `url` into `dest` (the caller passes a `.part` path) through a `ClipSink`; return
        its size and sha256."""

    @abc.abstractmethod
    async def cancel(self, submission: Submission) -> None:
        """Ask the service to cancel; errors are the provider's to swallow or raise."""

    def attach(self, data: dict[str, Any]) -> Submission:
        """Rebuild a Submission from a journalled record (crash resume)."""
        return Submission.from_dict(data)
