"""Finding a provider's API key, and keeping it out of anything printed.

Order (for fal's `FAL_KEY`; other providers name their own variable): the environment, then
`./.env`, `~/.env`, `~/.aivp/.env`. The files are parsed with python-dotenv (`KEY=value` lines,
never executed, no `${VAR}` interpolation), so a hostile `.env` cannot run anything.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from dotenv import dotenv_values

KEY_NAME = "FAL_KEY"
HOW_TO_SET = "set FAL_KEY in the environment or in ./.env, ~/.env or ~/.aivp/.env"  # fal's wording


def key_files(cwd: Path, home: Path) -> list[Path]:
    """The `.env` files searched, in precedence order."""
    return [cwd / ".env", home / ".env", home / ".aivp" / ".env"]


def how_to_set(name: str) -> str:
    return f"set {name} in the environment or in ./.env, ~/.env or ~/.aivp/.env"


def find_fal_key(
    env: Mapping[str, str] | None = None, cwd: Path | None = None, home: Path | None = None
) -> str | None:
    """The first non-empty FAL_KEY from the environment or the `.env` files; None if there is none."""
    return find_key(KEY_NAME, env, cwd, home)


def find_key(
    name: str, env: Mapping[str, str] | None = None, cwd: Path | None = None, home: Path | None = None
) -> str | None:
    """The first non-empty `name` from the environment or the `.env` files; None if there is none."""
    env = os.environ if env is None else env
    # Defaults are resolved per call (not at import) so a changed cwd/HOME is honoured.
    cwd = Path.cwd() if cwd is None else cwd
    home = Path.home() if home is None else home
    value = (env.get(name) or "").strip()
    if value:
        return value
    for path in key_files(cwd, home):
        if not path.is_file():
            continue
        try:
            values = dotenv_values(path, interpolate=False)
        except (OSError, UnicodeDecodeError):
            continue  # an unreadable file is skipped, like a missing one
        value = (values.get(name) or "").strip()
        if value:
            return value
    return None


MIN_SECRET_CHARS = 8  # a shorter "key" is no real one (fal's are ~70 characters, Replicate's 40)


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every secret (and its `Key <secret>` header form) in `text` with `***`. A value
    under MIN_SECRET_CHARS is left alone: FAL_KEY=x would otherwise blank every "x" in a message."""
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True):
        text = text.replace(f"Key {secret}", "Key ***").replace(secret, "***")
    return text
