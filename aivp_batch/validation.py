"""Validation before spending: every payload of the run against its endpoint's published schema,
undeclared keys (which the provider would silently ignore: fal drops them, a Cog model on
Replicate takes no notice of them) and local input files — every image decoded in full, its bytes
matching its extension, its sides at least the schema's `x-fal` minimum or the model's
`min_image_px` — and the model config's list rules (a Kling element's 1–3 reference images), all
before the first upload or submission."""

from __future__ import annotations

from collections.abc import Iterable

from .errors import PayloadInvalid
from .local_files import check_local_file
from .openapi import EndpointSchema
from .planning import Job
from .schema_store import SchemaStore


def validate_jobs(jobs: Iterable[Job], store: SchemaStore) -> dict[str, EndpointSchema]:
    """Raise PayloadInvalid listing every problem (one line each); return endpoint → the schema
    each was validated against (its `sha256` and `source` go into the records)."""
    problems: list[str] = []
    used: dict[str, EndpointSchema] = {}
    for job in jobs:
        schema = used[job.endpoint] = store.get(job.endpoint)
        where = f"{job.key}: model={job.model} endpoint={job.endpoint}"
        for issue in schema.validate(job.payload):
            problems.append(f"{where} field {issue.path}: {issue.message}")
        for key in schema.unknown_keys(job.payload):
            problems.append(
                f"{where} field {key}: not declared by the endpoint's schema (the provider would ignore it)"
            )
        for field, path in job.files.items():
            for issue in check_local_file(schema, field, path, min_image_px=job.min_image_px):
                problems.append(f"{where} field {issue.path}: {issue.message}")
        problems.extend(f"{where} field {line}" for line in rule_problems(job))
    if problems:
        raise PayloadInvalid("\n".join(problems))
    return used


def rule_problems(job: Job) -> list[str]:
    """The model config's rules (`rules:` of a mode; limits fal states only in prose, such as
    "1–3 reference images, at least one" for a Kling element, or "prompt and multi_prompt are
    mutually exclusive"), one line each: where, what is wrong, the local files concerned and the
    rule's own message."""
    out: list[str] = []
    for rule in job.rules:
        for where, why in rule.violations(job.payload):
            owner = where.rpartition(".")[0] if "[" in where.rpartition(".")[0] else where
            names = sorted({p.name for key, p in job.files.items() if key.startswith(owner)})
            given = f" (given: {', '.join(names)})" if names else ""
            out.append(f"{where}: {why}{given}; {rule.message}".rstrip("; "))
    return out
