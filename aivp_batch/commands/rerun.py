"""`aivp rerun RUN_OR_MEMBER_DIR [overrides…] [--shots 3,5] [--dry-run]`: redo a past run.

The run (or sweep member) is composed again from its own `.hydra/overrides.yaml` — the command-line
overrides it was started with (a member's include its swept values and its share of the budget) —
plus the new ones, which win over the old for the same key, by `python -m aivp_batch` in a
subprocess started in the original run's working directory, so Hydra composes it exactly as it did
then. It goes into a new run dir; the old one is only read.

Before anything is spent, a dry run of the new composition is compared with what the old run
recorded (its `summary.json` plan, its shot logs, its `.hydra/config.yaml`), and each difference is
one line: an endpoint's schema (by sha256), the model config (by hash), an input file (by sha256),
a shot whose request changed. With nothing changed every clip comes from the job store, for $0.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from ..errors import AivpError
from ..files import atomic_write_text
from ..media import sha256_file
from ..records import DONE, Journal, read_logs

HELP = "run again what an earlier run or sweep member did, saying first what changed since"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_OR_MEMBER_DIR", help="a run's or sweep member's folder")
    # Everything after the folder, so that options and overrides mix in any order (see `_options`).
    parser.add_argument(
        "overrides",
        nargs=argparse.REMAINDER,
        metavar="OVERRIDE",
        help="Hydra overrides; they win over the original's for the same key",
    )
    _add_options(parser)


def _add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shots", help="only these shots, e.g. 3,5 or shot-02 (as shots=[…])")
    parser.add_argument("--dry-run", action="store_true", help="report what changed and plan, submit nothing")
    parser.add_argument(
        "--into", metavar="DIR", help="the new run dir (default outputs/runs/<now> where the old run ran)"
    )


def _options(args: argparse.Namespace) -> argparse.Namespace:
    """The options given among the overrides (`rerun DIR model=x --shots 3`) taken out of them."""
    parser = argparse.ArgumentParser(prog="aivp rerun", add_help=False)
    _add_options(parser)
    found, rest = parser.parse_known_args(list(args.overrides or []))
    unknown = [a for a in rest if a.startswith("-")]
    if unknown:
        raise AivpError(f"unrecognized arguments: {' '.join(unknown)}")
    return argparse.Namespace(
        run_dir=args.run_dir,
        overrides=rest,
        shots=found.shots or args.shots,
        dry_run=found.dry_run or args.dry_run,
        into=found.into or args.into,
    )


def run(args: argparse.Namespace) -> int:
    args = _options(args)
    old = Path(args.run_dir).expanduser().resolve()
    past = PastRun.read(old)
    new_dir = Path(args.into).expanduser().resolve() if args.into else past.default_new_dir()
    if new_dir == old or old in new_dir.parents:
        raise AivpError(f"--into {new_dir}: the rerun must not write into the old run dir {old}")
    if new_dir.exists() and any(new_dir.iterdir()):
        raise AivpError(f"--into {new_dir}: not empty; name a new folder")
    overrides = rerun_overrides(past, list(args.overrides), args.shots, new_dir)
    print(f"rerun of {old} into {new_dir}")
    print("overrides: " + (" ".join(overrides) or "(none)"))

    with tempfile.TemporaryDirectory(prefix="aivp-rerun-check-") as tmp:
        check_dir = new_dir if args.dry_run else Path(tmp) / "check"
        # A fresh look at each endpoint's schema (the dry run refreshes the cache the run then reads).
        checking = [o for o in overrides if _key(o) not in ("dry_run", "schema_ttl_s")]
        check = run_batch(past, [*checking, "dry_run=true", "schema_ttl_s=0"], check_dir, capture=True)
        new_summary = _read_json(check_dir / "summary.json")
        if check.returncode != 0 and not (new_summary.get("plan") or {}).get("jobs"):
            sys.stderr.write(check.stderr)
            sys.stdout.write(check.stdout)
            return check.returncode or 2
        report = compare(past, new_summary, check_dir, new_dir)
        for line in report.lines():
            print(line)
        record = {
            "rerun_of": str(old),
            "overrides": overrides,
            "changes": report.changes,
            "stored": report.stored,
            "to_render": report.to_render,
        }
        if args.dry_run:
            sys.stdout.write(check.stdout)
            sys.stderr.write(check.stderr)
            atomic_write_text(new_dir / "rerun.json", json.dumps(record, indent=2) + "\n")
            return check.returncode
    proc = run_batch(past, overrides, new_dir, capture=False)
    if new_dir.is_dir():
        atomic_write_text(new_dir / "rerun.json", json.dumps(record, indent=2) + "\n")
    return proc.returncode


# -- the past run ------------------------------------------------------------------------------


@dataclass
class PastRun:
    dir: Path
    overrides: list[str]
    config: dict[str, Any]  # .hydra/config.yaml, unresolved
    cwd: Path  # where it ran: relative paths in its overrides are relative to this
    member: bool  # a sweep member: its clips, logs and plan went into its own run dir
    summary: dict[str, Any]

    @classmethod
    def read(cls, run_dir: Path) -> PastRun:
        hydra_dir = run_dir / ".hydra"
        overrides_file = hydra_dir / "overrides.yaml"
        if not overrides_file.is_file():
            raise AivpError(f"{run_dir}: not a run or sweep member folder (no .hydra/overrides.yaml)")
        overrides = yaml.safe_load(overrides_file.read_text(encoding="utf-8")) or []
        config = yaml.safe_load((hydra_dir / "config.yaml").read_text(encoding="utf-8")) or {}
        hydra = (_read_yaml(hydra_dir / "hydra.yaml").get("hydra")) or {}
        runtime = hydra.get("runtime") or {}
        cwd = Path(runtime.get("cwd") or os.getcwd())
        if not cwd.is_dir():
            cwd = Path.cwd()
        summary = _read_json(run_dir / "summary.json")
        member = str(hydra.get("mode")) == "RunMode.MULTIRUN" or (run_dir / "video" / "log").is_dir()
        return cls(run_dir, [str(o) for o in overrides], config, cwd, member, summary)

    def default_new_dir(self) -> Path:
        return self.cwd / "outputs" / "runs" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S.%f")

    def log_dir(self) -> Path:
        if (self.dir / "video" / "log").is_dir():
            return self.dir / "video" / "log"
        clips = self.summary.get("clips_dir")
        if clips:
            return Path(clips).parent / "log"
        output = self.config.get("output_dir") or (
            f"{self.config['project_dir']}/video" if self.config.get("project_dir") else None
        )
        return (self.cwd / output / "log") if output else self.dir / "video" / "log"

    def logs(self) -> dict[str, dict[str, Any]]:
        """The old run's shot logs, by shot id. A project's `video/log` may have been rewritten
        since: a log counts only where its identity is the one the old run planned for the shot."""
        planned = {job["shot"]: job.get("identity") for job in self.plan_jobs()}
        logs = {}
        for log in read_logs(self.log_dir()):
            shot = str(log.get("id"))
            if planned.get(shot) in (None, log.get("identity")) or log.get("run_dir") == str(self.dir):
                logs[shot] = log
        return logs

    def plan_jobs(self) -> list[dict[str, Any]]:
        return list((self.summary.get("plan") or {}).get("jobs") or [])


def rerun_overrides(past: PastRun, new: list[str], shots: str | None, new_dir: Path) -> list[str]:
    """The old overrides without Hydra's own (run and sweep dirs), and without those the new ones
    set again; then the new ones, `shots=[…]`, and a member's own output folder."""
    extra = list(new)
    if shots:
        extra.append(shots_override(shots))
    keys = {_key(o) for o in extra}
    kept = [o for o in past.overrides if not _key(o).startswith("hydra.") and _key(o) not in keys]
    out = [*kept, *extra]
    if past.member and "output_dir" not in {_key(o) for o in out}:
        out.append(f"output_dir={new_dir / 'video'}")  # as the member did: not the project's video/
    return out


def shots_override(shots: str) -> str:
    items = [s.strip() for s in shots.split(",") if s.strip()]
    if not items:
        raise AivpError(f"--shots {shots!r}: name at least one shot, e.g. --shots 3,5")
    return "shots=[" + ",".join(f"'{s}'" if "." in s else s for s in items) + "]"


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def run_batch(
    past: PastRun, overrides: list[str], run_dir: Path, capture: bool
) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "aivp_batch", *overrides, f"hydra.run.dir={run_dir}"]
    return subprocess.run(command, cwd=past.cwd, capture_output=capture, text=True)


# -- what changed ------------------------------------------------------------------------------


@dataclass
class Report:
    changes: list[str] = field(default_factory=list)
    stored: list[str] = field(default_factory=list)  # shots whose clip the job store holds
    to_render: list[str] = field(default_factory=list)
    estimate_usd: float = 0.0

    def lines(self) -> list[str]:
        lines = list(self.changes)
        if not self.changes and not self.to_render:
            return ["nothing changed: every clip comes from the store"]
        if not self.changes:
            lines.append("nothing changed")
        total = len(self.stored) + len(self.to_render)
        if self.to_render:
            lines.append(
                f"{len(self.stored)} of {total} clips come from the store; to render: "
                f"{', '.join(self.to_render)} (est ${self.estimate_usd:.2f})"
            )
        else:
            lines.append(f"every clip comes from the store ({total} of {total}, $0)")
        return lines


def compare(past: PastRun, new_summary: dict[str, Any], check_dir: Path, new_dir: Path) -> Report:
    report = Report()
    old_jobs = {job["shot"]: job for job in past.plan_jobs()}
    new_jobs = {job["shot"]: job for job in (new_summary.get("plan") or {}).get("jobs") or []}
    logs = past.logs()
    old_schemas = {j["endpoint"]: j.get("schema_sha256") for j in old_jobs.values() if j.get("endpoint")}
    for log in logs.values():
        old_schemas.setdefault(log.get("endpoint"), log.get("schema_sha256"))
    seen: set[str] = set()
    for job in new_jobs.values():
        endpoint, sha = job.get("endpoint"), job.get("schema_sha256")
        was = old_schemas.get(endpoint)
        if endpoint in seen or not was or not sha:
            continue
        seen.add(endpoint)
        if was != sha:
            report.changes.append(f"schema of {endpoint} changed: {was[:12]} → {sha[:12]}")

    new_config = _read_yaml(check_dir / ".hydra" / "config.yaml")
    old_model, new_model = past.config.get("model") or {}, new_config.get("model") or {}
    if _hash(old_model) != _hash(new_model):
        old_name, new_name = old_model.get("name"), new_model.get("name")
        if old_name != new_name:
            report.changes.append(f"model config changed: {old_name} → {new_name}")
        else:
            report.changes.append(f"model config {new_name} changed")

    project, store = _where(past, new_config, new_dir)
    old_hashes: dict[str, str] = {}
    for log in logs.values():
        for entry in (log.get("payload_files") or {}).values():
            if entry.get("path") and entry.get("sha256"):
                old_hashes.setdefault(entry["path"], entry["sha256"])
    reported: set[str] = set()
    for job in new_jobs.values():
        for path in (job.get("files") or {}).values():
            if path in reported:
                continue
            reported.add(path)
            was = old_hashes.get(path)
            full = Path(path) if Path(path).is_absolute() or project is None else project / path
            if was is None:
                old_files = (old_jobs.get(job["shot"]) or {}).get("files") or {}
                if job["shot"] in old_jobs and path not in old_files.values():
                    report.changes.append(f"input {path} added ({job['shot']})")
                continue
            now = sha256_file(full) if full.is_file() else None
            if now is None:
                report.changes.append(f"input {path} is gone")
            elif now != was:
                report.changes.append(f"input {path} changed")
    for log in logs.values():  # an input the old run sent that the new plan no longer sends
        if log.get("id") not in new_jobs:
            continue
        for entry in (log.get("payload_files") or {}).values():
            path = entry.get("path")
            if path and path not in reported:
                reported.add(path)
                report.changes.append(f"input {path} no longer sent ({log['id']})")

    journal = Journal(store) if store is not None else None
    for shot, job in new_jobs.items():
        old_job = old_jobs.get(shot)
        if old_job is None:
            report.changes.append(f"{shot} is new to this run")
        elif old_job.get("identity") != job.get("identity"):
            keys = _changed_keys(old_job.get("payload") or {}, job.get("payload") or {}, job)
            report.changes.append(f"{shot}: its request changed ({', '.join(keys) or 'its inputs'})")
        record = journal.get(job["identity"]) if journal is not None and job.get("identity") else None
        if (record or {}).get("status") == DONE:
            report.stored.append(shot)
        else:
            report.to_render.append(shot)
            report.estimate_usd += float(job.get("estimate_usd") or 0)
    return report


def _changed_keys(old: dict[str, Any], new: dict[str, Any], job: dict[str, Any]) -> list[str]:
    """The payload fields that differ, files aside (their change is reported by content)."""
    files = {str(k).split("[")[0] for k in job.get("files") or {}}
    keys = sorted(set(old) | set(new))
    return [k for k in keys if k not in files and old.get(k) != new.get(k)]


def _where(past: PastRun, config: dict[str, Any], new_dir: Path) -> tuple[Path | None, Path | None]:
    """The new run's project and job store, as `app.resolve_paths` finds them (from where it ran)."""
    from ..app import resolve_paths

    try:
        cfg = OmegaConf.create(config)
        with contextlib.chdir(past.cwd):
            paths = resolve_paths(cfg, new_dir)
    except Exception:  # an odd config: no store to look in, so every clip counts as to render
        return None, None
    return paths.project_dir, paths.store_dir


def _hash(node: Any) -> str:
    return hashlib.sha256(json.dumps(node, sort_keys=True, default=str).encode()).hexdigest()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}
