"""`python -m aivp_batch [hydra overrides]` (also the `aivp-batch` console script): Hydra's command
line around `app.run`. See `app.py` for what a run does and its exit statuses.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from . import __version__
from .app import run
from .config_check import unknown_key, unknown_setting
from .errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, AivpError, AuthError, InputError, SchemaUnavailable
from .files import atomic_write_text
from .keys import find_key, redact
from .user_conf import ENV_VAR, group_options, missing_env_dir, shadowing_primary
from .versions import versions


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

# The packaged launcher configs (conf/hydra/launcher/) and the optional extra each one needs.
LAUNCHER_PLUGINS = {
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher", "joblib"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher", "submitit"),
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher", "submitit"),
    "ray": ("hydra_plugins.hydra_ray_launcher", "hydra-ray-launcher", "ray"),
}


def missing_launcher(argv: list[str]) -> str | None:
    """`hydra/launcher=ray` without its plugin installed: one line naming the extra to install."""
    import importlib.util

    for arg in argv:
        key, _, name = arg.partition("=")
        if key.lstrip("+") != "hydra/launcher" or name not in LAUNCHER_PLUGINS:
            continue
        module, package, extra = LAUNCHER_PLUGINS[name]
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:
            found = False
        if not found:
            return f"hydra/launcher={name} needs the {package} plugin: pip install 'aivp-batch[{extra}]'"
    return None


def user_conf_problems() -> tuple[str | None, list[str]]:
    """(an error, notes) about the user's config layer, said before Hydra starts."""
    missing = missing_env_dir()
    error = f"{ENV_VAR}={missing} is not a directory" if missing else None
    notes = [
        f"{path} replaces the packaged primary config (config.yaml) wholesale" for path in shadowing_primary()
    ]
    return error, notes


def version_line() -> str:
    try:
        from importlib.metadata import version

        ours = version("aivp-batch")
    except Exception:  # not installed as a distribution (a bare checkout on sys.path)
        ours = __version__
    return f"aivp-batch {ours} (Hydra {hydra.__version__}, Python {sys.version.split()[0]})"


def override_problem(argv: list[str]) -> str | None:
    """One line for an override Hydra cannot parse, or a sweep (`a,b`) given without `-m`, before
    Hydra prints its own multi-line report. The parsing is Hydra's own (its argument and override
    parsers), so what passes here is what Hydra accepts."""
    try:
        from hydra._internal.utils import get_args_parser
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.errors import OverrideParseException
    except ImportError:  # another Hydra: leave it all to Hydra (and `hydra_error_line`)
        return None
    parser = get_args_parser()
    parser.exit_on_error = False  # a bad flag (`--cfg nope`) is one line too, not usage + error
    try:
        args, _ = parser.parse_known_args(argv)
    except argparse.ArgumentError as exc:
        return str(exc)
    if args.shell_completion:
        return None
    try:
        overrides = OverridesParser.create().parse_overrides(args.overrides)
    except OverrideParseException as exc:
        detail = exc.message.splitlines()[0].strip() if exc.message.strip() else ""
        if not detail or "expecting" in detail:  # the grammar's token list helps nobody
            detail = "not valid override syntax"
        return (
            f"cannot read the override {exc.override!r} ({detail}); a value with spaces, commas or "
            """quotes goes in double quotes inside single ones: 'manifest.prompt="A slow pan, at dawn"'"""
        )
    if args.multirun:
        return None
    for override in overrides:
        if not override.is_sweep_override():
            continue
        line = override.input_line or ""
        key, _, value = line.partition("=")
        if override.value_type is not None and override.value_type.name == "SIMPLE_CHOICE_SWEEP":
            return (
                f"{line}: the comma splits the value in two; quote it for Hydra inside the shell's "
                f"quotes, '{key}=\"{value}\"', or add -m to sweep over the values"
            )
        return f"{line}: a sweep needs -m (--multirun)"
    return None


def hydra_error_line(exc: BaseException) -> str:
    """One line for an error Hydra or OmegaConf raised while composing the config."""
    cause = exc.__cause__
    if isinstance(cause, OmegaConfBaseException) and "not in struct" in str(cause) and cause.full_key:
        key = str(cause.full_key)
        return (
            unknown_setting(key.removeprefix("settings."))
            if key.startswith("settings.")
            else unknown_key(key)
        )
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if isinstance(exc, MissingConfigException):
        lines = lines[:1]  # the rest lists the search path: `--info searchpath` shows it
    if isinstance(cause, OmegaConfBaseException) and (more := str(cause).strip().splitlines()):
        lines.append(more[0])
    return "; ".join(lines) or type(exc).__name__


# Our packaged launcher configs share their names with the plugins' own schemas, so Hydra checks
# them against those schemas (typos caught) and warns that this matching is deprecated; it is
# what hydra-core 1.3, which we pin, does.
_SCHEMA_MATCHING = r"\s*'hydra/launcher/\w+' is validated against ConfigStore schema with the same name"
# At import, not in main: a launcher's worker process imports this module to run a member.
warnings.filterwarnings("ignore", message=_SCHEMA_MATCHING, category=UserWarning)


def main() -> None:
    """The console entry point: `python -m aivp_batch` / `aivp-batch`."""
    argv = sys.argv[1:]
    if "--version" in argv:
        print(version_line())
        sys.exit(EXIT_OK)
    problem, notes = user_conf_problems()
    for note in notes:
        print(f"aivp-batch: note: {note}", file=sys.stderr)
    problem = problem or unknown_choice(argv) or override_problem(argv) or missing_launcher(argv)
    if problem:
        print(f"aivp-batch: error: {problem}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    if _user_wants_tracebacks():
        hydra_main()
        _exit_after_sweep()
        return
    # Hydra prints its own errors over several lines and exits 1; with HYDRA_FULL_ERROR it raises
    # them instead, so a config that cannot be composed becomes one line and exit 2 here.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    os.environ[_SET_BY_US] = "1"
    try:
        hydra_main()
    except (HydraException, OmegaConfBaseException) as exc:
        print(f"aivp-batch: error: {hydra_error_line(exc)}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    finally:
        os.environ.pop("HYDRA_FULL_ERROR", None)
        os.environ.pop(_SET_BY_US, None)
    _exit_after_sweep()


def _exit_after_sweep() -> None:
    """Hydra ignores what a sweep's members return: the aivp sweeper leaves the sweep's status
    (2 some member had bad input, 1 some member failed, else 0) in `sweep.exit_code()`."""
    from .sweep import exit_code

    code = exit_code()
    if code is not None:
        sys.exit(code)


_SET_BY_US = "AIVP_BATCH_SET_HYDRA_FULL_ERROR"  # so a launcher's worker process can tell too


def _user_wants_tracebacks() -> bool:
    """HYDRA_FULL_ERROR set by the user (not by `main`): Hydra's full tracebacks, as Hydra does."""
    return bool(os.environ.get("HYDRA_FULL_ERROR")) and not os.environ.get(_SET_BY_US)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def hydra_main(cfg: DictConfig) -> int:
    for name in ("httpx", "httpcore"):  # one line per HTTP request would drown the progress view
        logging.getLogger(name).setLevel(logging.WARNING)
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    name = cfg.provider.get("key_env")
    secrets = [k for k in (find_key(str(name)) if name else None,) if k]
    multirun = str(hc.mode) == "RunMode.MULTIRUN"
    parallel = multirun and not str(hc.launcher.get("_target_", "")).endswith(".BasicLauncher")
    try:
        code, summary = run(cfg, run_dir, sweep_member=multirun, parallel=parallel)
    except AivpError as exc:
        code, summary = (
            EXIT_BAD_INPUT if isinstance(exc, (InputError, AuthError, SchemaUnavailable)) else EXIT_FAILED,
            {"error": redact(str(exc), secrets)},
        )
        for line in summary["error"].splitlines():
            print(f"aivp-batch: error: {line}", file=sys.stderr)
    except OSError as exc:  # a file the run needed, or a full disk: one line, not a traceback
        if _user_wants_tracebacks():
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        code, summary = EXIT_FAILED, {"error": redact(f"{where}{exc.strerror or exc}", secrets)}
        print(f"aivp-batch: error: {summary['error']}", file=sys.stderr)
    summary.update(exit_status=code, choices=dict(hc.runtime.choices))
    summary.setdefault("versions", versions())  # a run that stopped early says what ran it too
    try:
        atomic_write_text(
            run_dir / "summary.json",
            redact(json.dumps(summary, indent=2, default=str, ensure_ascii=False), secrets) + "\n",
        )
    except OSError as exc:  # a full disk must not turn the run's own report into a traceback
        print(
            f"aivp-batch: warning: {run_dir / 'summary.json'} not written ({exc.strerror or exc})",
            file=sys.stderr,
        )
    if not multirun:
        sys.exit(code)
    return code  # a sweep goes on to its other members; each records its own exit_status
