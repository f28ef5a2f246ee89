"""The user's own config layer: `$AIVP_CONFIG_DIR` > `./conf` > the packaged `aivp_batch/conf`,
through Hydra's real search path (the `hydra_plugins/aivp_batch_searchpath` plugin)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import EXAMPLE, REPO
from hydra import compose, initialize_config_module
from hydra._internal.config_search_path_impl import ConfigSearchPathImpl
from omegaconf import OmegaConf
from test_cli import run_cli

from aivp_batch.cli import unknown_choice, user_conf_problems
from aivp_batch.models import build_model_spec
from aivp_batch.user_conf import PACKAGED_CONF, user_config_dirs
from hydra_plugins.aivp_batch_searchpath.aivp_batch_searchpath import AivpBatchUserConfSearchPathPlugin

PACKAGED_MODEL = PACKAGED_CONF / "model/seedance_v15.yaml"


def packaged_model() -> dict:
    return yaml.safe_load(PACKAGED_MODEL.read_text())


def write_yaml(path: Path, data: dict, header: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.safe_dump(data, sort_keys=False))
    return path


def user_seedance(root: Path, label: str, audio_rate: float = 4.8) -> Path:
    """A user copy of the packaged seedance_v15 with its own label and audio price."""
    model = packaged_model()
    model["label"] = label
    model["pricing"]["rates"][0]["usd_per_million"] = audio_rate
    return write_yaml(root / "model/seedance_v15.yaml", model)


def my_model(root: Path) -> Path:
    model = packaged_model()
    model.update(name="my_model", label="My model")
    model["tiers"]["hero"] = {"resolution": "720p", "audio": True}
    return write_yaml(root / "model/my_model.yaml", model)


def compose_here(*overrides: str, hydra_config: bool = False):
    with initialize_config_module(version_base="1.3", config_module="aivp_batch.conf"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra_config)


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory of its own (not the repo's, with its `conf/`), no AIVP_CONFIG_DIR."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("AIVP_CONFIG_DIR", raising=False)
    return work


def dry_run(*overrides: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    film = cwd.parent / "film"
    if not film.exists():
        shutil.copytree(EXAMPLE, film, ignore=shutil.ignore_patterns("video", ".aivp"))
    return run_cli(
        f"project_dir={film}",
        "dry_run=true",
        "offline=true",
        f"schema_cache_dir={cwd.parent / 'schemas'}",
        *overrides,
        cwd=cwd,
        env=env,
    )


def total_usd(stdout: str) -> float:
    line = next(line for line in stdout.splitlines() if line.startswith("total"))
    return float(line.split()[-1])


def test_a_user_file_overrides_the_packaged_model(here: Path) -> None:
    user_seedance(here / "conf", label="Seedance, my way")
    cfg = OmegaConf.to_container(compose_here(), resolve=True)
    assert cfg["model"]["label"] == "Seedance, my way"
    assert cfg["model"]["pricing"]["rates"][0]["usd_per_million"] == 4.8
    # Other packaged models are untouched.
    assert compose_here("model=kling_v26").model.label == "Kling 2.6 Pro"


def test_a_user_file_adds_a_model(here: Path) -> None:
    my_model(here / "conf")
    cfg = OmegaConf.to_container(compose_here("model=my_model", "tier=hero"), resolve=True)
    assert cfg["model"]["name"] == "my_model"
    spec = build_model_spec(cfg["model"], cfg["provider"], "hero")
    assert spec.settings["resolution"] == "720p"


def test_a_user_model_can_extend_a_packaged_one(here: Path) -> None:
    write_yaml(
        here / "conf/model/seedance_cheap.yaml",
        {
            "defaults": ["seedance_v15", "_self_"],
            "name": "seedance_cheap",
            "tiers": {"hero": {"audio": False}},
        },
    )
    cfg = OmegaConf.to_container(compose_here("model=seedance_cheap"), resolve=True)
    assert cfg["model"]["name"] == "seedance_cheap" and cfg["model"]["tiers"]["hero"] == {
        "resolution": "1080p",
        "audio": False,
    }
    assert cfg["model"]["fal"] == packaged_model()["fal"]


def test_user_tier_experiment_and_launcher(here: Path) -> None:
    conf = here / "conf"
    write_yaml(conf / "tier/iteration.yaml", {"name": "iteration", "budget_usd": 1.0})
    write_yaml(
        conf / "experiment/quick.yaml",
        {"defaults": [{"override /model": "kling_v25_turbo"}, {"override /tier": "iteration"}], "seed": 3},
        header="# @package _global_\n",
    )
    write_yaml(conf / "hydra/launcher/my_basic.yaml", {"defaults": ["basic", "_self_"]})
    cfg = compose_here("+experiment=quick", "hydra/launcher=my_basic", hydra_config=True)
    assert (cfg.model.name, cfg.tier.name, cfg.seed, cfg.budget_usd) == (
        "kling_v25_turbo",
        "iteration",
        3,
        1.0,
    )
    assert cfg.hydra.launcher._target_.endswith("BasicLauncher")
    assert cfg.hydra.runtime.choices["hydra/launcher"] == "my_basic"


def test_aivp_config_dir_wins_over_cwd_conf(here: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user_seedance(here / "conf", label="from ./conf")
    env_dir = here.parent / "elsewhere"
    user_seedance(env_dir, label="from AIVP_CONFIG_DIR")
    write_yaml(here / "conf/tier/iteration.yaml", {"name": "iteration", "budget_usd": 0.5})
    monkeypatch.setenv("AIVP_CONFIG_DIR", str(env_dir))
    assert user_config_dirs() == [env_dir.resolve(), (here / "conf").resolve()]
    cfg = compose_here("tier=iteration")
    assert cfg.model.label == "from AIVP_CONFIG_DIR"
    assert cfg.tier.budget_usd == 0.5  # ./conf still counts for what AIVP_CONFIG_DIR lacks


def test_searchpath_lists_user_dirs_before_the_packaged_one(here: Path) -> None:
    (here / "conf").mkdir()
    env_dir = here.parent / "elsewhere"
    env_dir.mkdir()
    proc = run_cli("--info", "searchpath", cwd=here, env={"AIVP_CONFIG_DIR": str(env_dir)})
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    where = {path: i for i, path in enumerate(row.split("|")[2].strip() for row in rows)}
    assert (
        where["pkg://hydra.conf"]
        < where[f"file://{env_dir.resolve()}"]
        < where[f"file://{(here / 'conf').resolve()}"]
        < where["pkg://aivp_batch.conf"]
    )
    assert "aivp-user (AIVP_CONFIG_DIR)" in proc.stdout and "aivp-user (./conf)" in proc.stdout


def test_no_user_dir_changes_nothing(here: Path) -> None:
    assert user_config_dirs() == []
    proc = run_cli("--info", "searchpath", cwd=here)
    assert proc.returncode == 0, proc.stderr
    assert "aivp-user" not in proc.stdout and "pkg://aivp_batch.conf" in proc.stdout
    assert compose_here().model.label == packaged_model()["label"]


def test_a_missing_aivp_config_dir_is_one_clear_error(here: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = here / "nope"
    monkeypatch.setenv("AIVP_CONFIG_DIR", str(missing))
    assert user_config_dirs() == []  # the plugin adds nothing: composing still works
    assert compose_here().model.name == "seedance_v15"
    proc = run_cli("model=kling_v26", cwd=here, env={"AIVP_CONFIG_DIR": str(missing)})
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"aivp-batch: error: AIVP_CONFIG_DIR={missing} is not a directory"


def test_unknown_choice_knows_user_options(here: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    my_model(here / "conf")
    env_dir = here.parent / "elsewhere"
    write_yaml(env_dir / "model/env_model.yaml", {"name": "env_model"})
    write_yaml(env_dir / "experiment/film/quick.yaml", {"seed": 1}, header="# @package _global_\n")
    monkeypatch.setenv("AIVP_CONFIG_DIR", str(env_dir))
    assert unknown_choice(["model=my_model"]) is None
    assert unknown_choice(["model=env_model,seedance_v15"]) is None
    assert unknown_choice(["+experiment=film/quick"]) is None
    problem = unknown_choice(["model=nope"])
    assert problem is not None and problem.startswith("unknown model=nope (available: ")
    assert {"my_model", "env_model", "seedance_v15", "kling_v26"} <= set(
        problem[:-1].split(": ", 1)[1].split(", ")
    )
    assert unknown_choice(["+experiment=nope"]) == "unknown experiment=nope (available: film/quick)"


def test_unknown_choice_in_the_cli_lists_user_models(here: Path) -> None:
    my_model(here / "conf")
    proc = run_cli("model=nope", cwd=here)
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert line.startswith("aivp-batch: error: unknown model=nope (available: ") and "my_model" in line


def test_dry_runs_with_user_models(here: Path) -> None:
    my_model(here / "conf")
    added = dry_run("model=my_model", cwd=here)
    assert added.returncode == 0, added.stderr + added.stdout
    assert "fal-ai/bytedance/seedance/v1.5/pro/image-to-video" in added.stdout
    preview = dry_run("model=my_model", "provider=preview", cwd=here)
    assert preview.returncode == 0, preview.stderr + preview.stdout

    bare = here.parent / "bare"
    bare.mkdir()
    packaged = dry_run(cwd=bare)
    assert packaged.returncode == 0, packaged.stderr + packaged.stdout
    user_seedance(here / "conf", label="twice the price", audio_rate=4.8)  # packaged: 2.4
    overridden = dry_run(cwd=here)
    assert overridden.returncode == 0, overridden.stderr + overridden.stdout
    assert total_usd(overridden.stdout) == pytest.approx(2 * total_usd(packaged.stdout), abs=0.02)


def test_a_user_config_yaml_is_pointed_out(here: Path) -> None:
    assert user_conf_problems() == (None, [])
    (here / "conf").mkdir()
    shutil.copy(PACKAGED_CONF / "config.yaml", here / "conf/config.yaml")
    error, notes = user_conf_problems()
    assert error is None and len(notes) == 1 and "replaces the packaged primary config" in notes[0]


def test_the_plugin_leaves_other_apps_alone(here: Path) -> None:
    user_seedance(here / "conf", label="mine")
    search_path = ConfigSearchPathImpl()
    search_path.append("hydra", "pkg://hydra.conf")
    search_path.append("main", "pkg://someone_else.conf")
    AivpBatchUserConfSearchPathPlugin().manipulate_search_path(search_path)
    assert [e.path for e in search_path.get_path()] == ["pkg://hydra.conf", "pkg://someone_else.conf"]

    ours = ConfigSearchPathImpl()
    ours.append("hydra", "pkg://hydra.conf")
    ours.append("main", f"file://{PACKAGED_CONF}")  # how a script run by path names it
    AivpBatchUserConfSearchPathPlugin().manipulate_search_path(ours)
    assert [e.provider for e in ours.get_path()] == ["hydra", "aivp-user (./conf)", "main"]


def test_the_repo_conf_holds_only_examples(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("AIVP_CONFIG_DIR", raising=False)
    active = sorted(p.relative_to(REPO / "conf").as_posix() for p in (REPO / "conf").rglob("*.yaml"))
    assert active == ["experiment/example_iteration.yaml"]  # opt-in only: +experiment=example_iteration
    assert not (REPO / "conf/config.yaml").exists()
    cfg = compose_here()
    assert (cfg.model.name, cfg.tier.name, cfg.seed) == ("seedance_v15", "standard", None)
    example = compose_here("+experiment=example_iteration")
    assert (example.model.name, example.tier.name, example.seed) == ("kling_v25_turbo", "iteration", 1)


def test_the_repo_examples_compose_once_copied(here: Path) -> None:
    for example in ("model/my_model.yaml.example", "tier/iteration.yaml.example"):
        target = here / "conf" / example.removesuffix(".example")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "conf" / example, target)
    cfg = OmegaConf.to_container(compose_here("model=my_model", "tier=iteration"), resolve=True)
    assert cfg["model"]["name"] == "my_model" and cfg["tier"]["budget_usd"] == 1.0
    assert cfg["model"]["tiers"]["hero"]["resolution"] == "720p"
    assert build_model_spec(cfg["model"], cfg["provider"], "hero").settings["resolution"] == "720p"
