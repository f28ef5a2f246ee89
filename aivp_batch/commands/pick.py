"""`aivp pick SWEEP_DIR shot-03=MEMBER […]`: make a sweep take the project's clip of its shot
(see `aivp_batch.picks`)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "make a sweep take the project's clip of its shot (shot-03=MEMBER)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep_dir", type=Path, help="the sweep folder (hydra.sweep.dir)")
    parser.add_argument(
        "choices",
        nargs="+",
        metavar="SHOT=MEMBER",
        help="a shot (shot-03, or 3) and the member whose take it gets, e.g. shot-03=model=veo31,seed=2",
    )
    parser.add_argument(
        "--project", type=Path, help="the project to pick into (default: the sweep's project_dir)"
    )
    parser.add_argument(
        "--force", action="store_true", help="replace a project clip even where it was changed on disk"
    )


def run(args: argparse.Namespace) -> int:
    from ..picks import parse_choice, pick
    from ..records import relpath

    takes = pick(args.sweep_dir, [parse_choice(c) for c in args.choices], args.project, args.force)
    for take in takes:
        dest = relpath(take.output_dir / "clips" / f"{take.shot}.mp4", take.project_dir)
        print(f"{take.shot}: picked {take.member} → {take.project_dir}/{dest}")
    return 0
