"""Where the user's own Hydra configs live: the one place both the search-path plugin
(`hydra_plugins/aivp_batch_searchpath`) and the CLI's early checks (`cli.unknown_choice`) ask.

Precedence, first match wins (Hydra takes the first search-path entry that has the config):

1. the directory named by `AIVP_CONFIG_DIR`;
2. `./conf` in the current working directory;
3. the packaged defaults, `aivp_batch/conf` (`pkg://aivp_batch.conf`);
4. `--config-dir DIR` and `hydra.searchpath=[...]` (Hydra 1.3 puts both after the primary config's
   own directory, so they can add options but not override any of the above).

A user directory that does not exist is simply not used. This module imports nothing heavy: the
plugin imports it while Hydra builds the search path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

ENV_VAR = "AIVP_CONFIG_DIR"
CWD_DIR = "conf"
PACKAGED_CONF = Path(__file__).resolve().parent / "conf"
# How Hydra names the packaged configs in its search path: `@hydra.main` run as a module gives
# the first, `initialize_config_module("aivp_batch.conf")` the second, a console script may give
# the directory itself.
PACKAGED_SEARCH_PATHS = ("pkg://aivp_batch.conf", "pkg://aivp_batch/conf")


def _env_dir(environ: Mapping[str, str] | None, cwd: Path) -> Path | None:
    value = (os.environ if environ is None else environ).get(ENV_VAR, "").strip()
    return (cwd / Path(value).expanduser()).resolve() if value else None


def user_config_dirs(cwd: Path | None = None, environ: Mapping[str, str] | None = None) -> list[Path]:
    """The user's config directories that exist, highest precedence first, each once:
    `$AIVP_CONFIG_DIR`, then `./conf`. The packaged directory is never one of them."""
    cwd = Path.cwd() if cwd is None else cwd
    candidates = [_env_dir(environ, cwd), (cwd / CWD_DIR).resolve()]
    dirs: list[Path] = []
    for path in candidates:
        if path is not None and path.is_dir() and path != PACKAGED_CONF and path not in dirs:
            dirs.append(path)
    return dirs


def missing_env_dir(cwd: Path | None = None, environ: Mapping[str, str] | None = None) -> Path | None:
    """`$AIVP_CONFIG_DIR` when it is set but names no directory (a typo the user should hear of)."""
    path = _env_dir(environ, Path.cwd() if cwd is None else cwd)
    return path if path is not None and not path.is_dir() else None


def search_path_entries(
    cwd: Path | None = None, environ: Mapping[str, str] | None = None
) -> list[tuple[str, str]]:
    """`(provider, file://dir)` for each user directory, highest precedence first."""
    cwd = Path.cwd() if cwd is None else cwd
    env = _env_dir(environ, cwd)
    return [
        (f"aivp-user ({ENV_VAR})" if path == env else f"aivp-user (./{CWD_DIR})", f"file://{path}")
        for path in user_config_dirs(cwd, environ)
    ]


def is_packaged_search_path(path: str) -> bool:
    """Whether a Hydra search-path entry is the packaged `aivp_batch/conf`."""
    if path.rstrip("/") in PACKAGED_SEARCH_PATHS:
        return True
    if path.startswith("pkg://"):
        return False
    local = path.removeprefix("file://")
    try:
        return bool(local) and Path(local).resolve() == PACKAGED_CONF
    except (OSError, ValueError):
        return False


def group_options(group: str, cwd: Path | None = None, environ: Mapping[str, str] | None = None) -> list[str]:
    """Every option of a config group, from the user's directories and the package, sorted.
    Options in sub-folders are named as Hydra names them: `sub/name`."""
    options: set[str] = set()
    for root in [*user_config_dirs(cwd, environ), PACKAGED_CONF]:
        folder = root / group
        if folder.is_dir():
            options.update(p.relative_to(folder).with_suffix("").as_posix() for p in folder.rglob("*.yaml"))
    return sorted(options)


def shadowing_primary(cwd: Path | None = None, environ: Mapping[str, str] | None = None) -> list[Path]:
    """User `config.yaml` files: each would replace the packaged primary config wholesale."""
    return [d / "config.yaml" for d in user_config_dirs(cwd, environ) if (d / "config.yaml").is_file()]
