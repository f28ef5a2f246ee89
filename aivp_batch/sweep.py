"""A sweep (`-m`): every member is composed, planned, validated and priced before the first one
spends anything, then the members run through the launcher (one after another, or in parallel
processes) under one budget.

The Hydra side is `hydra_plugins/aivp_batch_sweeper` (`hydra/sweeper: aivp`), a `BasicSweeper`
that calls `plan_sweep` before launching and `run_members` to launch.

- The plan: one table, members × shots, each cell the shot's estimate (`=` when an earlier member
  renders the same job, `stored` when the job store already holds it: both cost nothing), and the
  member's new spend. A member with bad input stops the sweep before any member runs (exit 2).
- Names: a member's folder is named from the overrides the sweep varies (`model=kling_v3,seed=2`),
  made file-system safe (`name_member`); the rest of the command line is the same for all.
- One budget: a member's `budget_usd` bounds what the whole sweep spends. Every member books its
  reservations in `<sweep dir>/budget.jsonl` (`budget.SweepBudget`, under an flock), so members run
  one after another or in parallel processes under a launcher hold one budget between them; a
  job the sweep's budget cannot hold is refused and its member reported so.
- Shared work: members share the job store; a job two members want is rendered by whichever holds
  its lock (`store_lock.JobLocks`) and reused by the other.
- Exit status: 2 when any member had bad input, else 1 when any failed or was refused, else 0;
  one summary line per member. `cli.main` exits with `exit_code()`.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from .budget import SweepBudget
from .errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, AivpError, InputError
from .files import atomic_write_text
from .records import Journal

_last_exit: list[int] = []  # set by the sweeper, read (and cleared) by cli.main


def exit_code() -> int | None:
    """The exit status of the sweep this process just ran (None: no sweep ran)."""
    return _last_exit.pop() if _last_exit else None


def _set_exit(code: int) -> None:
    _last_exit[:] = [code]


@dataclass
class Member:
    name: str
    overrides: list[str]
    cells: dict[str, str] = field(default_factory=dict)  # shot → est $ / = / stored / ERR
    estimate_usd: float = 0.0  # what this member would newly spend
    budget_usd: float | None = None
    error: str | None = None
    bad_input: bool = False
    notes: list[str] = field(default_factory=list)
    # after the run
    exit_status: int | None = None
    done: int = 0
    total: int = 0
    spent_usd: float = 0.0
    refused: int = 0


_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+@%-]+")


def name_member(overrides: Sequence[str], swept: Sequence[str]) -> str:
    """`model=kling_v3,seed=2`: the member's values of the keys the sweep varies, in command-line
    order, with anything but letters, digits and `._=,+@%-` made `_` (no `/`, spaces, quotes)."""
    parts = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in swept]
    name = ",".join(parts) or "member"
    name = _UNSAFE.sub("_", name).strip("._") or "member"
    return name[:200]


def unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        n = seen.get(name, 0)
        seen[name] = n + 1
        out.append(name if n == 0 else f"{name}-{n + 1}")
    return out


def task_config(member_cfg: DictConfig) -> DictConfig:
    """The member's config as its task sees it: without the `hydra` node."""
    cfg = copy.deepcopy(member_cfg)
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


def plan_sweep(
    members: list[Member],
    compose: Callable[[list[str]], DictConfig],
    sweep_dir: Path,
    dry_run: bool,
) -> str:
    """Plan and price every member (no request that costs anything); returns the table."""
    from .app import build_plan, check_output_dirs, provider_key, resolve_paths, schema_store
    from .config_check import check_config
    from .validation import validate_jobs

    seen: dict[str, str] = {}  # identity → the first member that renders it
    shots: list[str] = []
    notes: list[str] = []
    for member in members:
        try:
            cfg = task_config(compose(member.overrides))
            check_config(cfg)
            paths = resolve_paths(cfg, sweep_dir / member.name, sweep_member=True)
            check_output_dirs(cfg, paths, create=False)
            plan, problems, _ = build_plan(cfg, paths)
            if problems and not plan.jobs and not plan.errors:
                raise InputError("; ".join(problems))
            for error in plan.errors:
                key = error.split(" ", 1)[0].rstrip(":")
                member.cells[key] = "ERR"
                if key not in shots:
                    shots.append(key)
            if plan.errors:
                raise InputError("; ".join(plan.errors))
            validate_jobs(plan.jobs, schema_store(cfg))
            if not dry_run:
                provider_key(cfg)
        except AivpError as exc:
            member.error = str(exc).replace("\n", "; ")
            member.bad_input = True  # found before anything is spent: every error stops the sweep
            continue
        except Exception as exc:  # Hydra / OmegaConf could not compose this member
            member.error, member.bad_input = (str(exc).strip().splitlines() or [type(exc).__name__])[0], True
            continue
        member.budget_usd = None if cfg.budget_usd is None else float(cfg.budget_usd)
        journal = Journal(paths.store_dir)
        for job in plan.jobs:
            if job.key not in shots:
                shots.append(job.key)
            if job.identity in seen:
                member.cells[job.key] = f"={seen[job.identity]}"
            elif (journal.get(job.identity) or {}).get("status") == "done":
                member.cells[job.key] = "stored"
            else:
                seen[job.identity] = member.name
                member.cells[job.key] = f"{job.estimate_usd:.2f}"
                member.estimate_usd += job.estimate_usd
        if cfg.seed is not None and any(job.seed_field is None for job in plan.jobs):
            note = f"{cfg.model.name} takes no seed: seeds become takes"
            if note not in notes:
                notes.append(note)
    return format_table(members, shots, notes)


def format_table(members: list[Member], shots: list[str], notes: list[str]) -> str:
    width = max([len("member"), *(len(m.name) for m in members)])
    cell = max([7, *(len(s) for s in shots), *(len(c) for m in members for c in m.cells.values())])
    head = f"{'member':<{width}}  " + "  ".join(f"{s:>{cell}}" for s in shots) + f"  {'est $':>8}"
    lines = [
        f"sweep: {len(members)} member{'s' * (len(members) != 1)} × {len(shots)} "
        f"shot{'s' * (len(shots) != 1)}, planned before anything is spent",
        head,
    ]
    running = 0.0
    for m in members:
        cells = "  ".join(f"{m.cells.get(s, '-'):>{cell}}" for s in shots)
        if m.error:
            lines.append(f"{m.name:<{width}}  {cells}  {'ERR':>8}  {m.error}")
            continue
        running += m.estimate_usd
        over = m.budget_usd is not None and running > m.budget_usd + 1e-9
        mark = f"  passes budget_usd={m.budget_usd:g} (sweep so far ${running:.2f})" if over else ""
        lines.append(f"{m.name:<{width}}  {cells}  {m.estimate_usd:>8.2f}{mark}")
    lines.append(f"{'total':<{width}}  {'':>{(cell + 2) * len(shots) - 2}}  {running:>8.2f}")
    budgets = {m.budget_usd for m in members if not m.error}
    if budgets and budgets != {None}:
        shown = ", ".join(f"{b:g}" for b in sorted(b for b in budgets if b is not None))
        lines.append(f"budget_usd={shown} holds across the whole sweep")
    lines.append("cells: est $ per shot; =NAME: the same job as member NAME, stored: already rendered")
    lines += [f"note: {n}" for n in notes]
    return "\n".join(lines)


def read_summary(member_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((member_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def run_members(
    members: list[Member], launch: Callable[[list[list[str]]], Any], sweep_dir: Path
) -> list[Any]:
    """Launch the members under the sweep's one budget and record each outcome. The launcher runs
    them one after another (Hydra's basic launcher) or in parallel processes (joblib, submitit,
    ray): either way every reservation goes through `<sweep dir>/budget.jsonl`."""
    SweepBudget.create(sweep_dir)
    returns = list(launch([m.overrides for m in members]))
    for member in members:
        summary = read_summary(sweep_dir / member.name)
        member.exit_status = summary.get("exit_status", EXIT_FAILED)
        member.spent_usd = float(summary.get("spent_usd") or 0.0)
        results = summary.get("results") or []
        member.total = len(results)
        member.done = sum(r.get("status") == "done" for r in results)
        member.refused = sum("would pass budget_usd" in str(r.get("error") or "") for r in results)
        if summary.get("error"):
            member.error = str(summary["error"]).splitlines()[0]
    return returns


def member_line(m: Member, width: int) -> str:
    status = {None: "not run", EXIT_OK: "ok", EXIT_FAILED: "FAILED", EXIT_BAD_INPUT: "BAD INPUT"}.get(
        m.exit_status, f"exit {m.exit_status}"
    )
    line = f"{m.name:<{width}}  {status:<9}  {m.done}/{m.total} done  ${m.spent_usd:.2f} spent"
    if m.refused:
        line += f"; {m.refused} refused by the sweep's budget_usd"
    if m.error:
        line += f"; {m.error}"
    return line


def finish(members: list[Member], sweep_dir: Path, table: str, ran: bool) -> int:
    """Print the per-member lines, write `sweep.json`, set and return the sweep's exit status."""
    if any(m.bad_input and m.exit_status is None for m in members) or any(
        m.exit_status == EXIT_BAD_INPUT for m in members
    ):
        code = EXIT_BAD_INPUT
    elif ran and any(m.exit_status != EXIT_OK for m in members):
        code = EXIT_FAILED
    else:
        code = EXIT_OK
    width = max(len(m.name) for m in members) if members else 6
    if ran:
        print("sweep members:")
        for m in members:
            print(member_line(m, width))
        spent, ok = sum(m.spent_usd for m in members), sum(m.exit_status == EXIT_OK for m in members)
        print(f"sweep: {ok}/{len(members)} members ok, ${spent:.2f} spent")
    data = {
        "sweep_dir": str(sweep_dir),
        "exit_status": code,
        "ran": ran,
        "members": [
            {
                "name": m.name,
                "dir": str(sweep_dir / m.name),
                "overrides": m.overrides,
                "estimate_usd": round(m.estimate_usd, 4),
                "budget_usd": m.budget_usd,
                "error": m.error,
                "exit_status": m.exit_status,
                "done": m.done,
                "total": m.total,
                "spent_usd": m.spent_usd,
                "refused_by_budget": m.refused,
            }
            for m in members
        ],
    }
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(sweep_dir / "sweep.txt", table + "\n")
        atomic_write_text(sweep_dir / "sweep.json", json.dumps(data, indent=2, default=str) + "\n")
    except OSError as exc:
        print(f"aivp-batch: warning: {sweep_dir / 'sweep.json'} not written ({exc})", file=sys.stderr)
    _set_exit(code)
    return code
