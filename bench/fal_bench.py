#!/usr/bin/env python
"""Benchmark of the fal provider against the fake fal server (a benchmark, not a test).

Three ways of rendering the same T2V jobs on a `FakeFal` with a fixed generation latency:

- **aivp-batch**: the real command (`python -m aivp_batch …`) as a subprocess on a synthetic AIVP
  project of N shots, `provider.max_in_flight=K`; its CPU time and peak RSS come from `wait4`.
- **fal-client**: the official `fal_client.AsyncClient` (submit + `handle.get()`, its default
  0.1 s status polling) under an `asyncio.Semaphore(K)`, plus an httpx download per clip.
- **spec baseline**: the spec's approach (the old shell script) with plain httpx: one clip at a
  time, submit, poll the status URL every 3 s, get the result, download. It is run on fewer jobs
  (`--baseline-jobs`) and extrapolated linearly to N.

The fake server runs in a separate process (its CPU is not counted), and a second pass serves
padded clips (`--big-mb`) to check that the command's peak RSS stays flat while downloading.

    .venv/bin/python bench/fal_bench.py [--jobs 300 --in-flight 50 --latency 2 --baseline-jobs 20 --big-mb 20]

Prints a markdown results table and writes it, with the machine and the command, to
`bench/results.md` (`--out`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing as mp
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from aivp_batch.snapshot import SNAPSHOT_DIR

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SCHEMAS = SNAPSHOT_DIR  # the bundled snapshot
TEMPLATE = REPO / "examples" / "short-film" / "storyboard" / "storyboard-final" / "shots" / "shot-03.md"
KEY = "bench-key-0000"  # the fake server's key; not a secret
QUEUE_KINDS = ("submit", "status", "stream", "result", "cancel")
ALL_KINDS = (*QUEUE_KINDS, "download", "token", "upload", "schema")
SPEC_POLL_S = 3.0
CLIP_DURATION_S = 5


# --------------------------------------------------------------------------- the fake server


def _server_main(conn: Any, schemas: str, latency: float, video_size: int | None) -> None:
    """Child process: a FakeFal plus first-submit / last-download timestamps, driven over a Pipe."""
    from aivp_batch.testing import fal_server
    from aivp_batch.testing.fal_server import FakeFal, FalStats, clip_for

    marks: dict[str, float | None] = {"first_submit": None, "last_download": None}
    lock = threading.Lock()
    handler = fal_server._Handler
    orig_submit, orig_download = handler._submit, handler._download

    def _submit(self: Any, endpoint: str) -> None:
        now = time.monotonic()
        with lock:
            if marks["first_submit"] is None:
                marks["first_submit"] = now
        orig_submit(self, endpoint)

    def _download(self: Any, name: str) -> None:
        try:
            orig_download(self, name)
        finally:
            now = time.monotonic()
            with lock:
                marks["last_download"] = max(marks["last_download"] or 0.0, now)

    handler._submit, handler._download = _submit, _download
    clip_for(float(CLIP_DURATION_S), video_size)  # encode (and pad) the served clip up front
    fal = FakeFal(Path(schemas), key=KEY, latency_s=latency, video_size_bytes=video_size, port=0)
    with fal:
        conn.send(fal.url)
        while True:
            cmd = conn.recv()
            if cmd == "reset":
                with fal._lock:
                    fal.stats = FalStats()
                with lock:
                    marks.update(first_submit=None, last_download=None)
                conn.send(True)
            elif cmd == "stats":
                with fal._lock:
                    stats = {
                        "calls": dict(fal.stats.calls),
                        "duplicate_submits": fal.stats.duplicate_submits,
                        "max_open_streams": fal.stats.max_open_streams,
                    }
                with lock:
                    first, last = marks["first_submit"], marks["last_download"]
                stats["span_s"] = None if first is None or last is None else last - first
                conn.send(stats)
            else:
                conn.send(True)
                return


class Server:
    def __init__(self, latency: float, video_size: int | None = None) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=_server_main, args=(child, str(SCHEMAS), latency, video_size), daemon=True
        )
        self.proc.start()
        if not self.conn.poll(120):
            raise RuntimeError("the fake fal server did not start")
        self.url: str = self.conn.recv()

    def reset(self) -> None:
        self.conn.send("reset")
        self.conn.recv()

    def stats(self) -> dict[str, Any]:
        self.conn.send("stats")
        return self.conn.recv()

    def stop(self) -> None:
        try:
            self.conn.send("stop")
            self.conn.recv()
        except (OSError, EOFError):
            pass
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()


# --------------------------------------------------------------------------- the project


def make_project(root: Path, n: int) -> Path:
    """An AIVP project of `n` T2V shots (shot-03's layout: no keyframe), each prompt distinct."""
    template = TEMPLATE.read_text(encoding="utf-8")
    text = (
        template.replace("4s", f"{CLIP_DURATION_S}s")
        .replace("4秒", f"{CLIP_DURATION_S}秒")
        .replace("# Shot 1.3", "# Shot {i}")
        .replace("| Shot ID | 1.3 |", "| Shot ID | {i} |")
        .replace("电影写实风格", "第{i}号镜头，电影写实风格")
        .replace("A woman with auburn hair", "Take {i}: a woman with auburn hair")
        .replace("Static camera. The woman", "Static camera, take {i}. The woman")
    )
    shots = root / "storyboard" / "storyboard-final" / "shots"
    shots.mkdir(parents=True)
    for i in range(1, n + 1):
        (shots / f"shot-{i:03d}.md").write_text(text.replace("{i}", str(i)), encoding="utf-8")
    return root


# --------------------------------------------------------------------------- aivp-batch


@dataclass
class CliRun:
    code: int
    wall_s: float
    cpu_s: float
    maxrss_mb: float
    stdout: str
    stderr: str
    run_dir: Path
    summary: dict[str, Any] = field(default_factory=dict)


def run_cli(
    project: Path, url: str, run_dir: Path, cache: Path, *extra: str, profile: Path | None = None
) -> CliRun:
    """`python -m aivp_batch …` as a child; CPU and peak RSS of that child alone (wait4)."""
    overrides = [
        f"project_dir={project}",
        f"provider.queue_url={url}",
        f"provider.rest_url={url}",
        f"provider.cdn_url={url}",
        f"provider.schema_url={url}",
        f"provider.api_url={url}",
        "budget_usd=1000",
        f"schema_cache_dir={cache}",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]
    prefix = [sys.executable, "-c", _PROFILE.format(str(profile))] if profile else [sys.executable, "-m"]
    env = {
        **os.environ,
        "FAL_KEY": KEY,
        "HOME": str(cache.parent),  # no ~/.env or user cache gets involved
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    out_path, err_path = run_dir.with_suffix(".out"), run_dir.with_suffix(".err")
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("w") as out, err_path.open("w") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [*prefix, "aivp_batch", *overrides], cwd=cache.parent, env=env, stdout=out, stderr=err
        )
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    summary_file = run_dir / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    return CliRun(
        code=proc.returncode,
        wall_s=wall,
        cpu_s=ru.ru_utime + ru.ru_stime,
        maxrss_mb=ru.ru_maxrss / 1024,
        stdout=out_path.read_text(errors="replace"),
        stderr=err_path.read_text(errors="replace"),
        run_dir=run_dir,
        summary=summary,
    )


# cProfile with a CPU-time timer (its default timer is wall-clock, which counts idle waits).
_PROFILE = (
    "import cProfile, runpy, sys, time\n"
    "p = cProfile.Profile(time.process_time)\n"
    "sys.argv[:2] = ['aivp_batch']\n"
    "p.enable()\n"
    "try:\n"
    "    runpy.run_module('aivp_batch', run_name='__main__', alter_sys=True)\n"
    "finally:\n"
    "    p.disable()\n"
    "    p.dump_stats({!r})\n"
)

_LINE = re.compile(r"^\[\s*(\d+(?:\.\d+)?)s\] (\S+)\s+(\S+)")


def progress_span(stdout: str) -> tuple[float | None, float | None]:
    """(first `queued`, last `done`) offsets from the command's plain progress lines (0.1 s)."""
    queued, done = [], []
    for line in stdout.splitlines():
        m = _LINE.match(line)
        if m:
            t, status = float(m.group(1)), m.group(3)
            (queued if status == "queued" else done if status == "done" else []).append(t)
    return (min(queued) if queued else None, max(done) if done else None)


# --------------------------------------------------------------------------- the other clients


async def _download(http: httpx.AsyncClient, url: str, dest: Path) -> int:
    async with http.stream("GET", url) as response:
        response.raise_for_status()
        with dest.open("wb") as f:
            async for chunk in response.aiter_bytes(1 << 16):
                f.write(chunk)
    return dest.stat().st_size


def patch_fal_client(url: str) -> str:
    """Point fal_client's module-level URLs (built from `https://` hosts at import) at `url`."""
    import fal_client
    import fal_client.client as fc

    base = url.rstrip("/")
    fc.QUEUE_URL_FORMAT = base + "/"  # submit; status/result/cancel URLs come from the submit answer
    fc.RUN_URL_FORMAT = base + "/"
    fc.REST_URL = base  # CDN token (uploads only; none here)
    fc.CDN_URL = base
    return getattr(fal_client, "__version__", "?")


async def fal_client_jobs(url: str, jobs: list[tuple[str, dict]], in_flight: int, dest: Path) -> float:
    import fal_client

    client = fal_client.AsyncClient(key=KEY)
    slots = asyncio.Semaphore(in_flight)
    dest.mkdir(parents=True, exist_ok=True)
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    async with httpx.AsyncClient(limits=limits, timeout=120, trust_env=False) as http:

        async def one(i: int, endpoint: str, payload: dict) -> tuple[float, float]:
            async with slots:
                t0 = time.perf_counter()
                handle = await client.submit(endpoint, payload)
                result = await handle.get()
                await _download(http, result["video"]["url"], dest / f"{i:03d}.mp4")
                return t0, time.perf_counter()

        spans = await asyncio.gather(*(one(i, e, p) for i, (e, p) in enumerate(jobs)))
    await (await client._client).aclose()
    return max(e for _, e in spans) - min(s for s, _ in spans)


def spec_baseline(url: str, jobs: list[tuple[str, dict]], dest: Path) -> float:
    """The spec's way: one clip at a time; submit, poll status every 3 s, result, download."""
    dest.mkdir(parents=True, exist_ok=True)
    headers = {"Authorization": f"Key {KEY}"}
    t0 = time.perf_counter()
    with httpx.Client(timeout=120, trust_env=False) as http:
        for i, (endpoint, payload) in enumerate(jobs):
            sub = http.post(f"{url}/{endpoint}", json=payload, headers=headers)
            sub.raise_for_status()
            data = sub.json()
            while True:
                time.sleep(SPEC_POLL_S)
                status = http.get(data["status_url"], headers=headers)
                if status.json().get("status") == "COMPLETED":
                    break
            result = http.get(data["response_url"], headers=headers)
            result.raise_for_status()
            with (
                http.stream("GET", result.json()["video"]["url"]) as response,
                (dest / f"{i:03d}.mp4").open("wb") as f,
            ):
                for chunk in response.iter_bytes(1 << 16):
                    f.write(chunk)
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- reporting


def per_clip(calls: dict[str, int], n: int) -> dict[str, float]:
    return {k: calls.get(k, 0) / n for k in ALL_KINDS}


def calls_cell(pc: dict[str, float]) -> str:
    parts = [f"{k} {pc[k]:.3g}" for k in QUEUE_KINDS if pc[k]]
    return " + ".join(parts) + f" = **{sum(pc[k] for k in QUEUE_KINDS):.3g}**"


def machine() -> str:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {model}, Python "
        f"{sys.version.split()[0]}"
    )


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "—" if x is None else format(x, spec)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=300)
    p.add_argument("--in-flight", type=int, default=50)
    p.add_argument("--latency", type=float, default=2.0, help="fake generation latency (s)")
    p.add_argument("--baseline-jobs", type=int, default=20, help="jobs for the sequential spec baseline")
    p.add_argument("--big-mb", type=float, default=20, help="served clip size for the RSS pass (0: skip)")
    p.add_argument("--poll-interval", type=float, default=2.0, help="aivp-batch provider.poll_interval")
    p.add_argument("--skip-fal-client", action="store_true")
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--profile", action="store_true", help="also run aivp-batch under cProfile (top 30)")
    p.add_argument("--out", type=Path, default=BENCH / "results.md")
    p.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = p.parse_args(argv)

    n, k, lat = args.jobs, args.in_flight, args.latency
    ideal = math.ceil(n / k) * lat
    args.load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="fal-bench-"))
    cache = tmp / "home" / "schemas"
    cache.mkdir(parents=True)
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    ours: dict[str, Any] = {}
    print(
        f"temp dir {tmp}; {n} jobs, {k} in flight, {lat:g} s latency, ideal makespan {ideal:g} s", flush=True
    )
    server = Server(lat)
    try:
        ours_extra = [f"provider.max_in_flight={k}", f"provider.poll_interval={args.poll_interval}"]
        # -- start-up and planning cost: dry runs (first one warms the schema cache) --
        project = make_project(tmp / "film", n)
        run_cli(project, server.url, tmp / "runs" / "dry-warm", cache, "dry_run=true", *ours_extra)
        dry = run_cli(project, server.url, tmp / "runs" / "dry", cache, "dry_run=true", *ours_extra)
        if dry.code != 0:
            sys.exit(f"dry run failed ({dry.code}):\n{dry.stderr[-3000:]}")
        jobs = [(j["endpoint"], j["payload"]) for j in dry.summary["plan"]["jobs"]]
        assert len(jobs) == n and len({json.dumps(pl, sort_keys=True) for _, pl in jobs}) == n
        modes = {j["mode"] for j in dry.summary["plan"]["jobs"]}
        print(
            f"dry run: {dry.wall_s:.2f} s wall, {dry.cpu_s:.2f} s CPU, {dry.maxrss_mb:.0f} MB; modes {modes}"
        )

        # -- aivp-batch, small clips --
        server.reset()
        real = run_cli(project, server.url, tmp / "runs" / "real", cache, *ours_extra)
        st = server.stats()
        if real.code != 0:
            sys.exit(f"aivp-batch run failed ({real.code}):\n{real.stderr[-3000:]}")
        first_q, last_done = progress_span(real.stdout)
        mk_client = None if first_q is None or last_done is None else last_done - first_q
        run_cpu = real.cpu_s - dry.cpu_s
        ours = {
            "wall": real.wall_s,
            "cpu": real.cpu_s,
            "run_cpu": run_cpu,
            "rss": real.maxrss_mb,
            "dry_cpu": dry.cpu_s,
            "dry_wall": dry.wall_s,
            "dry_rss": dry.maxrss_mb,
            "mk_client": mk_client,
            "first_q": first_q,
            "stats": st,
        }
        rows.append(
            {
                "name": f"aivp-batch (`max_in_flight={k}`, SSE stream)",
                "jobs": n,
                "makespan": st["span_s"],
                "calls": per_clip(st["calls"], n),
                "cpu": f"{1000 * real.cpu_s / n:.1f} total / **{1000 * run_cpu / n:.1f}** run phase",
                "rss": f"{real.maxrss_mb:.0f}",
                "dups": st["duplicate_submits"],
            }
        )
        print(
            f"aivp-batch: span {st['span_s']:.2f} s (progress lines: {fmt(mk_client)} s), wall "
            f"{real.wall_s:.2f} s, "
            f"CPU {real.cpu_s:.2f} s ({run_cpu:.2f} s minus dry run), RSS {real.maxrss_mb:.0f} MB, "
            f"calls {st['calls']}",
            flush=True,
        )

        if args.profile:
            shutil.rmtree(project)
            project = make_project(tmp / "film", n)
            prof = tmp / "ours.prof"
            server.reset()
            run_cli(project, server.url, tmp / "runs" / "prof", cache, *ours_extra, profile=prof)
            import pstats

            pstats.Stats(str(prof)).sort_stats("tottime").print_stats(30)
            pstats.Stats(str(prof)).sort_stats("cumulative").print_stats(40)
        shutil.rmtree(project)

        # -- fal-client --
        if not args.skip_fal_client:
            try:
                version = patch_fal_client(server.url)
            except ImportError:
                notes.append('fal-client not installed: `.venv/bin/pip install -e ".[bench]"`')
            else:
                server.reset()
                c0 = time.process_time()
                asyncio.run(fal_client_jobs(server.url, jobs, k, tmp / "dl-fal-client"))
                cpu = time.process_time() - c0
                st = server.stats()
                rows.append(
                    {
                        "name": (
                            f"fal-client {version} AsyncClient (`submit` + `handle.get()`, Semaphore({k}))"
                        ),
                        "jobs": n,
                        "makespan": st["span_s"],
                        "calls": per_clip(st["calls"], n),
                        "cpu": f"{1000 * cpu / n:.1f} (in process, no start-up)",
                        "rss": "—",
                        "dups": st["duplicate_submits"],
                    }
                )
                print(
                    f"fal-client: span {st['span_s']:.2f} s, CPU {cpu:.2f} s, calls {st['calls']}", flush=True
                )
                shutil.rmtree(tmp / "dl-fal-client")

        # -- spec baseline --
        if not args.skip_baseline and args.baseline_jobs > 0:
            m = min(args.baseline_jobs, n)
            server.reset()
            c0 = time.process_time()
            spec_baseline(server.url, jobs[:m], tmp / "dl-spec")
            cpu = time.process_time() - c0
            st = server.stats()
            rows.append(
                {
                    "name": f"spec baseline (sequential, status poll every {SPEC_POLL_S:g} s), {m} jobs",
                    "jobs": m,
                    "makespan": st["span_s"],
                    "extrapolated": st["span_s"] / m * n,
                    "calls": per_clip(st["calls"], m),
                    "cpu": f"{1000 * cpu / m:.1f} (in process, no start-up)",
                    "rss": "—",
                    "dups": st["duplicate_submits"],
                }
            )
            print(f"spec baseline: {m} jobs in {st['span_s']:.2f} s, calls {st['calls']}", flush=True)
            shutil.rmtree(tmp / "dl-spec")
    finally:
        server.stop()

    # -- aivp-batch downloading big clips: peak RSS --
    big: dict[str, Any] | None = None
    if args.big_mb > 0:
        size = int(args.big_mb * 1024 * 1024)
        need = size * n * 1.2
        free = shutil.disk_usage(tmp).free
        if free < need + 2 * 1024**3:
            notes.append(
                f"big-clip pass skipped: {free / 1024**3:.1f} GiB free, need {need / 1024**3:.1f} GiB"
            )
        else:
            server = Server(lat, video_size=size)
            try:
                project = make_project(tmp / "film-big", n)
                run = run_cli(project, server.url, tmp / "runs" / "big", cache, *ours_extra)
                st = server.stats()
            finally:
                server.stop()
                shutil.rmtree(tmp / "film-big", ignore_errors=True)
            if run.code != 0:
                sys.exit(f"big-clip run failed ({run.code}):\n{run.stderr[-3000:]}")
            big = {"run": run, "stats": st, "size": size}
            rows.append(
                {
                    "name": f"aivp-batch, {args.big_mb:g} MB clips",
                    "jobs": n,
                    "makespan": st["span_s"],
                    "calls": per_clip(st["calls"], n),
                    "cpu": (
                        f"{1000 * run.cpu_s / n:.1f} total / "
                        f"**{1000 * (run.cpu_s - ours['dry_cpu']) / n:.1f}** run phase"
                    ),
                    "rss": f"**{run.maxrss_mb:.0f}**",
                    "dups": st["duplicate_submits"],
                }
            )
            print(
                f"aivp-batch big: span {st['span_s']:.2f} s, wall {run.wall_s:.2f} s, CPU {run.cpu_s:.2f} s, "
                f"RSS {run.maxrss_mb:.0f} MB, {n * size / 1024**3:.1f} GiB downloaded",
                flush=True,
            )

    args.load_after = os.getloadavg()
    report = render(args, argv, ideal, rows, ours, big, notes)
    print("\n" + report)
    args.out.write_text(report, encoding="utf-8")
    print(f"wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out.name}")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def render(
    args: Any,
    argv: list[str] | None,
    ideal: float,
    rows: list[dict],
    ours: dict,
    big: dict | None,
    notes: list[str],
) -> str:
    n, k, lat = args.jobs, args.in_flight, args.latency
    cmd = (
        "`.venv/bin/python bench/fal_bench.py "
        + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
        + "`"
    )
    lines = [
        "# fal provider benchmark",
        "",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {machine()}",
        f"- load average (1/5/15 min) before: {' / '.join(f'{x:.2f}' for x in args.load_before)}, "
        f"after: {' / '.join(f'{x:.2f}' for x in args.load_after)} (other work on the machine skews "
        "makespan and CPU)",
        f"- command: {cmd.replace('  ', ' ').replace(' `', '`')}",
        f"- workload: {n} T2V jobs (seedance v1.5, {CLIP_DURATION_S} s clips), fake fal server with "
        f"{lat:g} s generation latency, {k} in flight → ideal makespan {n} ÷ {k} × {lat:g} s = "
        f"**{ideal:g} s**",
        "",
        "## Results",
        "",
        "| approach | jobs | makespan (s) | vs ideal | queue calls / clip | downloads / clip | "
        "client CPU / clip (ms) | peak RSS (MB) |",
        "|---|---:|---:|---:|---|---:|---|---:|",
    ]
    for r in rows:
        mk = r["makespan"]
        if "extrapolated" in r:
            mk_cell = f"{mk:.1f} (→ {r['extrapolated']:.0f} for {n})"
            vs = f"×{r['extrapolated'] / ideal:.0f} (extrap.)"
        else:
            mk_cell, vs = fmt(mk), ("—" if mk is None else f"{100 * (mk / ideal - 1):+.1f}%")
        lines.append(
            f"| {r['name']} | {r['jobs']} | {mk_cell} | {vs} | {calls_cell(r['calls'])} | "
            f"{r['calls']['download']:g} | {r['cpu']} | {r['rss']} |"
        )
    lines += [
        "",
        "Makespan: from the first submit the server received to the last byte of the last download it "
        "served (measured in the server process, same clock for all approaches). Queue calls per clip "
        "are the fake server's `stats.calls`: submit, status (polls), stream (SSE), result, cancel.",
        "",
    ]
    if ours:
        st = ours["stats"]
        extra = {kk: v for kk, v in st["calls"].items() if kk not in (*QUEUE_KINDS, "download")}
        lines += [
            "## aivp-batch details",
            "",
            f"- total wall time of the command (Python + Hydra start-up, planning, validation, run, "
            f"records): "
            f"**{ours['wall']:.2f} s**; makespan by its own progress lines (first `queued` → last "
            f"`done`, 0.1 s "
            f"resolution): {fmt(ours['mk_client'])} s, first `queued` at "
            f"{fmt(ours['first_q'], '.1f')} s after "
            "the run phase began",
            f"- dry run of the same {n}-shot project (start-up + read storyboard + plan + validate, no "
            f"submit): {ours['dry_wall']:.2f} s wall, {ours['dry_cpu']:.2f} s CPU, peak RSS "
            f"{ours['dry_rss']:.0f} MB",
            f"- CPU of the command: {ours['cpu']:.2f} s = {1000 * ours['cpu'] / n:.1f} ms/clip "
            f"including start-up; "
            f"minus the dry run: {ours['run_cpu']:.2f} s = **{1000 * ours['run_cpu'] / n:.2f} ms/clip**",
            f"- other calls in the run: {extra or 'none'}; duplicate submits: {st['duplicate_submits']}; "
            f"max open SSE streams: {st['max_open_streams']}",
        ]
        if big:
            run, bst = big["run"], big["stats"]
            lines += [
                f"- {big['size'] / 1024**2:g} MB clips: {n} × {big['size'] / 1024**2:g} MB = "
                f"{n * big['size'] / 1024**3:.1f} GiB downloaded, verified and hashed; wall "
                f"{run.wall_s:.2f} s, "
                f"CPU {run.cpu_s:.2f} s, peak RSS **{run.maxrss_mb:.0f} MB** (small clips: "
                f"{ours['rss']:.0f} MB, "
                f"dry run: {ours['dry_rss']:.0f} MB); makespan {fmt(bst['span_s'])} s",
            ]
        lines.append("")
        lines += targets(ours, big, ideal, n)
    if notes:
        lines += ["## Notes", "", *[f"- {x}" for x in notes], ""]
    lines += [
        "## Method",
        "",
        "- The fake server (`aivp_batch.testing.fal_server.FakeFal`) runs in a separate process "
        "(multiprocessing, spawn), so its CPU is not counted; all three clients talk to it over loopback.",
        "- aivp-batch is the real command in a child process: `python -m aivp_batch project_dir=<tmp>/film "
        "provider.queue_url=URL provider.rest_url=URL provider.cdn_url=URL provider.schema_url=URL "
        f"provider.max_in_flight={k} provider.poll_interval={args.poll_interval:g} budget_usd=1000 "
        "schema_cache_dir=<tmp> hydra.run.dir=<tmp>/run` with `FAL_KEY` set; its CPU (user + sys) and "
        "peak RSS come from `os.wait4` of that child. The run-phase CPU subtracts a dry run of the same "
        "project (same start-up, storyboard, planning and schema validation; schemas cached).",
        f"- The project: {n} copies of `examples/short-film/.../shot-03.md` (T2V, no keyframe) with "
        f"duration {CLIP_DURATION_S} s and a distinct prompt each.",
        "- fal-client: `fal_client.AsyncClient(key=…)`; `submit` then `handle.get()` (its default status "
        "poll interval, 0.1 s), under `asyncio.Semaphore(in_flight)`, then an httpx streaming download. "
        "Pointed at the fake server by patching `fal_client.client.QUEUE_URL_FORMAT`, `RUN_URL_FORMAT`, "
        "`REST_URL` and `CDN_URL` (status/result URLs come from the submit response). CPU is the bench "
        "process's `time.process_time()` over the phase.",
        "- spec baseline: plain `httpx.Client`, one clip at a time: submit, sleep 3 s and GET the status "
        "URL until COMPLETED, GET the result, stream the download. Run on fewer jobs; the figure for "
        f"{n} jobs is a linear extrapolation (makespan ÷ jobs × {n}).",
        "",
    ]
    return "\n".join(lines)


def targets(ours: dict, big: dict | None, ideal: float, n: int) -> list[str]:
    st = ours["stats"]
    q = sum(st["calls"].get(kk, 0) for kk in QUEUE_KINDS) / n
    dl = st["calls"].get("download", 0) / n
    span = st["span_s"]
    ok = lambda b: "✅" if b else "❌"  # noqa: E731
    out = [
        "## Targets (aivp-batch)",
        "",
        "| target | measured | |",
        "|---|---|---|",
        f"| makespan within 5% of {ideal:g} s | {span:.2f} s ({100 * (span / ideal - 1):+.1f}%) | "
        f"{ok(span <= 1.05 * ideal)} |",
        f"| ≤ 3 queue calls per clip + 1 download | {q:g} + {dl:g} | {ok(q <= 3 and dl <= 1)} |",
        f"| orchestrator CPU < 5 ms per clip (run phase) | {1000 * ours['run_cpu'] / n:.2f} ms "
        f"({1000 * ours['cpu'] / n:.1f} ms with start-up) | {ok(1000 * ours['run_cpu'] / n < 5)} |",
    ]
    if big:
        rss = big["run"].maxrss_mb
        out.append(
            f"| peak RSS < 200 MB with {big['size'] / 1024**2:g} MB clips | {rss:.0f} MB (small "
            f"clips {ours['rss']:.0f} MB) "
            f"| {ok(rss < 200)} |"
        )
    return [*out, ""]


if __name__ == "__main__":
    sys.exit(main())
