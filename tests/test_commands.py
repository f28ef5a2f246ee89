"""The `aivp` command: its dispatcher, and `aivp pick` making a sweep take the project's clip."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_index import aivp, run_sweep

from aivp_batch import commands
from aivp_batch.media import sha256_file

TAKE = "model=veo31,seed=2"


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("pick")
    film, sweep, _ = run_sweep(root)
    return {"root": root, "film": film, "sweep": sweep}


def project_run(root: Path, film: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "AIVP_CACHE_DIR": str(root / "cache"), "HOME": str(root)}
    env.pop("FAL_KEY", None)
    args = [
        f"project_dir={film}",
        "provider=preview",
        "shots=[3]",
        *overrides,
        f"hydra.run.dir={root / 'run'}",
    ]
    return subprocess.run(
        [sys.executable, "-m", "aivp_batch", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_dispatcher_lists_commands_and_refuses_unknown_ones(tmp_path: Path, capsys) -> None:
    assert set(commands.SUBCOMMANDS) == {"index", "pick", "rerun"}
    assert commands.main([]) == 2
    assert "index" in capsys.readouterr().out
    assert commands.main(["nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aivp: error: unknown command 'nope'") and len(err.splitlines()) == 1
    assert commands.main(["--version"]) == 0 and capsys.readouterr().out.startswith("aivp-batch ")
    assert commands.main(["pick", str(tmp_path)]) == 2  # no SHOT=MEMBER: a usage error, one line
    assert len(capsys.readouterr().err.splitlines()) == 1


def test_subcommands_are_imported_only_when_chosen(tmp_path: Path) -> None:
    code = (
        "import sys; from aivp_batch.commands import main; main(['index', sys.argv[1]]); "
        "print(sorted(m for m in sys.modules if m.startswith('aivp_batch.commands.')))"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert proc.stdout.strip() == "['aivp_batch.commands.index']", proc.stderr
    assert proc.stderr.startswith("aivp: error: ") and "Traceback" not in proc.stderr


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("aivp")
    if not script.exists():
        script = Path(shutil.which("aivp") or "aivp")
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "pick" in proc.stdout


def test_pick_copies_the_take_and_its_log_and_a_later_run_keeps_it(swept: dict) -> None:
    root, film, sweep = swept["root"], swept["film"], swept["sweep"]
    assert not (film / "video/clips/shot-03.mp4").exists()
    proc = aivp("pick", str(sweep), f"shot-03={TAKE}", cwd=root)
    assert proc.returncode == 0, proc.stderr
    take_log = json.loads((sweep / TAKE / "video/log/shot-03.json").read_text())
    clip, log_path = film / "video/clips/shot-03.mp4", film / "video/log/shot-03.json"
    log = json.loads(log_path.read_text())
    assert sha256_file(clip) == take_log["clip"]["sha256"] == log["clip"]["sha256"]
    assert log["identity"] == take_log["identity"] and log["file"] == "video/clips/shot-03.mp4"
    assert log["picked"]["member"] == TAKE and log["delivered"]["bytes"] == clip.stat().st_size
    plan = (film / "video/plan.md").read_text()
    assert "| 3 | shot-03 | `video/clips/shot-03.mp4` | `veo31` |" in plan and "picked from sweep" in plan
    assert json.loads((sweep / "picks.json").read_text())["shot-03"]["member"] == TAKE
    index = json.loads((sweep / "index.json").read_text())
    assert [r["member"] for r in index["rows"] if r["picked"]] == [TAKE]  # the gallery shows it
    shown = aivp("index", str(sweep), cwd=root)
    assert f"picked: shot-03={TAKE}" in shown.stdout

    # The project's next run with the take's settings reuses it: no re-render, no "changed" warning.
    before = (clip.read_bytes(), log_path.read_bytes(), clip.stat().st_mtime_ns)
    renders = sorted((film / ".aivp/renders").glob("*"))
    again = project_run(root, film, "model=veo31", "seed=2")
    assert again.returncode == 0, again.stderr
    assert "reused" in again.stdout and "changed on disk" not in again.stderr
    assert (clip.read_bytes(), log_path.read_bytes(), clip.stat().st_mtime_ns) == before
    assert sorted((film / ".aivp/renders").glob("*")) == renders


@pytest.mark.parametrize(
    ("choice", "message"),
    [
        ("shot-03=model=nope", "unknown member 'model=nope'"),
        ("shot-09=model=veo31,seed=1", "unknown shot 'shot-09'"),
        ("shot03", "'shot03': expected SHOT=MEMBER"),
        ("../../x=model=veo31,seed=1", "'../../x' is not a shot id"),
    ],
)
def test_pick_refuses_an_unknown_member_or_shot(swept: dict, choice: str, message: str) -> None:
    proc = aivp("pick", str(swept["sweep"]), choice, cwd=swept["root"])
    assert proc.returncode == 2 and proc.stderr.startswith(f"aivp: error: {message}"), proc.stderr
    assert len(proc.stderr.splitlines()) == 1


def test_pick_never_overwrites_a_clip_edited_on_disk_without_force(swept: dict) -> None:
    root, film, sweep = swept["root"], swept["film"], swept["sweep"]
    clip = film / "video/clips/shot-03.mp4"
    clip.write_bytes(clip.read_bytes() + b"edited")
    edited = clip.read_bytes()
    proc = aivp("pick", str(sweep), "3=model=kling_v26,seed=1", cwd=root)
    assert proc.returncode == 2 and "changed on disk" in proc.stderr and "--force" in proc.stderr
    assert clip.read_bytes() == edited
    forced = aivp("pick", str(sweep), "3=model=kling_v26,seed=1", "--force", cwd=root)
    assert forced.returncode == 0, forced.stderr
    want = json.loads((sweep / "model=kling_v26,seed=1/video/log/shot-03.json").read_text())["clip"]["sha256"]
    assert sha256_file(clip) == want
    # Picking another take over one we delivered needs no --force.
    assert aivp("pick", str(sweep), f"shot-03={TAKE}", cwd=root).returncode == 0


def test_pick_refuses_a_failed_take(swept: dict) -> None:
    sweep = swept["sweep"]
    broken = sweep / "broken"
    shutil.copytree(sweep / "model=kling_v26,seed=2", broken)
    log_path = broken / "video/log/shot-03.json"
    log_path.write_text(json.dumps({**json.loads(log_path.read_text()), "status": "failed", "error": "boom"}))
    before = (swept["film"] / "video/clips/shot-03.mp4").read_bytes()
    proc = aivp("pick", str(sweep), "shot-03=broken", cwd=swept["root"])
    assert proc.returncode == 2 and "did not finish (boom)" in proc.stderr, proc.stderr
    assert (swept["film"] / "video/clips/shot-03.mp4").read_bytes() == before
