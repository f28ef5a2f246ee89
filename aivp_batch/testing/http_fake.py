"""The HTTP plumbing the fake servers (`FakeFal`, `FakeReplicate`) share.

`FakeHTTPServer` is a `ThreadingHTTPServer` with daemon threads and a deep backlog; `FakeHandler`
a keep-alive `BaseHTTPRequestHandler` that parses the URL, routes (`_route`, the subclass's),
turns `Answered` / `Reset` into "done" / an RST, drains an unread body, and sends responses
(`_send`, `_json`, `_send_file` with a `truncate` fault). `ThreadedFake` runs such a server on a
daemon thread with a temporary folder; use it as a context manager.
"""

from __future__ import annotations

import json
import random
import shutil
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

__all__ = ["CHUNK", "Answered", "FakeHTTPServer", "FakeHandler", "Reset", "ThreadedFake", "seed_of"]

CHUNK = 64 * 1024


def seed_of(payload: Any) -> int:
    """The payload's integer `seed`, else a random one (what a generation reports it used)."""
    seed = payload.get("seed") if isinstance(payload, dict) else None
    if isinstance(seed, int) and not isinstance(seed, bool):
        return seed
    return random.randint(0, 2**31 - 1)


class Reset(Exception):
    """Raised inside a handler to drop the connection with an RST, no response."""


class Answered(Exception):
    """Raised inside a handler once an error response (fault, auth, 404) has been sent."""


class FakeHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256  # many clients connect at once (the default backlog is 5)
    fake: Any  # the ThreadedFake this server answers for


class FakeHandler(BaseHTTPRequestHandler):
    """Keep-alive request plumbing; a subclass supplies `_route` and `_drain_body`."""

    protocol_version = "HTTP/1.1"  # keep-alive, like the real gateways
    disable_nagle_algorithm = True  # headers and body go out in separate writes: avoid 40 ms ACK stalls
    server: FakeHTTPServer
    timeout = 60

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if self.server.fake.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # plumbing ---------------------------------------------------------------
    @property
    def base(self) -> str:
        host = self.headers.get("Host") or f"{self.server.server_address[0]}:{self.server.server_address[1]}"
        return f"http://{host}"

    def _begin(self) -> None:
        """Per-request state, before routing."""
        self._reset_after = False

    def _route(self, method: str, segs: list[str]) -> None:
        raise NotImplementedError

    def _drain_body(self) -> None:
        """Read whatever of the request body the route left unread."""
        raise NotImplementedError

    def _dispatch(self, method: str) -> None:
        self._begin()
        url = urlsplit(self.path)
        self.query = parse_qs(url.query, keep_blank_values=True)
        segs = [s for s in url.path.split("/") if s]
        try:
            try:
                self._route(method, segs)
            except Answered:
                pass
            self._drain_body()  # an unread body would corrupt the next request on this connection
        except Reset:
            self._reset()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True

    def _length_chunks(self) -> Iterator[bytes]:
        """The request body by its Content-Length, streamed."""
        left = int(self.headers.get("Content-Length") or 0)
        while left > 0:
            chunk = self.rfile.read(min(left, CHUNK))
            if not chunk:
                raise ConnectionResetError("client closed mid-body")
            left -= len(chunk)
            yield chunk

    def _take_fault(self, on: str, subject: str) -> Any:
        """Count the call and take the fault that fires on it (None if none); a `slow` one has
        slept its `seconds` already."""
        fake = self.server.fake
        fake.count(on)
        f = fake.fault(on, subject)
        if f is not None and f.kind == "slow":
            time.sleep(f.seconds)
        return f

    def _default_headers(self) -> Iterable[tuple[str, str]]:
        """Headers every `_send` answer carries, before the call's own."""
        return ()

    def _respond(self, code: int, body: bytes, content_type: str, headers: Iterable[tuple[str, str]]) -> None:
        if self._reset_after:
            raise Reset
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _send(
        self, code: int, body: bytes, content_type: str, headers: Mapping[str, str] | None = None
    ) -> None:
        self._respond(code, body, content_type, [*self._default_headers(), *(headers or {}).items()])

    def _json(self, code: int, obj: Any, headers: Mapping[str, str] | None = None) -> None:
        self._send(code, json.dumps(obj).encode(), "application/json", headers)

    def _send_file(self, path: Path, content_type: str, truncate: bool) -> None:
        """Stream a file from disk with Content-Length (constant memory); `truncate`: half, then RST."""
        if self._reset_after:
            raise Reset
        size = path.stat().st_size
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        limit = size // 2 if truncate else size
        with path.open("rb") as fh:
            sent = 0
            while sent < limit:
                chunk = fh.read(min(CHUNK, limit - sent))
                if not chunk:
                    break
                self.wfile.write(chunk)
                sent += len(chunk)
        if truncate:
            raise Reset

    def _reset(self) -> None:
        """Drop the connection with an RST, no response (SO_LINGER 0)."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()  # the makefile holds a reference that would delay the real close
            self.connection.close()
        except OSError:
            pass


class ThreadedFake:
    """A fake served by `FakeHTTPServer` on `host:port` from a daemon thread. Use as a context manager.

    A subclass sets `stats` (with `calls` and `faults_fired` counters), `faults` (a `FaultPlan`),
    `verbose`, and `_handler()`; `_name` names the thread and the temporary folder (`_tmp`)."""

    _name = "ThreadedFake"
    stats: Any
    faults: Any
    verbose: bool

    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: FakeHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._tmp: Path | None = None

    def _handler(self) -> type[FakeHandler]:
        raise NotImplementedError

    def _prepare_tmp(self, tmp: Path) -> None:
        """Lay out the temporary folder before the server answers."""

    # lifecycle -------------------------------------------------------------
    def start(self) -> Self:
        self._tmp = Path(tempfile.mkdtemp(prefix=f"{self._name.lower()}-"))
        self._prepare_tmp(self._tmp)
        self._httpd = FakeHTTPServer((self._host, self._port), self._handler())
        self._httpd.fake = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=self._name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd, f"{self._name} is not started"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def serve_until_interrupted(self, name: str, note: str) -> None:
        """Serve (the command line's way) until Ctrl-C."""
        with self:
            print(f"{name} listening on {self.url} ({note}); Ctrl-C to stop", flush=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass

    # state ----------------------------------------------------------------
    def count(self, kind: str) -> None:
        with self._lock:
            self.stats.calls[kind] += 1

    def fault(self, on: str, subject: str) -> Any:
        """The fault that fires on this call (counted in `stats.faults_fired`), or None."""
        f = self.faults.take(on, subject)
        if f is not None:
            with self._lock:
                self.stats.faults_fired[f"{on}:{f.kind}"] += 1
        return f
