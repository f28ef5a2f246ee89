"""Bad input is one clear line, never a traceback: each bad value → exit 2, one `aivp-batch: error:`
line naming the key, before anything is spent (config_check, cli's Hydra error mapping, app.run's
folder checks); the generic settings work as documented; a dry run shows the whole plan."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import hydra
import pytest
import test_cli
from test_bad_inputs import _error_lines as error_lines

from aivp_batch import __version__, app
from aivp_batch.app import build_plan, resolve_paths
from aivp_batch.cli import override_problem
from aivp_batch.config_check import check_config, check_writable_dir, declared, model_settings
from aivp_batch.errors import ConfigError, InputError
from aivp_batch.models import _TIER_RESERVED
from aivp_batch.user_conf import PACKAGED_CONF

SHOT_04 = "storyboard/storyboard-final/shots/shot-04.md"


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    # HYDRA_FULL_ERROR set (non-empty) would ask for Hydra's tracebacks; these tests want the lines.
    env = {"HYDRA_FULL_ERROR": "", "AIVP_CONFIG_DIR": ""}
    return test_cli.run_cli(*args, cwd=tmp_path, env=env, timeout=120)


# ---------------------------------------------------------------- the command line, end to end


@pytest.mark.parametrize(
    "override, says",
    [
        ("seed=abc", "seed=abc: must be a whole number ≥ 0"),
        ("seed=1.5", "seed=1.5: must be a whole number ≥ 0"),
        ("budget_usd=abc", "budget_usd=abc: must be an amount in US dollars ≥ 0"),
        ("budget_usd=-5", "budget_usd=-5: must be an amount in US dollars ≥ 0"),
        ("provider.max_in_flight=0", "provider.max_in_flight=0: must be a number of concurrent requests ≥ 1"),
        ("provider.max_in_flight=-3", "provider.max_in_flight=-3: must be"),
        ("shots=[]", "shots=[]: selects no shot"),
        ("+settings.audo=false", "settings.audo: unknown setting, did you mean settings.audio?"),
        ("settings.audo=false", "settings.audo: unknown setting, did you mean settings.audio?"),  # Hydra's
        ("sed=4", "sed: unknown key, did you mean seed?"),  # Hydra's own "not in struct"
        ("seed=[", "cannot read the override 'seed=['"),  # Hydra's override parser
        ("manifest.prompt=A slow pan, at dawn", "the comma splits the value in two"),
    ],
)
def test_a_bad_value_is_one_line_exit_2_and_nothing_runs(film: Path, tmp_path: Path, override, says) -> None:
    proc = run_cli(tmp_path, f"project_dir={film}", "provider=preview", override)
    assert proc.returncode == 2, proc.stderr + proc.stdout
    assert error_lines(proc) == proc.stderr.strip().splitlines(), proc.stderr  # that line and nothing else
    [line] = error_lines(proc)
    assert says in line, line
    assert "Traceback" not in proc.stderr and not (film / "video").exists()


def test_an_output_dir_that_is_a_file_is_one_line_exit_2(film: Path, tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    for where in (taken, taken / "sub"):
        proc = run_cli(tmp_path, f"project_dir={film}", "provider=preview", f"output_dir={where}")
        assert proc.returncode == 2, proc.stderr
        [line] = error_lines(proc)
        assert line.startswith(f"aivp-batch: error: output_dir={where}: ") and "Traceback" not in proc.stderr
    assert not (film / ".aivp/jobs").exists()  # nothing was planned, let alone submitted


def test_a_read_only_video_folder_is_one_line_exit_2(film: Path, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        (film / "video").mkdir()
        (film / "video").chmod(0o555)
        where, says = [], ("output_dir (default", "Permission denied")
    else:  # root writes through file modes; sysfs refuses even root
        where, says = ["output_dir=/sys/aivp-video"], ("output_dir=/sys/aivp-video", "not permitted")
    try:
        proc = run_cli(tmp_path, f"project_dir={film}", "provider=preview", *where)
    finally:
        if (film / "video").exists():
            (film / "video").chmod(0o755)
    assert proc.returncode == 2, proc.stderr
    [line] = error_lines(proc)
    assert all(part in line for part in says), line


def test_the_documented_settings_form_and_a_quoted_prompt_work(tmp_path: Path) -> None:
    proc = run_cli(
        tmp_path,
        "manifest=prompt",
        'manifest.prompt="A slow pan, at dawn"',  # what the shell passes for '…="A slow pan, at dawn"'
        f"output_dir={tmp_path / 'out'}",
        "settings.audio=false",
        "dry_run=true",
        "offline=true",
    )
    assert proc.returncode == 0, proc.stderr
    [job] = json.loads((tmp_path / "run/summary.json").read_text())["plan"]["jobs"]
    assert job["payload"]["prompt"] == "A slow pan, at dawn" and job["payload"]["generate_audio"] is False


def test_version(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"aivp-batch {__version__} (Hydra {hydra.__version__}")


def test_a_dry_run_with_a_shot_too_long_shows_the_whole_plan_and_exits_2(film: Path, tmp_path: Path) -> None:
    spec = film / SHOT_04
    spec.write_text(spec.read_text().replace("7s", "14s"))
    proc = run_cli(tmp_path, f"project_dir={film}", "model=seedance_v15", "dry_run=true", "offline=true")
    assert proc.returncode == 2, proc.stderr
    rows = [line.split()[0:2] for line in proc.stdout.splitlines() if line.startswith("shot-0")]
    assert rows == [["shot-01", "I2V"], ["shot-02", "FLF"], ["shot-03", "T2V"], ["shot-04", "ERR"]]
    err = next(line for line in proc.stdout.splitlines() if line.startswith("shot-04"))
    assert "duration 14s is longer than" in err
    hint = proc.stdout.splitlines()[proc.stdout.splitlines().index(err) + 1].strip()
    assert hint.startswith("hint: shots=[1,2,3] renders the others; a model that allows it: model=kling_o3")
    assert "split the shot into shots of at most 12s" in hint
    assert "schema fal-ai/bytedance/seedance/v1.5/pro/image-to-video: bundled snapshot" in proc.stdout
    [line] = error_lines(proc)
    assert "shot-04 (shot-04.md): duration 14s" in line
    assert "shot-04    ERR" in (tmp_path / "run/plan.txt").read_text()


# ---------------------------------------------------------------- in process: the rules themselves


@pytest.mark.parametrize(
    "override, says",
    [
        ("dry_run=yes", "dry_run=yes: must be true or false"),
        ("offline=1", "offline=1: must be true or false"),
        ("duration_policy=round", "duration_policy=round: must be one of raise, strict"),
        ("lock_wait_s=-1", "lock_wait_s=-1: must be a number of seconds ≥ 0"),
        ("price_drift=abc", "price_drift=abc: must be a fraction"),
        ("max_prompt_chars=0", "max_prompt_chars=0: must be a number of characters ≥ 1"),
        ("schema_ttl_s=soon", "schema_ttl_s=soon: must be a number of seconds ≥ 0"),
        ("provider.poll_interval=0", "provider.poll_interval=0: must be a number of seconds > 0"),
        ("provider.retry.attempts=0", "provider.retry.attempts=0: must be a number of attempts ≥ 1"),
        ("provider.reconcile.margin_s=-1", "provider.reconcile.margin_s=-1: must be"),
        ("output_dir=5", "output_dir=5: must be a path; quote one that looks like a number"),
        ("settings.audio=no", "settings.audio=no: must be true or false"),
        ("seed=-1", "seed=-1: must be a whole number ≥ 0"),
        ("shots=[true]", "shots=[true]: each shot is a number"),
        ("+sed=4", "sed: unknown key, did you mean seed?"),
    ],
)
def test_check_config_names_the_key(compose_cfg, override: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_config(compose_cfg(override))
    assert str(caught.value) == says or str(caught.value).startswith(says), str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        [
            "seed=42",
            "budget_usd=0",
            "lock_wait_s=0",
            "shots=[1.2]",
            "rerender=[]",
            "provider.start_timeout=null",
        ],
        ["settings.audio=false", "settings.resolution=480p", "settings.variant=pro", "settings.speed=''"],
        ["provider=preview", "provider.fps=12", "provider.latency_s=0"],
        ["model=kling_o3", "tier=hero", "budget_usd=null"],
    ],
)
def test_good_values_pass(compose_cfg, overrides: list[str]) -> None:
    check_config(compose_cfg(*overrides))


def test_several_problems_are_one_line_each(compose_cfg) -> None:
    with pytest.raises(ConfigError) as caught:
        check_config(compose_cfg("seed=abc", "budget_usd=-1"))
    assert [line.split(":")[0] for line in str(caught.value).splitlines()] == ["seed=abc", "budget_usd=-1"]


def test_the_declared_settings_are_the_packaged_models_tier_keys() -> None:
    from omegaconf import OmegaConf

    used = set()
    for path in (PACKAGED_CONF / "model").glob("*.yaml"):
        used |= model_settings(OmegaConf.to_container(OmegaConf.load(path)))
    assert used and not used & _TIER_RESERVED
    assert declared()[1] == used == {"audio", "resolution", "variant", "speed"}


def test_a_null_setting_keeps_the_tiers_value(compose_cfg, film: Path, tmp_path: Path) -> None:
    def audio(*overrides: str) -> set:
        cfg = compose_cfg(f"project_dir={film}", "model=seedance_v15", *overrides)
        plan, _, _ = build_plan(cfg, resolve_paths(cfg, tmp_path))
        return {job.payload["generate_audio"] for job in plan.jobs}

    assert audio() == {True}  # tier=standard has audio: true
    assert audio("tier=iteration") == {False}
    assert audio("settings.audio=false") == {False}
    assert audio("tier=iteration", "settings.audio=true") == {True}


def test_a_setting_the_model_does_not_read_is_a_warning(compose_cfg) -> None:
    assert check_config(compose_cfg("model=kling_v26", "settings.resolution=480p")) == [
        "settings.resolution=480p is not used by model=kling_v26 on provider=fal"
    ]
    # A user's own model may add its own tier key with +settings.NAME.
    cfg = compose_cfg("+settings.quality=high", "+model.tiers.standard.quality=low")
    assert check_config(cfg) == []


def test_shots_by_shot_id(compose_cfg, film: Path, tmp_path: Path) -> None:
    cfg = compose_cfg(f"project_dir={film}", "provider=preview", "shots=[1.2,shot-04]")
    plan, _, _ = build_plan(cfg, resolve_paths(cfg, tmp_path))
    assert [job.key for job in plan.jobs] == ["shot-02", "shot-04"]


@pytest.mark.parametrize(
    "argv, says",
    [
        (["model=a,b"], "model=a,b: the comma splits the value in two"),
        (["seed=range(1,3)"], "seed=range(1,3): a sweep needs -m (--multirun)"),
        (["seed=[1"], "cannot read the override 'seed=[1'"),
        (["--cfg", "nope"], "argument --cfg/-c: invalid choice: 'nope'"),
        (["-m", "model=a,b"], None),
        (["--multirun", "seed=1,2"], None),
        (["--cfg", "job", "seed=1", 'manifest.prompt="a, b"'], None),
        (["manifest.prompt='a, b'"], None),
    ],
)
def test_override_problem(argv: list[str], says: str | None) -> None:
    problem = override_problem(argv)
    assert problem == says or (says and problem and problem.startswith(says)), problem


# ---------------------------------------------------------------- folders and OS errors


def test_writable_dir_checks(tmp_path: Path, monkeypatch) -> None:
    check_writable_dir(tmp_path / "new", "output_dir=new", create=False)
    assert not (tmp_path / "new").exists()  # a dry run makes nothing
    check_writable_dir(tmp_path / "new", "output_dir=new", create=True)
    assert (tmp_path / "new").is_dir() and not list((tmp_path / "new").iterdir())

    def read_only(*args, **kwargs):  # the OS error a read-only folder gives
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr("aivp_batch.config_check.tempfile.mkstemp", read_only)
    with pytest.raises(ConfigError, match=r"^output_dir=new: cannot write in .*new \(Permission denied\)$"):
        check_writable_dir(tmp_path / "new", "output_dir=new", create=True)


def test_an_unreadable_keyframe_is_one_line_exit_2(
    compose_cfg, film: Path, tmp_path: Path, monkeypatch
) -> None:
    import aivp_batch.planning as planning

    real = planning.sha256_file
    frame = film / "image/frames/shot-01-ff.png"

    def sha256_file(path: Path) -> str:  # the OS error an unreadable file gives
        if Path(path) == frame:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(path)

    monkeypatch.setattr(planning, "sha256_file", sha256_file)
    cfg = compose_cfg(f"project_dir={film}", "provider=preview")
    with pytest.raises(InputError) as caught:
        app.run(cfg, tmp_path / "run")
    assert str(caught.value).splitlines() == [
        f"shot-01 (shot-01.md): {frame} cannot be read (Permission denied)"
    ]
    assert not (film / "video/clips").exists()


def test_a_full_disk_during_a_download_fails_that_clip_and_the_rerun_recovers(
    compose_cfg, film: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    from aivp_batch.providers.preview import PreviewProvider

    real = PreviewProvider.download

    async def full_disk(self, url: str, dest: Path) -> int:  # writing the clip fails: ENOSPC
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dest))

    cfg = compose_cfg(f"project_dir={film}", "provider=preview", "shots=[3]")
    monkeypatch.setattr(PreviewProvider, "download", full_disk)
    code, summary = app.run(cfg, tmp_path / "run1")
    out = capsys.readouterr()
    assert code == 1 and summary["failed"] == 1
    [result] = summary["results"]
    assert result["status"] == "failed" and "No space left on device" in result["error"]
    assert "rerun to fetch it again" in result["error"] and "\n" not in result["error"]
    assert "Traceback" not in out.err + out.out
    monkeypatch.setattr(PreviewProvider, "download", real)
    code, summary = app.run(cfg, tmp_path / "run2")
    assert code == 0 and summary["done"] == 1
    assert (film / "video/clips/shot-03.mp4").is_file()


def test_a_keyframe_that_is_a_directory_is_one_line_not_a_silent_t2v(film: Path, tmp_path: Path) -> None:
    frame = film / "image/frames/shot-01-ff.png"
    frame.unlink()
    frame.mkdir()
    proc = run_cli(tmp_path, f"project_dir={film}", "provider=preview", "shots=[1.1]")
    assert proc.returncode == 2, proc.stderr
    assert error_lines(proc) == [
        "aivp-batch: error: storyboard/storyboard-final/shots/shot-01.md: "
        "image/frames/shot-01-ff.png is a directory, not an image file"
    ]
    assert not (film / "video/clips").exists()


def test_replicate_provider_knobs_are_checked(compose_cfg) -> None:
    from aivp_batch.config_check import check_config
    from aivp_batch.errors import ConfigError

    check_config(compose_cfg("provider=replicate", "model=veo31"))  # the packaged values pass
    for override, says in (
        ("provider.cancel_after=2", "provider.cancel_after=2: must be a number of seconds ≥ 5"),
        ("provider.base_url=replicate.com", "provider.base_url=replicate.com: must be an http(s) URL"),
        ("provider.data_url_max_bytes=-1", "provider.data_url_max_bytes=-1: must be a number of bytes ≥ 0"),
    ):
        with pytest.raises(ConfigError) as err:
            check_config(compose_cfg("provider=replicate", "model=veo31", override))
        assert says in str(err.value)
