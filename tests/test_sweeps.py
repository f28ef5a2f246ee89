"""Sweeps (`-m`) end to end: the whole sweep planned and priced first, override-named members,
one budget, the sweep's exit status, seeds on seedless models as takes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import FAL_TEST_KEY
from test_runner_fal import fal_overrides

from aivp_batch.budget import SWEEP_BUDGET, SweepBudget
from aivp_batch.testing.fal_server import FakeFal

MEMBERS = ["model=kling_v26,seed=1", "model=kling_v26,seed=2", "model=veo31,seed=1", "model=veo31,seed=2"]


def sweep(tmp_path: Path, *overrides: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "AIVP_CACHE_DIR": str(tmp_path / "cache"), "HOME": str(tmp_path), **(env or {})}
    if not env or "FAL_KEY" not in env:
        full_env.pop("FAL_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "aivp_batch", "-m", *overrides, f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=tmp_path,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def preview_sweep(film: Path, tmp_path: Path, models: str, *extra: str) -> subprocess.CompletedProcess:
    """A preview sweep of shot-03 over `models` (offline, $0)."""
    return sweep(tmp_path, f"project_dir={film}", "provider=preview", "shots=[3]", f"model={models}", *extra)


def member_dirs(tmp_path: Path) -> list[str]:
    """The member folders (the sweep folder also holds the gallery's `posters/`)."""
    return sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir() and p.name != "posters")


def test_dry_run_sweep_prints_the_whole_table_and_renders_nothing(film: Path, tmp_path: Path) -> None:
    proc = preview_sweep(film, tmp_path, "kling_v26,veo31", "seed=1,2", "dry_run=true")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "sweep: 4 members × 1 shot, planned before anything is spent"
    assert lines[1].split() == ["member", "shot-03", "est", "$"]
    assert [line.split()[0] for line in lines[2:6]] == MEMBERS
    assert lines[6].split()[0] == "total"
    assert "Launching" not in proc.stdout and "clips done" not in proc.stdout
    assert member_dirs(tmp_path) == [] and not (film / ".aivp/jobs").exists()
    data = json.loads((tmp_path / "sweep/sweep.json").read_text())
    assert [m["name"] for m in data["members"]] == MEMBERS and data["ran"] is False
    assert (tmp_path / "sweep/sweep.txt").read_text().splitlines()[:7] == lines[:7]


def test_preview_sweep_plans_first_and_names_members_from_their_overrides(film: Path, tmp_path: Path) -> None:
    proc = preview_sweep(film, tmp_path, "kling_v26,veo31", "seed=1,2")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.index("sweep: 4 members × 1 shot") < out.index("Launching") < out.index("clips done")
    assert member_dirs(tmp_path) == MEMBERS
    for name in MEMBERS:
        member = tmp_path / "sweep" / name
        assert (member / ".hydra/config.yaml").is_file()
        assert json.loads((member / "summary.json").read_text())["exit_status"] == 0
        assert (member / "video/clips/shot-03.mp4").is_file()
    summary_lines = out[out.index("sweep members:") :].splitlines()[1:5]
    assert [line.split()[:3] for line in summary_lines] == [[m, "ok", "1/1"] for m in MEMBERS]
    assert "sweep: 4/4 members ok, $0.00 spent" in out


def test_a_member_with_bad_input_stops_the_sweep_before_anything_is_spent(film: Path, tmp_path: Path) -> None:
    # Kling 2.6 cannot render the 4 s shot-03 as 4 s: strict makes that member's input bad; the
    # good member planned before it must not run either.
    proc = preview_sweep(film, tmp_path, "veo31,kling_v26", "duration_policy=strict")
    assert proc.returncode == 2, proc.stderr
    assert "model=kling_v26" in proc.stdout and "ERR" in proc.stdout
    assert "1 of 2 sweep members have bad input: no member was run, nothing spent" in proc.stderr
    assert member_dirs(tmp_path) == [] and not list(film.glob("**/*.mp4"))
    assert not (film / ".aivp/jobs").exists()


def test_unknown_choice_in_a_sweep_is_bad_input(film: Path, tmp_path: Path) -> None:
    proc = sweep(tmp_path, f"project_dir={film}", "provider=preview", "model=kling_v26,nope")
    assert proc.returncode == 2
    assert "unknown model=nope" in proc.stderr and not (tmp_path / "sweep").exists()


def test_one_budget_for_the_sweep_and_seeds_become_takes(film: Path, tmp_path: Path) -> None:
    env = {"FAL_KEY": FAL_TEST_KEY}
    with FakeFal(key=FAL_TEST_KEY, latency_s=0.2) as fal:
        common = [*fal_overrides(fal, film, tmp_path, "shots=[3]", "model=kling_v26", "seed=1,2")]
        dry = sweep(tmp_path, *common, "dry_run=true", env=env)
        assert dry.returncode == 0, dry.stderr
        assert "note: kling_v26 takes no seed: seeds become takes" in dry.stdout
        plan = json.loads((tmp_path / "sweep/sweep.json").read_text())["members"]
        estimates = [m["estimate_usd"] for m in plan]
        assert estimates[0] == estimates[1] > 0  # two takes, each paid: not one clip reused
        budget = round(estimates[0] * 1.5, 2)
        (tmp_path / "sweep").rename(tmp_path / "dry")

        # Only `seed` is swept here, so the members are `seed=1` and `seed=2`.
        proc = sweep(tmp_path, *common, f"budget_usd={budget}", env=env)
        assert proc.returncode == 1, proc.stderr
        assert fal.stats.calls["submit"] == 1
        members = {m["name"]: m for m in json.loads((tmp_path / "sweep/sweep.json").read_text())["members"]}
        first, second = members["seed=1"], members["seed=2"]
        assert first["exit_status"] == 0 and first["done"] == 1 and first["spent_usd"] > 0
        assert second["exit_status"] == 1 and second["refused_by_budget"] == 1 and second["spent_usd"] == 0
        assert "seed=2  FAILED" in proc.stdout
        assert "1 refused by the sweep's budget_usd" in proc.stdout
        assert sum(m["spent_usd"] for m in members.values()) <= budget
        (tmp_path / "sweep").rename(tmp_path / "refused")

        again = sweep(tmp_path, *common, "budget_usd=100", env=env)
        assert again.returncode == 0, again.stderr
        assert fal.stats.calls["submit"] == 2  # the first take is reused from the store
        assert "stored" in again.stdout
    logs = [json.loads((tmp_path / f"sweep/seed={n}/video/log/shot-03.json").read_text()) for n in (1, 2)]
    assert logs[0]["identity"] != logs[1]["identity"]
    assert [log["seed"] for log in logs] == [1, 2]


def test_member_names_are_the_swept_overrides_made_file_system_safe() -> None:
    from aivp_batch.sweep import name_member, unique_names

    overrides = ["project_dir=/a/b", "model=kling_v3", "seed=2", "payload_extra.x='a b/c'"]
    assert name_member(overrides, ["model", "seed"]) == "model=kling_v3,seed=2"
    assert name_member(overrides, ["payload_extra.x"]) == "payload_extra.x=_a_b_c"
    assert name_member(overrides, []) == "member"
    assert unique_names(["a", "a", "b"]) == ["a", "a-2", "b"]


def test_an_explicit_seed_on_a_seedless_endpoint_is_a_take(compose_cfg, film: Path) -> None:
    from aivp_batch.app import build_plan, resolve_paths

    def identity(*overrides: str) -> str:
        cfg = compose_cfg(f"project_dir={film}", "model=kling_v26", "shots=[3]", *overrides)
        plan, _, _ = build_plan(cfg, resolve_paths(cfg, film / "run"))
        (job,) = plan.jobs
        assert job.seed_field is None and "seed" not in job.payload
        return job.identity

    assert identity("seed=1") != identity("seed=2")
    assert identity("seed=1") == identity("seed=1")
    assert identity() == identity()  # a random seed is not sent and not part of the identity


# ---------------------------------------------------------------- launchers


def test_parallel_members_under_joblib_hold_one_budget(film: Path, tmp_path: Path) -> None:
    """Three takes in three processes at once, a budget for one and a half: one is paid for, the
    others are refused by the sweep's budget, and the sweep says so and exits 1."""
    env = {"FAL_KEY": FAL_TEST_KEY}
    with FakeFal(key=FAL_TEST_KEY, latency_s=1.0) as fal:
        common = [*fal_overrides(fal, film, tmp_path, "shots=[3]", "model=kling_v26", "seed=1,2,3")]
        dry = sweep(tmp_path, *common, "dry_run=true", env=env)
        estimate = json.loads((tmp_path / "sweep/sweep.json").read_text())["members"][0]["estimate_usd"]
        assert dry.returncode == 0 and estimate > 0, dry.stderr
        (tmp_path / "sweep").rename(tmp_path / "dry")
        budget = round(estimate * 1.5, 2)
        launcher = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=3"]
        proc = sweep(tmp_path, *common, *launcher, f"budget_usd={budget}", env=env)
    assert proc.returncode == 1, proc.stderr + proc.stdout
    assert fal.stats.calls["submit"] == 1 and fal.stats.duplicate_submits == 0
    members = json.loads((tmp_path / "sweep/sweep.json").read_text())["members"]
    assert sorted(m["exit_status"] for m in members) == [0, 1, 1]
    assert sum(m["refused_by_budget"] for m in members) == 2
    assert sum(m["spent_usd"] for m in members) <= budget
    state = SweepBudget(tmp_path / "sweep" / SWEEP_BUDGET, "test").read()
    assert state.reserved == {} and 0 < state.spent_usd <= budget
    assert proc.stdout.count("1 refused by the sweep's budget_usd") == 2
    # Members in parallel print plain lines, each naming its member (no interleaved live tables).
    assert "seed=2: [" in proc.stdout or "seed=2: [" in proc.stderr


def test_parallel_members_wanting_one_job_render_it_once(film: Path, tmp_path: Path) -> None:
    """Two members whose payloads are the same (they differ in a knob the payload does not see)
    run at once: the job's lock in the store lets one render it, and the other reuses it."""
    env = {"FAL_KEY": FAL_TEST_KEY}
    with FakeFal(key=FAL_TEST_KEY, latency_s=1.0) as fal:
        overrides = fal_overrides(fal, film, tmp_path, "shots=[3]", "model=kling_v26", "seed=7")
        proc = sweep(
            tmp_path, *overrides, "price_drift=0.05,0.5", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
            env=env,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert fal.stats.calls["submit"] == 1 and fal.stats.duplicate_submits == 0
    logs = [
        json.loads((tmp_path / f"sweep/price_drift={v}/video/log/shot-03.json").read_text())
        for v in ("0.05", "0.5")
    ]
    assert logs[0]["identity"] == logs[1]["identity"] and all(log["status"] == "done" for log in logs)
    assert logs[0]["request_id"] == logs[1]["request_id"]


def test_parallel_members_hold_one_in_flight_limit(film: Path, tmp_path: Path) -> None:
    """Three members at once under joblib, `provider.max_in_flight=1`: the sweep never has more
    than one request waiting at fal (its status streams), as it holds one budget."""
    env = {"FAL_KEY": FAL_TEST_KEY}
    with FakeFal(key=FAL_TEST_KEY, latency_s=0.4) as fal:
        overrides = fal_overrides(
            fal, film, tmp_path, "shots=[1,3]", "model=seedance_v15", "provider.max_in_flight=1"
        )
        proc = sweep(
            tmp_path, *overrides, "seed=1,2,3", "hydra/launcher=joblib", "hydra.launcher.n_jobs=3", env=env
        )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert fal.stats.calls["submit"] == 6 and fal.stats.duplicate_submits == 0
    assert fal.stats.max_open_streams == 1
    assert sorted(p.name for p in (tmp_path / "sweep/.slots").iterdir()) == ["000.lock"]


def test_a_sweep_through_submitits_local_executor(film: Path, tmp_path: Path) -> None:
    proc = preview_sweep(film, tmp_path, "kling_v26", "seed=1,2", "hydra/launcher=submitit_local")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert member_dirs(tmp_path) == [".slots", ".submitit", "seed=1", "seed=2"]
    for name in ("seed=1", "seed=2"):
        assert json.loads((tmp_path / "sweep" / name / "summary.json").read_text())["exit_status"] == 0
        assert (tmp_path / "sweep" / name / "video/clips/shot-03.mp4").is_file()
    assert "sweep: 2/2 members ok" in proc.stdout and (tmp_path / "sweep/index.html").is_file()


def test_every_packaged_launcher_config_composes() -> None:
    """joblib and submitit are installed with the dev extra; Ray is an optional extra this suite
    does not install (it brings Ray itself): its config must still compose."""
    from hydra import compose, initialize_config_module

    targets = {
        "joblib": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
        "submitit_local": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
        "submitit_slurm": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
        "ray": "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher",
    }
    for name, target in targets.items():
        with initialize_config_module(version_base="1.3", config_module="aivp_batch.conf"):
            cfg = compose(
                config_name="config", overrides=[f"hydra/launcher={name}"], return_hydra_config=True
            )
        assert cfg.hydra.launcher._target_ == target, name
    assert cfg.hydra.launcher.ray.init.address is None and cfg.hydra.launcher.ray.remote.max_calls == 1


def test_a_launcher_whose_plugin_is_missing_is_one_line(tmp_path: Path) -> None:
    from aivp_batch.cli import missing_launcher

    assert missing_launcher(["hydra/launcher=joblib"]) is None  # installed with the dev extra
    line = missing_launcher(["-m", "hydra/launcher=ray"])
    assert line == "hydra/launcher=ray needs the hydra-ray-launcher plugin: pip install 'aivp-batch[ray]'"
