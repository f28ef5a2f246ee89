"""A provider's HTTP connections, in shards.

httpcore looks at every connection and every queued request of its pool on each request it
sends, so one pool with hundreds of jobs in flight costs O(in flight) per request — quadratic over
a big run (at 200 in flight, most of the client's CPU). Several small `httpx.AsyncClient`s, each
with its own few connections, keep every scan short; requests go to them in turn.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import httpx

JOBS_PER_SHARD = 24  # requests in flight one pool serves before its scans start to show


class ClientShards:
    """`shards.pick()` is the client for the next request; `aclose()` closes them all."""

    def __init__(self, in_flight: int, connections: int, **client: Any) -> None:
        """`in_flight`: requests that may be under way at once; `connections`: how many this kind
        of request may hold in all (split evenly, at least 4 per shard)."""
        count = max(1, math.ceil(in_flight / JOBS_PER_SHARD))
        per_shard = max(4, math.ceil(connections / count)) if count > 1 else max(1, connections)
        limits = httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard)
        self.clients = [httpx.AsyncClient(limits=limits, **client) for _ in range(count)]
        self._next = itertools.cycle(self.clients)

    def pick(self) -> httpx.AsyncClient:
        return next(self._next)

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()
