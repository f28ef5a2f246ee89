"""Where the fal key comes from, and that it never shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from aivp_batch.keys import find_fal_key, redact


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    cwd, home = tmp_path / "project", tmp_path / "home"
    (home / ".aivp").mkdir(parents=True)
    cwd.mkdir()
    return cwd, home


def write(path: Path, text: str) -> None:
    path.write_text(text)


def test_precedence_env_then_cwd_then_home_then_aivp(dirs: tuple[Path, Path]) -> None:
    cwd, home = dirs
    assert find_fal_key({}, cwd, home) is None
    write(home / ".aivp" / ".env", "FAL_KEY=from-aivp\n")
    assert find_fal_key({}, cwd, home) == "from-aivp"
    write(home / ".env", "OTHER=1\nFAL_KEY='from-home'\n")
    assert find_fal_key({}, cwd, home) == "from-home"
    write(cwd / ".env", 'export FAL_KEY="id:secret"\n')
    assert find_fal_key({}, cwd, home) == "id:secret"
    assert find_fal_key({"FAL_KEY": "from-env"}, cwd, home) == "from-env"


def test_empty_values_fall_through(dirs: tuple[Path, Path]) -> None:
    cwd, home = dirs
    write(cwd / ".env", "FAL_KEY=\n")
    write(home / ".env", "FAL_KEY=later\n")
    assert find_fal_key({"FAL_KEY": "  "}, cwd, home) == "later"


def test_env_file_is_parsed_never_executed(dirs: tuple[Path, Path]) -> None:
    cwd, home = dirs
    victim = cwd / "victim"
    victim.mkdir()
    write(cwd / ".env", f"FAL_KEY=$(rm -rf {victim})\nHOME_KEY=${{HOME}}\n")
    key = find_fal_key({}, cwd, home)
    assert victim.is_dir()
    assert key == f"$(rm -rf {victim})"  # literal text, no command substitution


def test_no_interpolation(dirs: tuple[Path, Path]) -> None:
    cwd, home = dirs
    write(cwd / ".env", "SECRET=abc\nFAL_KEY=${SECRET}\n")
    assert find_fal_key({"SECRET": "leak"}, cwd, home) == "${SECRET}"


def test_redact_hides_the_secret_and_the_header_form() -> None:
    text = "sent Authorization: Key s3cr3t-value; echo s3cr3t-value"
    assert redact(text, ["s3cr3t-value", None, ""]) == "sent Authorization: Key ***; echo ***"
    assert redact("nothing here", ["s3cr3t-value"]) == "nothing here"


def test_a_value_too_short_to_be_a_key_is_not_blanked_out_of_messages() -> None:
    text = "fal-ai/bytedance/seedance/v1.5/pro/text-to-video: bad resolution"
    assert redact(text, ["x", "to"]) == text  # FAL_KEY=x must not turn "text" into "te***t"
    assert redact("Key abcdefgh sent", ["abcdefgh"]) == "Key *** sent"
