"""The command end to end, as a user runs it: a subprocess, real files, exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAL_SCHEMAS, journal_records

from aivp_batch.media import probe


def run_cli(
    *overrides: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess:
    # The user's key and config layer never leak into a test, unless the test passes them.
    full_env = {k: v for k, v in os.environ.items() if k not in ("FAL_KEY", "AIVP_CONFIG_DIR")}
    full_env.update(AIVP_CACHE_DIR=str(cwd / "cache"), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "aivp_batch", *overrides, f"hydra.run.dir={cwd / 'run'}"],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_preview_run_of_the_example_project(film: Path, tmp_path: Path) -> None:
    proc = run_cli(f"project_dir={film}", "provider=preview", "model=kling_v26", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    clips = sorted((film / "video/clips").glob("*.mp4"))
    assert [c.name for c in clips] == ["shot-01.mp4", "shot-02.mp4", "shot-03.mp4", "shot-04.mp4"]
    logs = {p.stem: json.loads(p.read_text()) for p in (film / "video/log").glob("*.json")}
    for shot_id, log in logs.items():
        info = probe(film / log["file"])
        assert log["status"] == "done" and info.duration_s == pytest.approx(int(log["duration"]), abs=0.1)
        assert info.has_audio and log["schema_sha256"] and log["provider"] == "preview"
        for key in (
            "id",
            "type",
            "file",
            "model",
            "mode",
            "status",
            "request_id",
            "prompt",
            "seed",
            "duration",
            "aspect_ratio",
            "input_image",
            "character_refs",
            "video_url",
            "cost_usd",
            "timestamp",
            "endpoint",
            "tier",
            "payload",
            "requested_seed",
            "seed_returned",
            "attempts",
            "timings",
            "cost_source",
            "run_dir",
        ):
            assert key in log, (shot_id, key)
    # Kling 2.6 allows 5 or 10 s: the 6 s and 7 s shots are raised to 10, the 4 s one to 5.
    assert [logs[s]["duration"] for s in sorted(logs)] == ["5", "10", "5", "10"]
    assert logs["shot-02"]["duration_note"].startswith("raised 6s → 10s")
    assert {logs[s]["mode"] for s in logs} >= {"I2V", "FLF", "T2V"}
    plan = (film / "video/plan.md").read_text()
    assert "| 1 | shot-01 | `video/clips/shot-01.mp4` |" in plan and plan.count("| done |") == 4
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert summary["exit_status"] == 0 and summary["done"] == 4
    assert (tmp_path / "run/.hydra/config.yaml").exists() and (
        tmp_path / "run/.hydra/overrides.yaml"
    ).exists()

    # Run again: every clip is reused from the journal, nothing re-rendered, no record rewritten.
    logs_before = {p.name: p.read_bytes() for p in (film / "video/log").glob("*.json")}
    again = run_cli(f"project_dir={film}", "provider=preview", "model=kling_v26", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "reused" in again.stdout
    assert {p.name: p.read_bytes() for p in (film / "video/log").glob("*.json")} == logs_before


def test_dry_run_against_fal_needs_no_key(film: Path, tmp_path: Path) -> None:
    from aivp_batch.testing.fal_server import FakeFal

    # A Kling element needs a second angle of the character (shot-03 is Elena's reference shot).
    shutil.copy(film / "image/characters/elena-front.png", film / "image/characters/elena-side.png")
    with FakeFal(schemas_dir=FAL_SCHEMAS) as fal:
        proc = run_cli(
            f"project_dir={film}",
            "model=kling_o3",
            "tier=hero",
            "dry_run=true",
            f"provider.schema_url={fal.url}",
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr
        assert fal.stats.calls["submit"] == 0
    assert "fal-ai/kling-video/o3/pro/image-to-video" in proc.stdout and "total" in proc.stdout
    assert not (film / "video/clips").exists()
    plan = (tmp_path / "run/plan.txt").read_text()
    assert plan.count("shot-0") == 4


def test_missing_key_is_one_clear_line_and_nothing_spent(film: Path, tmp_path: Path) -> None:
    from aivp_batch.testing.fal_server import FakeFal

    with FakeFal(schemas_dir=FAL_SCHEMAS) as fal:
        proc = run_cli(
            f"project_dir={film}",
            f"provider.schema_url={fal.url}",
            f"provider.queue_url={fal.url}",
            cwd=tmp_path,
            env={"HOME": str(tmp_path)},
        )
        assert fal.stats.calls["submit"] == 0
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("aivp-batch: error: no FAL_KEY found")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model=kling_v26", "duration_policy=strict"], "duration 6s is not allowed"),
        (["shots=[9]"], "no such shot"),
    ],
)
def test_bad_input_leaves_existing_clips_untouched(film: Path, tmp_path: Path, overrides, message) -> None:
    clip = film / "video/clips/shot-01.mp4"
    clip.parent.mkdir(parents=True)
    clip.write_bytes(b"an earlier take")
    proc = run_cli(f"project_dir={film}", "provider=preview", *overrides, cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr
    assert clip.read_bytes() == b"an earlier take"


def test_unknown_model_is_refused(film: Path, tmp_path: Path) -> None:
    proc = run_cli(f"project_dir={film}", "provider=preview", "model=nope", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "aivp-batch: error: unknown model=nope (available: auto, hailuo02, kling_o3, kling_v25_turbo, "
        "kling_v26, kling_v3, seedance_v1, seedance_v15, seedance_v2, sora2, veo31, wan25)"
    )


def test_broken_shot_file_is_named_and_others_still_render(film: Path, tmp_path: Path) -> None:
    shot = film / "storyboard/storyboard-final/shots/shot-03.md"
    shot.write_text("# Shot 3\n\n## Metadata\n\n| Field | Value |\n|---|---|\n| Duration | 4s |\n")
    proc = run_cli(f"project_dir={film}", "provider=preview", cwd=tmp_path)
    assert proc.returncode == 1
    assert "storyboard/storyboard-final/shots/shot-03.md: no motion prompt" in proc.stderr
    assert sorted(p.name for p in (film / "video/clips").glob("*.mp4")) == [
        "shot-01.mp4",
        "shot-02.mp4",
        "shot-04.mp4",
    ]


def test_prompt_manifest_single_clip(tmp_path: Path) -> None:
    proc = run_cli(
        "manifest=prompt",
        "manifest.prompt=A slow pan across a harbour at dawn",
        "provider=preview",
        "model=veo31",
        f"output_dir={tmp_path / 'out'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert probe(tmp_path / "out/clips/clip-01.mp4").duration_s == pytest.approx(6, abs=0.1)


def test_user_manifest_from_own_config_dir(film: Path, tmp_path: Path) -> None:
    conf = tmp_path / "myconf/manifest"
    conf.mkdir(parents=True)
    (conf / "two_shots.yaml").write_text(
        "kind: list\nshots:\n"
        "  - {id: opening, prompt: 'Slow push in on the kitchen', start_frame: image/frames/shot-01-ff.png,"
        " duration: 5}\n"
        "  - {id: closing, prompt: 'Static wide shot, lights go out', duration: 4}\n"
    )
    (conf / "evil.yaml").write_text(
        "kind: list\nshots:\n  - {id: ../../etc/passwd, prompt: x, duration: 5}\n"
    )
    ok = run_cli(
        "--config-dir",
        str(tmp_path / "myconf"),
        f"project_dir={film}",
        "provider=preview",
        "manifest=two_shots",
        cwd=tmp_path,
    )
    assert ok.returncode == 0, ok.stderr
    assert sorted(p.name for p in (film / "video/clips").glob("*.mp4")) == ["closing.mp4", "opening.mp4"]
    evil = run_cli(
        "--config-dir",
        str(tmp_path / "myconf"),
        f"project_dir={film}",
        "provider=preview",
        "manifest=evil",
        cwd=tmp_path,
    )
    assert evil.returncode == 2 and "../../etc/passwd" in evil.stderr
    assert sorted(p.name for p in (film / "video/clips").glob("*.mp4")) == ["closing.mp4", "opening.mp4"]
    assert not (tmp_path / "etc").exists()


def test_sweep_members_get_their_own_clips_and_share_the_store(film: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "aivp_batch",
            "-m",
            f"project_dir={film}",
            "provider=preview",
            "shots=[3]",
            "model=kling_v26,veo31",
            "seed=1,2",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        cwd=tmp_path,
        env={**os.environ, "AIVP_CACHE_DIR": str(tmp_path / "cache")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    members = sorted((tmp_path / "sweep").glob("*/summary.json"))
    assert [m.parent.name for m in members] == [
        "model=kling_v26,seed=1",
        "model=kling_v26,seed=2",
        "model=veo31,seed=1",
        "model=veo31,seed=2",
    ]
    durations = []
    for member in members:
        summary = json.loads(member.read_text())
        assert summary["exit_status"] == 0 and summary["done"] == 1
        durations.append(probe(member.parent / "video/clips/shot-03.mp4").duration_s)
        assert json.loads((member.parent / "video/log/shot-03.json").read_text())["seed"] in (1, 2)
    # Kling 2.6 raises the 4 s shot to 5 s, Veo keeps 4 s.
    assert sorted(round(d) for d in durations) == [4, 4, 5, 5]
    assert len(journal_records(film / ".aivp")) == 4
    assert not (film / "video").exists()


def test_offline_dry_run_validates_against_the_bundled_snapshot(film: Path, tmp_path: Path) -> None:
    proc = run_cli(f"project_dir={film}", "dry_run=true", "offline=true", "model=veo31", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "schema fal-ai/veo3.1/fast/image-to-video: bundled snapshot (2026-06-11), sha256 " in proc.stdout


def test_offline_without_any_schema_is_refused(film: Path, tmp_path: Path) -> None:
    # Seedance 1.0's documents are in neither the cache nor the bundled snapshot.
    proc = run_cli(f"project_dir={film}", "dry_run=true", "offline=true", "model=seedance_v1", cwd=tmp_path)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("aivp-batch: error: fal-ai/bytedance/seedance/v1") and "OpenAPI schema" in last
    assert "neither the schema cache nor the bundled snapshot" in last


def test_an_unreachable_fal_is_one_line_naming_the_host_and_the_time(film: Path, tmp_path: Path) -> None:
    import re
    import socket

    with socket.socket() as probe_socket:  # a loopback port nothing listens on
        probe_socket.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe_socket.getsockname()[1]}"
    proc = run_cli(
        f"project_dir={film}",
        "offline=true",
        *(f"provider.{name}={url}" for name in ("queue_url", "rest_url", "cdn_url", "api_url", "schema_url")),
        "provider.retry.attempts=3",
        "provider.retry.base_s=0.01",
        cwd=tmp_path,
        env={"FAL_KEY": "test-key-0123456789"},
    )
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"aivp-batch: error: fal token: cannot reach {re.escape(url)} \(connection refused\) "
        r"after 3 attempts over \d+(\.\d+)? s",
        last,
    ), last
    assert "Traceback" not in proc.stderr and "ConnectError" not in proc.stderr
