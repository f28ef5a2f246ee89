"""`aivp rerun`: a past run composed again from its `.hydra/`, what changed reported before spending."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import FAL_SCHEMAS, FAL_TEST_KEY
from PIL import Image

from aivp_batch.commands import rerun
from aivp_batch.testing.fal_server import FakeFal
from aivp_batch.versions import versions


def env_for(cwd: Path, key: str | None = None) -> dict[str, str]:
    env = {**os.environ, "AIVP_CACHE_DIR": str(cwd / "cache"), "HOME": str(cwd)}
    env.pop("FAL_KEY", None)
    if key:
        env["FAL_KEY"] = key
    return env


def batch(*overrides: str, cwd: Path, run_dir: Path, key: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "aivp_batch", *overrides, f"hydra.run.dir={run_dir}"],
        cwd=cwd,
        env=env_for(cwd, key),
        capture_output=True,
        text=True,
        timeout=240,
    )


def aivp_rerun(*args: str, cwd: Path, key: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "aivp_batch.commands", "rerun", *args],
        cwd=cwd,
        env=env_for(cwd, key),
        capture_output=True,
        text=True,
        timeout=240,
    )


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_rerun_of_an_unchanged_preview_run_comes_from_the_store(film: Path, tmp_path: Path) -> None:
    old = tmp_path / "run"
    first = batch("project_dir=film", "provider=preview", "model=kling_v26", cwd=tmp_path, run_dir=old)
    assert first.returncode == 0, first.stderr + first.stdout
    summary = json.loads((old / "summary.json").read_text())
    logs = [json.loads(p.read_text()) for p in sorted((film / "video/log").glob("*.json"))]
    assert summary["versions"] == versions() and set(versions()) >= {"aivp-batch", "hydra-core", "python"}
    for log in logs:
        assert log["versions"] == versions() and log["hydra_dir"] == str(old / ".hydra")
        assert isinstance(log["seed_sent"], bool)  # per clip: whether the seed was sent
    before, stored = tree_hashes(old), sorted((film / ".aivp/clips").iterdir())

    again = aivp_rerun(str(old), "--into", str(tmp_path / "again"), cwd=tmp_path)
    assert again.returncode == 0, again.stderr + again.stdout
    assert "nothing changed: every clip comes from the store" in again.stdout
    new = json.loads((tmp_path / "again/summary.json").read_text())
    assert new["exit_status"] == 0 and new["spent_usd"] == 0
    assert [r["reused"] for r in new["results"]] == [True] * 4
    assert [j["identity"] for j in new["plan"]["jobs"]] == [j["identity"] for j in summary["plan"]["jobs"]]
    assert [j["payload"] for j in new["plan"]["jobs"]] == [j["payload"] for j in summary["plan"]["jobs"]]
    assert sorted((film / ".aivp/clips").iterdir()) == stored  # no new render
    assert tree_hashes(old) == before  # the old run dir is untouched
    assert json.loads((tmp_path / "again/rerun.json").read_text())["rerun_of"] == str(old)

    # An edited keyframe: reported by name, and only that shot is to be rendered.
    frame = film / "image/frames/shot-01-ff.png"
    with Image.open(frame) as image:
        image.convert("RGB").resize((image.width // 2 * 2, image.height // 2 * 2)).rotate(180).save(frame)
    changed = aivp_rerun(str(old), "--dry-run", "--into", str(tmp_path / "check"), cwd=tmp_path)
    assert changed.returncode == 0, changed.stderr + changed.stdout
    assert "input image/frames/shot-01-ff.png changed" in changed.stdout
    assert "to render: shot-01 (est $0.00)" in changed.stdout and "nothing changed" not in changed.stdout
    assert sorted((film / ".aivp/clips").iterdir()) == stored  # --dry-run renders nothing
    assert tree_hashes(old) == before


def test_overrides_shots_and_options_in_any_order(tmp_path: Path) -> None:
    past = rerun.PastRun(
        dir=tmp_path / "old",
        overrides=["project_dir=film", "model=kling_v26", "seed=3", "hydra.run.dir=x"],
        config={},
        cwd=tmp_path,
        member=True,
        summary={},
    )
    out = rerun.rerun_overrides(past, ["seed=4"], "3,shot-05,1.10", tmp_path / "new")
    assert out == [
        "project_dir=film",
        "model=kling_v26",
        "seed=4",
        "shots=[3,shot-05,'1.10']",
        f"output_dir={tmp_path / 'new/video'}",  # a sweep member wrote into its own run dir
    ]

    parser = argparse.ArgumentParser()
    rerun.add_arguments(parser)
    args = rerun._options(parser.parse_args(["old", "model=kling_v3", "--shots", "2", "--dry-run"]))
    assert (args.overrides, args.shots, args.dry_run) == (["model=kling_v3"], "2", True)


def test_rerun_reports_a_changed_endpoint_schema(film: Path, tmp_path: Path) -> None:
    served = tmp_path / "served"
    shutil.copytree(FAL_SCHEMAS, served)
    with FakeFal(key=FAL_TEST_KEY, latency_s=0.1, schemas_dir=served) as fal:
        overrides = [
            "project_dir=film",
            *(f"provider.{k}_url={fal.url}" for k in ("queue", "rest", "cdn", "schema", "api")),
            "provider.poll_interval=0.05",
            f"schema_cache_dir={tmp_path / 'schemas'}",
            "shots=[3]",
        ]
        old = tmp_path / "run"
        first = batch(*overrides, cwd=tmp_path, run_dir=old, key=FAL_TEST_KEY)
        assert first.returncode == 0, first.stderr + first.stdout
        log = json.loads((film / "video/log/shot-03.json").read_text())
        assert log["schema_sha256"] and log["versions"]["httpx"] and "seed_sent" in log
        before = tree_hashes(old)

        same = aivp_rerun(str(old), "--dry-run", "--into", str(tmp_path / "same"), cwd=tmp_path)
        assert same.returncode == 0, same.stderr + same.stdout
        assert "nothing changed: every clip comes from the store" in same.stdout

        document = served / (log["endpoint"].replace("/", "__") + ".json")
        changed = json.loads(document.read_text())
        changed["x-changed-upstream"] = True  # fal published a new version of the endpoint's schema
        document.write_text(json.dumps(changed))
        proc = aivp_rerun(str(old), "--dry-run", "--into", str(tmp_path / "check"), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr + proc.stdout
        assert f"schema of {log['endpoint']} changed: {log['schema_sha256'][:12]} → " in proc.stdout
    assert tree_hashes(old) == before


def test_a_folder_that_is_no_run_is_bad_input(tmp_path: Path) -> None:
    proc = aivp_rerun(str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2 and "no .hydra/overrides.yaml" in proc.stderr
