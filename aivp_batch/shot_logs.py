"""What a job's shot logs say (`video/log/<id>.json`, written through records.PlanBoard).

A single shot's job has one log, the shot's. A multi-shot group's job has its own log
(`group-NN.json`, type `group`: its clip, its shots and where each is cut out) and one per shot,
derived from it (`part_log`: the shot's own part of the clip, its prompt, its share of the cost).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .output import parts_of
from .planning import Job
from .records import now_iso, relpath
from .versions import versions

if TYPE_CHECKING:
    from .runner import RunContext


def initial_log(job: Job, ctx: RunContext) -> dict[str, Any]:
    """The spec's log fields, plus everything needed to redo the render. A multi-shot group's log
    (`video/log/group-NN.json`); each of its shots' logs derive from it (`part_log`)."""
    shot = job.shots[0]
    root = ctx.project_dir
    group = bool(job.shot_durations_s)
    if group:
        sent = set(job.files.values())
        start = shot.start_frame if shot.start_frame in sent else None
        input_image, end_image = relpath(start, root), None
        portraits = list(dict.fromkeys(p for s in job.shots for p in s.character_refs))
    else:
        input_image = relpath(shot.start_frame, root) if job.mode in ("I2V", "FLF") else None
        end_image = relpath(shot.end_frame, root) if job.mode == "FLF" else None
        portraits = list(shot.character_refs)
    log_id = job.key if group else shot.id
    return {
        "id": log_id,
        "type": "group" if group else "clip",
        # Relative to the folder holding video/ (the project, or a sweep member's run dir).
        "file": relpath(ctx.delivered(log_id), ctx.output_dir.parent),
        "model": job.endpoint,
        "mode": job.mode,
        "status": "pending",
        "request_id": None,
        "prompt": job.prompt,
        "seed": job.seed,
        "duration": str(job.duration_s),
        "aspect_ratio": shot.aspect_ratio or job.payload.get("aspect_ratio"),
        "input_image": input_image,
        "end_image": end_image,
        "character_refs": [relpath(p, root) for p in portraits],
        "video_url": None,
        "cost_usd": 0.0,  # nothing is spent until the provider reports the render done
        "timestamp": now_iso(),
        "provider": job.provider,
        "endpoint": job.endpoint,
        "model_config": job.model,
        "tier": ctx.tier,
        "shots": [s.id for s in job.shots],
        **({"shot_durations_s": list(job.shot_durations_s)} if group else {}),
        "identity": job.identity,
        "payload": job.payload,
        "payload_files": {
            k: {"path": relpath(p, root), "sha256": job.file_hashes.get(k)} for k, p in job.files.items()
        },
        "schema_sha256": _schema_attr(ctx, job.endpoint, "sha256"),
        "schema_source": _schema_attr(ctx, job.endpoint, "source"),
        "requested_seed": job.seed,
        "seed_sent": job.seed_field is not None,
        "seed_random": job.seed_random,
        "seed_returned": None,
        "prompt_variant": job.prompt_variant,
        "requested_duration_s": job.requested_duration_s,
        "duration_note": job.duration_note,
        "notes": list(job.notes),
        "estimate_usd": job.estimate_usd,
        "cost_source": "estimate",
        "attempts": 0,
        "timings": {},
        "run_dir": str(ctx.run_dir),
        "hydra_dir": str(ctx.run_dir / ".hydra"),  # the composed config and overrides (`aivp rerun`)
        "run_id": ctx.run_id,
        "versions": versions(),
        "error": None,
    }


def job_logs(
    job: Job, ctx: RunContext, log: Mapping[str, Any], kept: Collection[str] = ()
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(log id, log) of each shot log the job's log `log` writes: a shot's; or a group's own, then
    each of its shots'. Those in `kept` (a delivered clip someone edited) stay as they are."""
    if not job.shot_durations_s:
        for shot in job.shots:
            yield shot.id, {**log, "id": shot.id}
        return
    if job.key not in kept:
        yield job.key, group_log(job, log)
    for k, shot in enumerate(job.shots):
        if shot.id not in kept:
            yield shot.id, part_log(job, ctx, log, k)


def done_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    """The log fields of a finished render, from its journal record: what was sent, returned, paid."""
    seed = record.get("requested_seed")
    if seed is None:  # journalled before requested_seed was: the seed it sent, if any
        seed = (record.get("payload") or {}).get("seed")
    seeds = {"seed": seed, "requested_seed": seed} if isinstance(seed, int) else {}
    if record.get("seed_sent") is not None:
        seeds["seed_sent"] = record["seed_sent"]
    return {
        **seeds,
        "request_id": record.get("request_id"),
        "video_url": record.get("video_url"),
        "seed_returned": record.get("seed_returned"),
        "cost_usd": record.get("cost_usd"),
        "cost_source": record.get("cost_source", "estimate"),
        "estimate_usd": record.get("estimate_usd"),
        "billable_units": record.get("billable_units"),
        "unit_price": record.get("unit_price"),
        "unit": record.get("unit"),
        "clip": record.get("clip"),
        **({"parts": record.get("parts")} if "parts" in record else {}),
        "payload": record.get("payload"),
        "attempts": record.get("attempts"),
        "error": None,
    }


def group_log(job: Job, log: Mapping[str, Any]) -> dict[str, Any]:
    """A multi-shot group's own log: its clip, its shots and where each is cut out (`parts`)."""
    parts = parts_of(log, len(job.shots))
    at = starts(job)
    planned = [
        part or {"shot": shot.id, "start_s": start, "expected_s": seconds}
        for shot, start, seconds, part in zip(job.shots, at, job.shot_durations_s, parts, strict=True)
    ]
    out = {k: v for k, v in log.items() if k != "delivered_parts"}
    return {**out, "id": job.key, "type": "group", "parts": planned}


def part_log(job: Job, ctx: RunContext, log: Mapping[str, Any], k: int) -> dict[str, Any]:
    """Shot k of a multi-shot group: its own clip (its part of the group's, with its own sha256),
    its item's prompt and length, and the group it came from. Its cost is its share of the group's
    by seconds (`group_cost_usd` is the whole); plan.md counts the group's once, on its row."""
    shot = job.shots[k]
    seconds = job.shot_durations_s[k]
    share = seconds / job.duration_s if job.duration_s else 0.0
    others = [f"{s.id}:" for s in job.shots if s.id != shot.id]
    mine = [n for n in log.get("notes") or () if not str(n).startswith(tuple(others))]
    duration_notes = [n for n in str(log.get("duration_note") or "").split("; ") if n]
    duration_notes = [n for n in duration_notes if not n.startswith(tuple(others))]
    out = {k2: v for k2, v in log.items() if k2 not in ("parts", "delivered_parts")}
    return {
        **out,
        "id": shot.id,
        "type": "clip",
        "group": job.key,
        "part": f"{k + 1}/{len(job.shots)}",
        "file": relpath(ctx.delivered(shot.id), ctx.output_dir.parent),
        "group_file": log.get("file"),
        "prompt": job.shot_prompts[k] if k < len(job.shot_prompts) else log.get("prompt"),
        "duration": str(seconds),
        "start_s": starts(job)[k],
        "aspect_ratio": shot.aspect_ratio or log.get("aspect_ratio"),
        "input_image": log.get("input_image") if k == 0 else None,
        "end_image": None,
        "character_refs": [relpath(p, ctx.project_dir) for p in shot.character_refs],
        "requested_duration_s": shot.duration_s,
        "duration_note": "; ".join(duration_notes) or None,
        "notes": mine,
        "clip": parts_of(log, len(job.shots))[k],
        "group_clip": log.get("clip"),
        "delivered": (log.get("delivered_parts") or {}).get(shot.id),
        "cost_usd": round(float(log.get("cost_usd") or 0.0) * share, 4),
        "estimate_usd": round(float(log.get("estimate_usd") or 0.0) * share, 4),
        "group_cost_usd": log.get("cost_usd"),
        "group_estimate_usd": log.get("estimate_usd"),
    }


def starts(job: Job) -> list[int]:
    """Where each shot of a group starts in the group's clip, in seconds."""
    out, at = [], 0
    for seconds in job.shot_durations_s:
        out.append(at)
        at += seconds
    return out


def _schema_attr(ctx: RunContext, endpoint: str, name: str) -> str | None:
    schema = ctx.schemas.get(endpoint)
    return getattr(schema, name) if schema is not None else None
