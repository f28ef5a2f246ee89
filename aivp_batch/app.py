"""One run of aivp-batch, minus Hydra's command line: config → shots → jobs → validation → the
provider → records. `run(cfg, run_dir)` returns the exit status and the run summary.

Exit status: 0 when every selected clip is done (or a dry run validated), 1 when some clip failed
or was not rendered, 2 for bad input (nothing was spent).
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import re
import signal
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from .auto_model import auto_model_spec, is_auto
from .budget import SWEEP_BUDGET, Ledger, SweepBudget
from .config_check import check_config, check_writable_dir, models_allowing
from .errors import EXIT_FAILED, EXIT_OK, AuthError, ConfigError, InputError
from .files import atomic_write_text
from .grouping import read_scene_settings
from .keys import find_key, how_to_set
from .manifest import load_shots
from .models import build_model_spec
from .openapi import EndpointSchema
from .planning import Job, Plan, plan_jobs, plan_multishot
from .progress import Progress
from .providers.base import Provider
from .reconcile import ReconcilePolicy
from .records import Journal, PlanBoard, UploadCache, now_iso, read_logs, relpath
from .runner import JobResult, RunContext, run_jobs
from .schema_store import SchemaStore, schema_store_for
from .shots import Storyboard, select_shots
from .store_lock import JobLocks, run_lock
from .validation import validate_jobs
from .versions import versions


@dataclass
class Paths:
    project_dir: Path | None
    output_dir: Path
    store_dir: Path
    run_dir: Path
    sweep_member: bool = False
    parallel: bool = False  # a sweep member beside others, under a launcher (not one after another)


def resolve_paths(cfg: DictConfig, run_dir: Path, sweep_member: bool = False) -> Paths:
    """Where things go. A sweep member writes its clips, logs and plan into its own run dir (so
    members stay comparable side by side) but shares the job store, so a render any member or
    earlier run already paid for is reused. The store never lives in a run dir: it is the
    project's `.aivp`, else `<output_dir>/.aivp`, else the user's `$AIVP_HOME` (`~/.aivp`)."""
    project = Path(cfg.project_dir).expanduser().resolve() if cfg.project_dir else None
    if project is not None and not project.is_dir():
        raise ConfigError(f"project_dir={cfg.project_dir}: no such directory")
    if cfg.manifest.kind != "prompt" and project is None:
        raise ConfigError(
            f"project_dir is required for manifest={cfg.manifest.kind} (e.g. project_dir=my-film)"
        )
    base = project if project is not None else run_dir
    default_output = (run_dir if sweep_member else base) / "video"
    output = Path(cfg.output_dir).expanduser().resolve() if cfg.output_dir else default_output
    if cfg.store_dir:
        store = Path(cfg.store_dir).expanduser().resolve()
    elif project is not None:
        store = project / ".aivp"
    elif cfg.output_dir:
        store = output / ".aivp"
    else:
        store = aivp_home()
    return Paths(project, output, store, run_dir, sweep_member)


def check_output_dirs(cfg: DictConfig, paths: Paths, create: bool | None = None) -> None:
    """The output and store folders must be folders this process can write in: made and probed
    before a real run submits anything (a dry run, which writes neither, only checks; so does a
    sweep's plan, `create=False`)."""
    create = not cfg.dry_run if create is None else create
    for key, path, subdirs in (
        ("output_dir", paths.output_dir, ("clips", "log")),
        ("store_dir", paths.store_dir, ("jobs", "clips")),
    ):
        label = f"{key}={cfg.get(key)}" if cfg.get(key) else f"{key} (default {path})"
        check_writable_dir(path, label, create=create, subdirs=subdirs)


def aivp_home() -> Path:
    """The user's own aivp folder: `$AIVP_HOME`, else `~/.aivp` (also where keys.py looks for .env)."""
    return Path(os.environ.get("AIVP_HOME") or Path.home() / ".aivp").expanduser().resolve()


def build_plan(cfg: DictConfig, paths: Paths) -> tuple[Plan, list[str], list[str]]:
    """Config → shots → jobs. Returns the plan, the storyboard's problem lines and its warnings."""
    provider = _container(cfg.provider)
    if not provider.get("available", False):
        raise ConfigError(
            f"provider={provider.get('name')} is reserved and not available yet; "
            "use provider=fal, provider=replicate or provider=preview"
        )
    # A setting left at its declared default (null) keeps the tier's value.
    settings = {k: v for k, v in _container(cfg.settings).items() if v is not None}
    if is_auto(cfg.model):  # model=auto: the field map is derived from the endpoint's own schema
        spec = auto_model_spec(cfg, provider, settings, schema_store(cfg))
    else:
        spec = build_model_spec(_container(cfg.model), provider, str(cfg.tier.name), settings)
    board = load_shots(_container(cfg.manifest), paths.project_dir)
    if cfg.shots is not None:
        board = select_shots(board, list(cfg.shots) if OmegaConf.is_list(cfg.shots) else cfg.shots)
    problems = [f"{p.file}: {p.message}" for p in board.problems]
    seed = None if cfg.seed is None else int(cfg.seed)
    common: dict[str, Any] = dict(
        provider=str(provider["name"]),
        seed=seed,
        duration_policy=str(cfg.duration_policy),
        character_refs=bool(cfg.character_refs),
        payload_extra=_container(cfg.payload_extra),
        rng=random.Random(),
        max_prompt_chars=cfg.get("max_prompt_chars"),
        previous_seeds=recorded_seeds(paths.output_dir),
    )
    if str(cfg.get("strategy") or "single") == "multishot":
        # Consecutive shots of one scene render in one call each (grouping.py); the rest alone.
        plan = plan_multishot(
            board.shots, spec, **common, scene_settings=read_scene_settings(paths.project_dir)
        )
    else:
        plan = plan_jobs(board.shots, spec, **common)
    plan.unplanned = {p.shot: f"{p.file}: {p.message}" for p in board.problems if p.shot}
    return plan, problems, list(board.warnings)


def recorded_seeds(output_dir: Path) -> dict[str, int]:
    """Each shot's seed as its log recorded it: a shot rendered again without `seed=` keeps it."""
    return {
        str(log["id"]): log["seed"]
        for log in read_logs(output_dir / "log")
        if isinstance(log.get("seed"), int) and log.get("id")
    }


def schema_store(cfg: DictConfig) -> SchemaStore:
    """Where this provider's endpoint schemas come from (its `schema_source:`), cached and validated alike."""
    return schema_store_for(cfg)


def provider_key(cfg: DictConfig) -> str | None:
    """The provider's API key (None for providers that need none); AuthError when it is missing."""
    name = cfg.provider.get("key_env")
    if not name:
        return None
    key = find_key(str(name))
    if not key:
        raise AuthError(f"no {name} found: {how_to_set(str(name))}")
    return key


def make_provider(cfg: DictConfig, paths: Paths) -> Provider:
    """The provider's `client:` built by its `_target_`, given what its YAML declares it needs: the
    key named by `key_env`, and a `work_dir` in the job store where its client block asks for one."""
    needs: dict[str, Any] = {}
    if (key := provider_key(cfg)) is not None:
        needs["key"] = key
    if "work_dir" in cfg.provider.client:
        needs["work_dir"] = paths.store_dir / "renders"
    try:
        return instantiate(cfg.provider.client, **needs)
    except InstantiationException as exc:  # a bad provider knob (e.g. a retry kind's unknown key)
        cause = exc.__cause__ or exc
        raise ConfigError(f"provider={cfg.provider.name}: {cause}") from None


def format_plan(plan: Plan, model: str | None = None) -> str:
    """The dry run's table, in shot order: one row per job, and one marked ERR, with a hint where
    one helps, for each shot that cannot be planned (`model`: the model chosen, for the hint)."""
    rows: list[tuple[float, list[str]]] = []
    for job in plan.jobs:
        lines = [
            f"{job.key:<10} {job.mode:<4} {job.duration_s:>3}s  {job.estimate_usd:>7.2f}  {job.endpoint}"
        ]
        lines += _group_lines(job)
        for note in filter(None, [job.duration_note, *job.notes]):
            lines.append(f"{'':<10} note: {note}")
        rows.append((job.shots[0].number if job.shots else math.inf, lines))
    for error in plan.errors:
        key, message = _plan_error(error)
        lines = [f"{key:<10} {'ERR':<4} {'':>4}  {'':>7}  {message}"]
        if hint := plan_error_hint(message, plan, model):
            lines.append(f"{'':<10} hint: {hint}")
        number = re.search(r"(\d+)$", key)
        rows.append((int(number.group(1)) if number else math.inf, lines))
    lines = [f"{'shot':<10} {'mode':<4} {'dur':>4}  {'est $':>7}  endpoint"]
    lines += [line for _, row in sorted(rows, key=lambda r: r[0]) for line in row]
    lines.append(f"{'total':<10} {'':<4} {sum(j.duration_s for j in plan.jobs):>3}s  {plan.total_usd:>7.2f}")
    lines += _fallback_lines(plan)
    if plan.errors:
        one = len(plan.errors) == 1
        lines.append(
            f"{len(plan.errors)} shot{'' if one else 's'} marked ERR cannot be rendered as planned: "
            f"nothing is submitted until {'it is' if one else 'they are'} fixed or left out"
        )
    return "\n".join(lines)


def _group_lines(job: Job) -> list[str]:
    """A multi-shot group's shots beneath its row: each one's length and where it is cut out."""
    if not job.shot_durations_s:
        return []
    lines, start, count = [], 0, len(job.shots)
    for k, (shot, seconds) in enumerate(zip(job.shots, job.shot_durations_s, strict=True), start=1):
        where = f"part {k}/{count} of {job.key}, {start}–{start + seconds} s"
        lines.append(f"  {shot.id:<8} {'':<4} {seconds:>3}s  {'':>7}  {where}")
        start += seconds
    return lines


def _fallback_lines(plan: Plan) -> list[str]:
    """strategy=multishot: why shots render alone, where their own rows do not say it already."""
    said = " ".join(note for job in plan.jobs for note in job.notes)
    reasons: dict[str, list[str]] = {}
    for shot_id, reason in plan.fallbacks.items():
        if reason not in said:
            reasons.setdefault(reason, []).append(shot_id)
    return [
        f"note: strategy=multishot: {', '.join(ids)} render{'s' if len(ids) == 1 else ''} alone: {reason}"
        for reason, ids in reasons.items()
    ]


def _plan_error(error: str) -> tuple[str, str]:
    """`shot-02 (shot-02.md): what is wrong` → ("shot-02", "what is wrong")."""
    match = re.match(r"^(?P<key>[^\s:()]+)(?: \([^)]*\))?: (?P<message>.*)$", error, re.DOTALL)
    return (match.group("key"), match.group("message")) if match else ("?", error)


def plan_error_hint(message: str, plan: Plan, model: str | None = None) -> str | None:
    """What to do about a shot longer than the model allows: leave it out, another model, or split it."""
    longer = re.search(r"duration (\d+(?:\.\d+)?)s is longer than .*\(allowed: ([\d, ]+)\)", message)
    if not longer:
        return None
    seconds, allowed = float(longer.group(1)), [int(d) for d in re.findall(r"\d+", longer.group(2))]
    ways = []
    if plan.jobs:
        others = [str(n) if (n := _shot_number(j.key)) is not None else j.key for j in plan.jobs]
        ways.append(f"shots=[{','.join(others)}] renders the others")
    models = [(name, top) for name, top in models_allowing(seconds) if name != model]
    if models:
        ways.append("a model that allows it: " + ", ".join(f"model={n} (up to {t}s)" for n, t in models[:3]))
    ways.append(
        f"or split the shot into shots of at most {max(allowed)}s (the multi-shot mode will offer this split)"
    )
    return "; ".join(ways)


def _shot_number(key: str) -> int | None:
    match = re.fullmatch(r"shot-(\d+)", key)
    return int(match.group(1)) if match else None


def budget_warning(plan: Plan, budget: float) -> str:
    """`the plan's estimate $8.40 exceeds budget_usd=5: 7 of 10 shots fit $5.00; not submitted:
    shot-08, …` — the shots are reserved in plan order and one that would pass the budget is
    skipped (a later, cheaper one may still fit), as the ledger does."""
    committed, fit, left_out = 0.0, 0, []
    for job in plan.jobs:
        if committed + job.estimate_usd <= budget + 1e-9:
            committed += job.estimate_usd
            fit += len(job.shots)
        else:
            left_out.extend(shot.id for shot in job.shots)
    total = fit + len(left_out)
    names = ", ".join(left_out[:5]) + (f" and {len(left_out) - 5} more" if len(left_out) > 5 else "")
    return (
        f"the plan's estimate ${plan.total_usd:.2f} exceeds budget_usd={budget:g}: {fit} of {total} "
        f"shots fit ${budget:.2f}; not submitted: {names} (raise budget_usd or pick another tier/model)"
    )


def format_schemas(schemas: dict[str, EndpointSchema]) -> str:
    """Which document each endpoint's payloads were validated against."""
    return "\n".join(
        f"schema {endpoint}: {schema.source}, sha256 {schema.sha256[:12]}"
        for endpoint, schema in schemas.items()
    )


def plan_json(plan: Plan, schemas: dict[str, EndpointSchema], paths: Paths) -> dict[str, Any]:
    return {
        "total_usd": plan.total_usd,
        "jobs": [
            {
                "shot": j.key,
                "shots": [s.id for s in j.shots],
                **({"shot_durations_s": list(j.shot_durations_s)} if j.shot_durations_s else {}),
                "mode": j.mode,
                "endpoint": j.endpoint,
                "duration_s": j.duration_s,
                "duration_note": j.duration_note,
                "estimate_usd": j.estimate_usd,
                "seed": j.seed,
                "identity": j.identity,
                "payload": j.payload,
                "schema_sha256": schemas[j.endpoint].sha256 if j.endpoint in schemas else None,
                "schema_source": schemas[j.endpoint].source if j.endpoint in schemas else None,
                "files": {k: relpath(p, paths.project_dir) for k, p in j.files.items()},
            }
            for j in plan.jobs
        ],
    }


def rerender_ids(cfg: DictConfig, jobs: list[Job]) -> frozenset[str]:
    """The shots `rerender=[…]` names (same forms as `shots=`): rendered and paid for again."""
    if not cfg.get("rerender"):
        return frozenset()
    selection = list(cfg.rerender) if OmegaConf.is_list(cfg.rerender) else cfg.rerender
    if not isinstance(selection, list):
        selection = [selection]
    # A multi-shot group by its key (`rerender=[group-01]`): all of its shots.
    groups = {job.key: job for job in jobs if job.shot_durations_s}
    named = {shot.id for item in selection if str(item) in groups for shot in groups[str(item)].shots}
    rest = [item for item in selection if str(item) not in groups]
    if rest:
        board = Storyboard(shots=[shot for job in jobs for shot in job.shots])
        named |= {shot.id for shot in select_shots(board, rest).shots}
    return frozenset(named)


async def execute(
    cfg: DictConfig,
    jobs: list[Job],
    paths: Paths,
    schemas: dict[str, EndpointSchema],
    unplanned: dict[str, str] | None = None,
) -> list[JobResult]:
    run_id = uuid.uuid4().hex[:12]
    board = PlanBoard(paths.output_dir, float(cfg.get("log_interval_s", 0.2)))
    for shot_id, reason in (unplanned or {}).items():
        board.unplanned(shot_id, reason)
    ledger = Ledger(paths.output_dir / "costs.jsonl", _budget(cfg), run_id, sweep_budget(paths))
    # Members in parallel processes share one terminal: plain lines, each naming its member.
    progress = Progress(
        [j.key for j in jobs],
        live=False if paths.parallel else None,
        plan_md=str(paths.output_dir / "plan.md"),
        label=paths.run_dir.name if paths.sweep_member else "",
    )
    ctx = RunContext(
        output_dir=paths.output_dir,
        project_dir=paths.project_dir,
        run_dir=paths.run_dir,
        run_id=run_id,
        tier=str(cfg.tier.name),
        journal=Journal(paths.store_dir),
        ledger=ledger,
        board=board,
        max_in_flight=int(cfg.provider.max_in_flight),
        schemas=schemas,
        resubmit_unknown=bool(cfg.get("resubmit_unknown", False)),
        rerender=rerender_ids(cfg, jobs),
        reconcile=ReconcilePolicy(**_container(cfg.provider.get("reconcile"))),
        price_drift=float(cfg.get("price_drift", 0.05)),
        uploads=UploadCache(paths.store_dir, float(cfg.provider.get("upload_ttl_s") or 0)),
        job_locks=JobLocks(paths.store_dir),
        shared_slots=paths.run_dir.parent / ".slots" if paths.sweep_member and paths.parallel else None,
        on_event=progress,
    )
    _install_interrupts(ctx)
    try:
        provider = make_provider(cfg, paths)
        with progress:
            async with provider:
                return await run_jobs(jobs, provider, ctx)
    finally:
        board.flush()  # the logs of shots that could not be planned, whatever stopped the run


def sweep_budget(paths: Paths) -> SweepBudget | None:
    """A member of an aivp sweep books its spend in the sweep's one budget (the sweeper writes
    `budget.jsonl` in the sweep dir before it launches the members; a plain run has none)."""
    if not paths.sweep_member:
        return None
    path = paths.run_dir.parent / SWEEP_BUDGET
    return SweepBudget(path, paths.run_dir.name) if path.is_file() else None


def _install_interrupts(ctx: RunContext) -> None:
    """Ctrl-C once: stop submitting, let in-flight jobs finish. Twice: cancel them."""
    loop = asyncio.get_running_loop()

    def on_sigint() -> None:
        if not ctx.stop_submitting.is_set():
            ctx.stop_submitting.set()
            print(
                "\ninterrupt: no new submissions; waiting for in-flight jobs (Ctrl-C again cancels them)",
                file=sys.stderr,
            )
        else:
            ctx.cancel_inflight.set()
            print("\ninterrupt: cancelling in-flight requests", file=sys.stderr)

    try:
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    except (NotImplementedError, RuntimeError):  # not the main thread (e.g. a launcher worker)
        pass


def cost_totals(results: list[JobResult]) -> dict[str, float]:
    """This run's spend: what the provider billed, what only has our estimate, and the estimate of
    both (reused clips cost nothing this run)."""
    paid = [r for r in results if r.cost_usd and not r.reused]
    billed = sum(r.cost_usd for r in paid if r.cost_source == "billed")
    at_estimate = sum(r.cost_usd for r in paid if r.cost_source != "billed")
    return {
        "spent_usd": round(billed + at_estimate, 4),
        "billed_usd": round(billed, 4),
        "at_estimate_usd": round(at_estimate, 4),
        "estimated_usd": round(sum(r.estimate_usd or r.cost_usd for r in paid), 4),
    }


def format_costs(costs: dict[str, float]) -> str:
    """`$1.23 spent ($1.20 billed, $0.03 at estimate; estimated $1.30)`, or just `$0.00 spent`."""
    text = f"${costs['spent_usd']:.2f} spent"
    if not costs["spent_usd"]:
        return text
    return (
        f"{text} (${costs['billed_usd']:.2f} billed, ${costs['at_estimate_usd']:.2f} at estimate; "
        f"estimated ${costs['estimated_usd']:.2f})"
    )


def _lock_wait(cfg: DictConfig) -> float | None:
    wait = cfg.get("lock_wait_s")
    return None if wait is None else float(wait)


def _budget(cfg: DictConfig) -> float | None:
    return None if cfg.budget_usd is None else float(cfg.budget_usd)


def _container(node: Any) -> dict[str, Any]:
    if node is None:
        return {}
    return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]


def run(
    cfg: DictConfig, run_dir: Path, sweep_member: bool = False, parallel: bool = False
) -> tuple[int, dict[str, Any]]:
    """The whole command, minus Hydra: returns (exit status, summary)."""
    config_warnings = check_config(cfg)  # every knob's type, range and name, before anything else
    paths = resolve_paths(cfg, run_dir, sweep_member)
    paths.parallel = parallel
    check_output_dirs(cfg, paths)
    plan, problems, warnings = build_plan(cfg, paths)
    warnings[:0] = config_warnings
    if problems and not plan.jobs and not plan.errors:  # nothing left to render: all of it is bad input
        raise InputError("\n".join(problems))
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    if plan.errors and not cfg.dry_run:
        raise InputError("\n".join(plan.errors))
    store = schema_store(cfg)
    schemas = validate_jobs(plan.jobs, store)
    budget = _budget(cfg)
    if budget is not None and plan.total_usd > budget:
        warnings.append(budget_warning(plan, budget))
    portraits = {p for job in plan.jobs for shot in job.shots for p in shot.character_refs}
    if portraits and not portraits & {p for job in plan.jobs for p in job.files.values()}:
        warnings.append(
            f"model={cfg.model.name} on provider={cfg.provider.name} uses no character portraits here: "
            "image/characters/ is not sent"
        )
    unseeded = [job for job in plan.jobs if job.seed_field is None]
    if cfg.seed is not None and unseeded:  # once, not once per shot
        which = "its endpoints" if len(unseeded) == len(plan.jobs) else "some of its endpoints"
        warnings.append(
            f"model={cfg.model.name} takes no seed on {which}: seed={cfg.seed} is not sent; "
            "seeds become takes (each seed is its own render)"
        )
    for warning in [*warnings, *store.warnings]:
        print(f"warning: {warning}", file=sys.stderr)
    summary: dict[str, Any] = {
        "started": now_iso(),
        "run_dir": str(run_dir),
        "dry_run": bool(cfg.dry_run),
        "provider": cfg.provider.name,
        "model": cfg.model.name,
        "tier": cfg.tier.name,
        "budget_usd": _budget(cfg),
        "problems": problems,
        "versions": versions(),
    }
    summary["plan"] = plan_json(plan, schemas, paths)
    if cfg.dry_run:
        text = "\n".join(filter(None, [format_plan(plan, str(cfg.model.name)), format_schemas(schemas)]))
        print(text)
        atomic_write_text(run_dir / "plan.txt", text + "\n")
        if plan.errors:  # the whole plan is shown, and still nothing can be submitted: bad input
            raise InputError("\n".join(plan.errors))
        return (EXIT_FAILED if problems else EXIT_OK), summary
    # One run at a time per output folder, held from before the first request until the last
    # record; runs into other folders (sweep members) share the store under per-job locks.
    with run_lock(paths.store_dir, paths.output_dir, _lock_wait(cfg)):
        results = asyncio.run(execute(cfg, plan.jobs, paths, schemas, plan.unplanned))
    done = sum(r.status == "done" for r in results)
    costs = cost_totals(results)
    summary.update(
        finished=now_iso(),
        results=[r.__dict__ for r in results],
        done=done,
        failed=len(results) - done,
        **costs,
        clips_dir=str(paths.output_dir / "clips"),
        plan_md=str(paths.output_dir / "plan.md"),
    )
    shots = sum(len(job.shots) for job in plan.jobs)
    grouped = f" ({shots} shots)" if shots != len(results) else ""
    print(
        f"{done}/{len(results)} clips done{grouped}, {format_costs(costs)}; "
        f"clips in {paths.output_dir / 'clips'}, plan in {paths.output_dir / 'plan.md'}"
    )
    ok = done == len(results) and not problems
    return (EXIT_OK if ok else EXIT_FAILED), summary
