"""Rebuild the bundled fal schema snapshot (aivp_batch/fal_schemas/).

    # from a folder of fal OpenAPI documents (`<endpoint id with / as __>.json`, as fal returns them):
    .venv/bin/python scripts/snapshot_schemas.py --from-dir DIR [--endpoint ID ...]
    # live, from fal's per-endpoint OpenAPI URL (provider.schema_url), for every endpoint a model
    # config names (plus those already in the snapshot, plus --endpoint ones):
    .venv/bin/python scripts/snapshot_schemas.py --live [--schema-url https://fal.ai]

Each document is reduced to its machine-readable contract (aivp_batch.snapshot.reduce_document) and
`_sources.json` records where and when it came from. Entries not rebuilt are kept.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from aivp_batch.models import build_model_spec
from aivp_batch.schema_store import SchemaStore
from aivp_batch.snapshot import SNAPSHOT_DIR, Snapshot, SnapshotEntry, file_name, write_snapshot

TIERS = ("iteration", "standard", "hero")
CATALOG_FACTS = ("display_name", "category", "status")


def configured_endpoints() -> list[str]:
    """Every endpoint a packaged model config names for provider=fal, over every tier."""
    folder = Path(__file__).parents[1] / "aivp_batch/conf/model"
    models = sorted(p.stem for p in folder.glob("*.yaml") if p.stem != "auto")  # auto names no endpoint
    found: set[str] = set()
    with initialize_config_module(version_base="1.3", config_module="aivp_batch.conf"):
        for model in models:
            for tier in TIERS:
                cfg = OmegaConf.to_container(
                    compose("config", [f"model={model}", f"tier={tier}"]), resolve=True
                )
                if cfg["model"].get("retired"):  # no endpoints left to snapshot (model=sora2)
                    break
                spec = build_model_spec(cfg["model"], cfg["provider"], tier)
                found.update(mode.endpoint for mode in spec.modes.values())
    return sorted(found)


def from_dir(
    folder: Path, endpoints: list[str], origin: str | None
) -> tuple[list[SnapshotEntry], dict[str, dict]]:
    catalog_file = folder / "_catalog-metadata.json"
    catalog = json.loads(catalog_file.read_text(encoding="utf-8")) if catalog_file.is_file() else {}
    if not endpoints:
        endpoints = sorted(
            p.stem.replace("__", "/") for p in folder.glob("*.json") if not p.name.startswith("_")
        )
    entries, originals = [], {}
    for endpoint_id in endpoints:
        path = folder / file_name(endpoint_id)
        if not path.is_file():
            print(f"skip {endpoint_id}: no {path.name} in {folder}", file=sys.stderr)
            continue
        document = json.loads(path.read_text(encoding="utf-8"))
        # When fal produced it: the catalogue's generated_at, else the file's modification time.
        listed = catalog.get(endpoint_id, {})
        when = listed.get("generated_at") or _iso(path.stat().st_mtime)
        facts = {k: v for k, v in (listed.get("metadata") or {}).items() if k in CATALOG_FACTS}
        entries.append(SnapshotEntry(endpoint_id, document, f"{origin or 'file'}: {path.name}", when, facts))
        originals[endpoint_id] = document
    return entries, originals


def live(schema_url: str, endpoints: list[str]) -> tuple[list[SnapshotEntry], dict[str, dict]]:
    store = SchemaStore(schema_url, cache_dir=None, ttl_s=0, bundled=None)
    entries, originals = [], {}
    for endpoint_id in endpoints:
        try:
            document = store.fetch_document(endpoint_id)
        except Exception as exc:  # noqa: BLE001 - report and go on with the others
            print(f"skip {endpoint_id}: {exc}", file=sys.stderr)
            continue
        entries.append(SnapshotEntry(endpoint_id, document, store.url_for(endpoint_id), _iso(None)))
        originals[endpoint_id] = document
    return entries, originals


def _iso(timestamp: float | None) -> str:
    moment = datetime.now(UTC) if timestamp is None else datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-dir", type=Path, help="a folder of fal OpenAPI documents")
    source.add_argument("--live", action="store_true", help="fetch from --schema-url")
    parser.add_argument("--schema-url", default="https://fal.ai")
    parser.add_argument(
        "--endpoint", action="append", default=[], help="only these endpoint ids (repeatable)"
    )
    parser.add_argument("--out", type=Path, default=SNAPSHOT_DIR)
    parser.add_argument("--origin", help="where the folder's documents came from (recorded per entry)")
    args = parser.parse_args(argv)
    if args.from_dir:
        entries, originals = from_dir(args.from_dir, args.endpoint, args.origin)
    else:
        wanted = args.endpoint or sorted(set(configured_endpoints()) | set(Snapshot(args.out).endpoints()))
        entries, originals = live(args.schema_url, wanted)
    sources = write_snapshot(entries, originals, args.out)
    print(f"{len(entries)} documents written; the snapshot in {args.out} holds {len(sources)}")
    missing = sorted(set(configured_endpoints()) - set(sources))
    if missing:
        print(f"configured endpoints not in the snapshot: {', '.join(missing)}", file=sys.stderr)
    return 0 if entries else 1


if __name__ == "__main__":
    sys.exit(main())
