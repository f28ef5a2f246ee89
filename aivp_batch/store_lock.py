"""Locks on the job store, across processes: one run per output folder, one render per job.

- **One run per output folder** (`run_lock`): two runs of the same command on one project (two
  terminals, a cron job and a person) would write the same logs and plan.md; the second waits.
- **One render per job identity** (`JobLocks`): runs that write to different folders but share
  the store (the members of a sweep, in parallel processes under a launcher) may both want the
  same job. Whoever holds the job's lock renders it; the other waits, then finds it done in the
  journal and reuses it, so nothing is paid twice.

Every lock is `filelock`'s `UnixFileLock`, an `flock(2)`: the kernel drops it when the holding
process dies, however it dies, so a stale lock never blocks. Who holds a run lock (pid, host,
since) is written beside it, in `<name>.lock.json`, for the waiting run's message only.

On a shared file system, flock works across hosts on NFSv4 and Lustre/GPFS with locking enabled;
on NFSv3 without lockd, or SMB mounts without byte-range locks, it is local to each host, so keep
one store per host there (`store_dir=`).
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType

from filelock import FileLock, Timeout, UnixFileLock

from .errors import InputError
from .files import atomic_write_json, ensure_dir
from .records import now_iso, read_json

# On POSIX, flock only: filelock's fallback to a "soft" lock file would outlive a killed holder.
_LOCK = UnixFileLock if os.name == "posix" else FileLock


class StoreBusy(InputError):
    """Another run holds the store and we may not (or no longer) wait for it."""


class StoreLock:
    """`with StoreLock(store_dir, wait_s):` — `wait_s=None` waits as long as it takes, 0 not at all.
    `name` picks the lock (`<store>/<name>.lock`), `what` names what it guards in messages."""

    def __init__(
        self,
        store_dir: Path,
        wait_s: float | None = None,
        poll_s: float = 0.2,
        name: str = "run",
        what: str | None = None,
    ) -> None:
        self.store_dir = store_dir
        self.wait_s = wait_s
        self.poll_s = poll_s
        self.what = what or str(store_dir)
        self._lock = _LOCK(store_dir / f"{name}.lock")
        self._info = store_dir / f"{name}.lock.json"

    def holder(self) -> str:
        """`since <time>, pid <n> on <host>` of the current holder, as far as it wrote it down."""
        info = read_json(self._info) or {}
        where = f" on {info['host']}" if info.get("host") else ""
        return f"since {info.get('since', '?')}, pid {info.get('pid', '?')}{where}"

    def __enter__(self) -> StoreLock:
        ensure_dir(self._info.parent)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            self._wait()
        except OSError as exc:  # e.g. a file system without flock
            raise StoreBusy(f"cannot lock the job store {self.store_dir} ({exc.strerror or exc})") from None
        atomic_write_json(
            self._info,
            {"pid": os.getpid(), "host": socket.gethostname(), "since": now_iso(), "argv": sys.argv[1:]},
            durable=False,
        )
        return self

    def _wait(self) -> None:
        busy = f"another run holds {self.what} {self.holder()}"
        if self.wait_s is not None and self.wait_s <= 0:
            raise StoreBusy(f"{busy}; not waiting (lock_wait_s=0)")
        limit = "" if self.wait_s is None else f" for up to {self.wait_s:g} s (lock_wait_s)"
        print(f"aivp-batch: {busy}; waiting{limit}", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        try:
            self._lock.acquire(timeout=-1 if self.wait_s is None else self.wait_s, poll_interval=self.poll_s)
        except Timeout:
            raise StoreBusy(f"{busy}; gave up after {time.monotonic() - t0:.0f} s (lock_wait_s)") from None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._info.unlink(missing_ok=True)
        self._lock.release()


def run_lock(store_dir: Path, output_dir: Path, wait_s: float | None = None) -> StoreLock:
    """The lock of one output folder (its logs, plan.md and delivered clips), kept in the store."""
    digest = hashlib.sha256(str(output_dir.resolve()).encode()).hexdigest()[:16]
    return StoreLock(store_dir, wait_s, name=f"locks/run-{digest}", what=str(output_dir))


class JobLocks:
    """One render per job identity across processes: `async with locks.hold(identity):` holds
    `<store>/jobs/<identity>.lock`, polling without blocking the event loop while another process
    renders it (`on_wait` is told once, when the job is busy elsewhere)."""

    def __init__(self, store_dir: Path, poll_s: float = 0.25) -> None:
        self.dir = store_dir / "jobs"
        self.poll_s = poll_s

    @asynccontextmanager
    async def hold(self, identity: str, on_wait: Callable[[], None] | None = None) -> AsyncIterator[None]:
        # A bare flock, not filelock: one per job, and filelock's bookkeeping costs more than the lock.
        fd = open_lock_file(self.dir / f"{identity}.lock")
        try:
            while not try_flock(fd):
                if on_wait is not None:
                    on_wait()
                    on_wait = None
                await asyncio.sleep(self.poll_s)
            yield
        finally:
            os.close(fd)  # closing the descriptor drops the lock


def open_lock_file(path: Path) -> int:
    """A descriptor to flock (`try_flock`); closing it drops the lock."""
    ensure_dir(path.parent)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


def try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
