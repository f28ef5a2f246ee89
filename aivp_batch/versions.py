"""The versions of aivp-batch and its key dependencies, recorded in every shot log and summary.json
so that a render can be redone with the same software. Computed once per process."""

from __future__ import annotations

import functools
import sys
from importlib.metadata import PackageNotFoundError, version

from . import __version__

DISTRIBUTIONS = ("aivp-batch", "hydra-core", "omegaconf", "httpx", "jsonschema", "av", "pillow")


@functools.cache
def _versions() -> tuple[tuple[str, str | None], ...]:
    found: list[tuple[str, str | None]] = []
    for name in DISTRIBUTIONS:
        try:
            found.append((name, version(name)))
        except PackageNotFoundError:  # a bare checkout on sys.path: our own __version__, else unknown
            found.append((name, __version__ if name == "aivp-batch" else None))
    found.append(("python", sys.version.split()[0]))
    return tuple(found)


def versions() -> dict[str, str | None]:
    """`{"aivp-batch": "0.1.0", "hydra-core": "1.3.2", …, "python": "3.11.9"}` (a fresh dict)."""
    return dict(_versions())
