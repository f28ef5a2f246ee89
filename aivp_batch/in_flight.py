"""How many requests a run has in flight at the provider (`provider.max_in_flight`).

A run alone holds an `asyncio.Semaphore`. Members of a sweep running in parallel processes (a
launcher other than the basic one) hold one limit between them, as they hold one budget: each
request also holds one of `max_in_flight` slots, `<sweep dir>/.slots/NNN.lock`, by an `flock`.
A member killed while holding slots frees them with its process. Where members compose different
limits, each uses slots 0 to its own limit − 1, so the sweep never has more in flight than the
largest of them.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import random
from pathlib import Path
from typing import Protocol

from .store_lock import open_lock_file, try_flock


class Slots(Protocol):
    """What the runner takes a slot from before a request, and gives it back to when the result is in."""

    async def acquire(self) -> object: ...

    def release(self) -> None: ...


def slots_for(max_in_flight: int, shared_dir: Path | None = None) -> Slots:
    """This run's slots: its own, or shared through `shared_dir` with the sweep's other members."""
    limit = max(1, max_in_flight)
    return asyncio.Semaphore(limit) if shared_dir is None else SharedSlots(shared_dir, limit)


class SharedSlots:
    """`limit` slots shared by processes through lock files. One waiter per process scans for a
    free slot at a time (the rest queue behind it), every `poll_s` while all are taken, so waiting
    costs at most `limit` non-blocking flock calls a poll, whatever the number of jobs waiting."""

    def __init__(self, folder: Path, limit: int, poll_s: float = 0.02) -> None:
        self.folder, self.limit, self.poll_s = folder, limit, poll_s
        self._mine = asyncio.Semaphore(limit)  # no more of this process's jobs compete than it may hold
        self._scan = asyncio.Lock()
        self._fds: dict[int, int] = {}
        self._held: list[int] = []

    async def acquire(self) -> bool:
        await self._mine.acquire()
        try:
            async with self._scan:
                while (slot := self._take_free()) is None:
                    await asyncio.sleep(self.poll_s)
        except BaseException:
            self._mine.release()
            raise
        self._held.append(slot)
        return True

    def release(self) -> None:
        slot = self._held.pop()  # slots are alike: any one this process holds
        fcntl.flock(self._fds[slot], fcntl.LOCK_UN)
        self._mine.release()

    def _take_free(self) -> int | None:
        held = set(self._held)
        start = random.randrange(self.limit)  # members starting at once do not all try slot 0 first
        for k in range(self.limit):
            slot = (start + k) % self.limit
            if slot not in held and try_flock(self._fd(slot)):
                return slot
        return None

    def _fd(self, slot: int) -> int:
        if slot not in self._fds:
            self._fds[slot] = open_lock_file(self.folder / f"{slot:03d}.lock")
        return self._fds[slot]

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)  # drops any lock still held
        self._fds.clear()
        self._held.clear()
