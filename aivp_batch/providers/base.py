"""What the runner needs of a provider: submit, wait, download, cancel, upload.

A provider speaks one service's protocol and nothing else: it knows no shots, logs or budgets.
The runner journals the `Submission` (request id and URLs) before it calls `wait`, so a crashed
run can `attach` to the same request instead of paying for a new one.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


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


StatusCallback = Callable[[StatusUpdate], None]


class Provider(abc.ABC):
    """One hosted or local video service. Use as an async context manager."""

    name: str = "provider"

    async def __aenter__(self) -> Provider:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    async def check_auth(self) -> None:  # noqa: B027 - optional hook
        """Raise AuthError (one clear line) before anything is submitted."""

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
    async def download(self, url: str, dest: Path) -> int:
        """Stream `url` into `dest` (the caller passes a `.part` path); return the byte count."""

    @abc.abstractmethod
    async def cancel(self, submission: Submission) -> None:
        """Ask the service to cancel; errors are the provider's to swallow or raise."""

    def attach(self, data: dict[str, Any]) -> Submission:
        """Rebuild a Submission from a journalled record (crash resume)."""
        return Submission.from_dict(data)
