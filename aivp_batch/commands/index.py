"""`aivp index SWEEP_DIR`: (re)write a sweep's `index.json`, `index.html` and `contact-sheet.png`
(see `aivp_batch.sweep_index`), e.g. for a sweep that was interrupted or ran on a cluster."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "write a sweep's index.json, index.html gallery and contact-sheet.png"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep_dir", type=Path, help="the sweep folder (hydra.sweep.dir)")


def run(args: argparse.Namespace) -> int:
    from ..sweep_index import CONTACT_SHEET, INDEX_HTML, INDEX_JSON, build_index

    data = build_index(args.sweep_dir)
    rows = data["rows"]
    done = sum(r["status"] == "done" for r in rows)
    picks = ", ".join(f"{shot}={p.get('member')}" for shot, p in sorted(data["picks"].items()))
    print(
        f"{args.sweep_dir}: {len(data['shots'])} shots × {len(data['members'])} members, "
        f"{done}/{len(rows)} clips done" + (f"; picked: {picks}" if picks else "")
    )
    for name in (INDEX_HTML, INDEX_JSON, CONTACT_SHEET):
        print(f"  {args.sweep_dir / name}")
    return 0
