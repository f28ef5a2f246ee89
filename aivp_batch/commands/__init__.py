"""`aivp SUBCOMMAND …` (also `python -m aivp_batch.commands …`): the project's tools that work on
what runs and sweeps left behind, next to the Hydra run command (`aivp-batch`, `python -m aivp_batch`).

Each subcommand is a module named in `SUBCOMMANDS`, imported only when it is chosen, that defines
`HELP` (one line for `aivp --help`), `add_arguments(parser)` and `run(args) -> int`. An `AivpError`
(bad input: an unknown member, a missing folder…) is one `aivp: error: …` line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from ..errors import AivpError

EXIT_BAD_INPUT = 2

SUBCOMMANDS = {
    "index": "aivp_batch.commands.index",
    "pick": "aivp_batch.commands.pick",
    "rerun": "aivp_batch.commands.rerun",
}

# `aivp --help` lists every subcommand without importing any of them.
_SUMMARIES = {
    "index": "write a sweep's index.json, index.html gallery and contact-sheet.png",
    "pick": "make a sweep take the project's clip of its shot (shot-03=MEMBER)",
    "rerun": "run again what an earlier run or sweep did",
}


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one `aivp: error:` line (exit 2), not usage + error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(message)


class _UsageError(Exception):
    pass


def _load(name: str) -> ModuleType:
    try:
        return importlib.import_module(SUBCOMMANDS[name])
    except ModuleNotFoundError as exc:
        if exc.name == SUBCOMMANDS[name]:
            raise AivpError(f"the {name} command is not available in this installation") from None
        raise


def build_parser(chosen: str | None) -> argparse.ArgumentParser:
    parser = _Parser(prog="aivp", description="Tools for aivp-batch runs and sweeps.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in SUBCOMMANDS:
        if name == chosen:
            module = _load(name)
            sp = sub.add_parser(name, help=module.HELP, description=module.HELP)
            module.add_arguments(sp)
            sp.set_defaults(_run=module.run)
        else:
            sub.add_parser(name, help=_SUMMARIES.get(name, ""), add_help=False)
    return parser


def _chosen(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    """The `aivp` console script. Returns the exit status (the script exits with it)."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    try:
        chosen = _chosen(args_in)
        if chosen is not None and chosen not in SUBCOMMANDS:
            raise _UsageError(f"unknown command {chosen!r} (choose from {', '.join(SUBCOMMANDS)})")
        parser = build_parser(chosen)
        args = parser.parse_args(args_in)
        if args.version:
            from ..cli import version_line

            print(version_line())
            return 0
        if args.command is None:
            parser.print_help()
            return EXIT_BAD_INPUT
        return int(args._run(args))
    except _UsageError as exc:
        print(f"aivp: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except AivpError as exc:
        print(f"aivp: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"aivp: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("aivp: interrupted", file=sys.stderr)
        return 130
