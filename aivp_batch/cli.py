"""`python -m aivp_batch [hydra overrides]` (also the `aivp-batch` console script): Hydra's command
line around `app.run`. See `app.py` for what a run does and its exit statuses.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from .app import EXIT_BAD_INPUT, EXIT_FAILED, run
from .errors import AivpError, AuthError, InputError, SchemaUnavailable
from .files import atomic_write_text
from .keys import find_key, redact
from .user_conf import ENV_VAR, group_options, missing_env_dir, shadowing_primary


def unknown_choice(argv: list[str]) -> str | None:
    """One line for `model=nope`-style mistakes, before Hydra prints its multi-line report.
    Knows the packaged options and the user's own (`$AIVP_CONFIG_DIR`, `./conf`: see `user_conf`);
    skipped when the command line adds config dirs, whose options only Hydra can see."""
    if any(a.startswith(("--config-dir", "-cd", "hydra.searchpath", "--config-path", "-cp")) for a in argv):
        return None
    for arg in argv:
        key, sep, value = arg.partition("=")
        group = key.lstrip("+")  # `+experiment=NAME` adds a group the defaults list lacks
        if not sep or group not in CHOICE_GROUPS or "(" in value:  # glob(*), choice(…): Hydra's job
            continue
        options = group_options(group)
        for choice in value.split(","):  # a sweep lists several
            if choice and choice not in options:
                return f"unknown {group}={choice} (available: {', '.join(options) or 'none'})"
    return None


CHOICE_GROUPS = ("provider", "model", "tier", "manifest", "experiment")


def user_conf_problems() -> tuple[str | None, list[str]]:
    """(an error, notes) about the user's config layer, said before Hydra starts."""
    missing = missing_env_dir()
    error = f"{ENV_VAR}={missing} is not a directory" if missing else None
    notes = [
        f"{path} replaces the packaged primary config (config.yaml) wholesale" for path in shadowing_primary()
    ]
    return error, notes


def main() -> None:
    """The console entry point: `python -m aivp_batch` / `aivp-batch`."""
    problem, notes = user_conf_problems()
    for note in notes:
        print(f"aivp-batch: note: {note}", file=sys.stderr)
    problem = problem or unknown_choice(sys.argv[1:])
    if problem:
        print(f"aivp-batch: error: {problem}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    hydra_main()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def hydra_main(cfg: DictConfig) -> int:
    for name in ("httpx", "httpcore"):  # one line per HTTP request would drown the progress view
        logging.getLogger(name).setLevel(logging.WARNING)
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    name = cfg.provider.get("key_env")
    secrets = [k for k in (find_key(str(name)) if name else None,) if k]
    multirun = str(hc.mode) == "RunMode.MULTIRUN"
    try:
        code, summary = run(cfg, run_dir, sweep_member=multirun)
    except AivpError as exc:
        code, summary = (
            EXIT_BAD_INPUT if isinstance(exc, (InputError, AuthError, SchemaUnavailable)) else EXIT_FAILED,
            {"error": redact(str(exc), secrets)},
        )
        for line in summary["error"].splitlines():
            print(f"aivp-batch: error: {line}", file=sys.stderr)
    summary.update(exit_status=code, choices=dict(hc.runtime.choices))
    atomic_write_text(
        run_dir / "summary.json", redact(json.dumps(summary, indent=2, default=str), secrets) + "\n"
    )
    if not multirun:
        sys.exit(code)
    return code  # a sweep goes on to its other members; each records its own exit_status
