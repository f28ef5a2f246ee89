"""The real runner on the fake Replicate server over real sockets: create, poll, download and the
records; a 422 on create is one clear failure; a lost create answer is reconciled from the
predictions list with no second create; a bad token stops the run before anything is created;
and the command line itself (`python -m aivp_batch provider=replicate …`).

The run's schemas come from Replicate (`schema_store.schema_store_for`, which `app.schema_store`
delegates to)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import journal_records
from hydra import compose, initialize_config_module

from aivp_batch import app
from aivp_batch.errors import AivpError, AuthError
from aivp_batch.testing.replicate_server import FakeReplicate, ReplicateFault

TOKEN = "r8_runner-test-SECRET-5150"
FAST = "google/veo-3.1-fast"


@pytest.fixture
def rep(monkeypatch: pytest.MonkeyPatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)  # loopback must not go through a proxy
    with FakeReplicate(token=TOKEN, latency_s=0.3) as server:
        yield server


def replicate_overrides(rep: FakeReplicate, film: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        f"project_dir={film}",
        "provider=replicate",
        f"provider.base_url={rep.url}",
        "model=veo31",
        "provider.poll_interval=0.05",
        "provider.poll_max_s=0.1",
        "provider.retry.base_s=0.01",
        "provider.retry.max_s=0.2",
        "provider.max_in_flight=4",
        "provider.reconcile.skew_s=5",
        f"schema_cache_dir={tmp_path / 'schemas'}",
        *extra,
    ]


def run_in_process(overrides: list[str], run_dir: Path, monkeypatch, token: str | None = TOKEN):
    if token is None:
        monkeypatch.delenv("REPLICATE_API_TOKEN", raising=False)
    else:
        monkeypatch.setenv("REPLICATE_API_TOKEN", token)
    monkeypatch.setenv("HOME", str(run_dir.parent))  # no ~/.env of the user's
    with initialize_config_module(version_base="1.3", config_module="aivp_batch.conf"):
        cfg = compose(config_name="config", overrides=overrides)
    return app.run(cfg, run_dir)


def logs(film: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((film / "video/log").glob("*.json"))}


def journal(film: Path) -> list[dict]:
    return journal_records(film / ".aivp")


def all_text(*roots: Path) -> str:
    chunks = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and path.suffix in (".json", ".jsonl", ".md", ".yaml", ".txt", ".log"):
                chunks.append(path.read_text(errors="replace"))
    return "\n".join(chunks)


def test_end_to_end_on_replicate(rep, film, tmp_path, monkeypatch) -> None:
    code, summary = run_in_process(replicate_overrides(rep, film, tmp_path), tmp_path / "run", monkeypatch)
    assert code == 0, summary
    got = logs(film)
    assert {k: (v["mode"], v["endpoint"]) for k, v in got.items()} == {
        "shot-01": ("I2V", FAST),
        "shot-02": ("FLF", FAST),
        "shot-03": ("REF", "google/veo-3.1"),  # reference images: the full model only
        "shot-04": ("I2V", FAST),
    }
    assert all(log["status"] == "done" and log["request_id"] in rep.predictions for log in got.values())
    # Replicate's own field names, files through the files API (not local paths, not data URLs)
    flf = got["shot-02"]["payload"]
    assert flf["image"].startswith(f"{rep.url}/v1/files/") and flf["last_frame"].startswith(rep.url)
    assert isinstance(flf["duration"], int) and "image_url" not in flf
    assert len(got["shot-03"]["payload"]["reference_images"]) <= 3
    assert rep.stats.creates == 4 and rep.stats.duplicate_creates == 0
    assert all(n == 1 for n in rep.stats.files_by_hash.values())  # each keyframe uploaded once
    latest = rep.models[FAST]["latest_version"]["id"]
    assert got["shot-01"]["schema_source"] == f"live ({rep.url}, version {latest[:12]})"
    # the clips are the outputs, byte for byte, and priced at Replicate's rates (no billed units)
    for log in got.values():
        clip = film / "video/clips" / f"{log['id']}.mp4"
        assert clip.is_file() and clip.stat().st_size > 1000
        assert log["cost_source"] == "estimate" and log["cost_usd"] == log["estimate_usd"]
    assert [got[s]["cost_usd"] for s in sorted(got)] == pytest.approx([0.9, 0.9, 3.2, 1.2])
    assert summary["spent_usd"] == pytest.approx(6.2)
    assert TOKEN not in all_text(film, tmp_path / "run")

    # The same command again: everything reused, nothing created.
    creates = rep.stats.creates
    code, summary = run_in_process(replicate_overrides(rep, film, tmp_path), tmp_path / "run2", monkeypatch)
    assert code == 0 and rep.stats.creates == creates
    assert all(result["reused"] for result in summary["results"])


def test_a_422_on_create_is_one_clear_failure(rep, film, tmp_path, monkeypatch) -> None:
    # The schema cache holds Veo 3.1 Fast as it was; then a new version takes 8 s no longer, so
    # local validation passes and Replicate itself refuses shot-04 (8 s).
    code, _ = run_in_process(
        replicate_overrides(rep, film, tmp_path, "dry_run=true"), tmp_path / "dry", monkeypatch
    )
    assert code == 0
    doc = copy.deepcopy(rep.models[FAST]["latest_version"]["openapi_schema"])
    doc["components"]["schemas"]["duration"]["enum"] = [4, 6]
    rep.add_version(FAST, doc, latest=True)
    code, _ = run_in_process(replicate_overrides(rep, film, tmp_path), tmp_path / "run", monkeypatch)
    assert code == 1
    got = logs(film)
    failed = got["shot-04"]
    assert failed["status"] == "failed" and "\n" not in failed["error"]
    assert "input rejected (HTTP 422)" in failed["error"] and "input.duration" in failed["error"]
    assert failed["cost_usd"] in (0, 0.0, None)  # refused at create: nothing to pay
    assert sorted(log["status"] for log in got.values()) == ["done", "done", "done", "failed"]
    assert rep.stats.calls["create"] == 4 and rep.stats.creates == 3  # the refused create, once


def test_a_lost_create_answer_is_reconciled_without_a_second_create(rep, film, tmp_path, monkeypatch) -> None:
    # Replicate creates (and will bill) shot-03's prediction, then the connection drops.
    rep.faults.add(ReplicateFault("reset_after", on="create", times=1, after=2))
    overrides = replicate_overrides(rep, film, tmp_path, "provider.max_in_flight=1")
    code, summary = run_in_process(overrides, tmp_path / "run", monkeypatch)
    assert code == 0, summary
    got = logs(film)
    assert all(log["status"] == "done" for log in got.values())
    assert rep.stats.calls["create"] == 4 and rep.stats.creates == 4 and rep.stats.duplicate_creates == 0
    assert rep.stats.calls["list"] >= 1 and rep.stats.faults_fired
    [adopted] = [r for r in journal(film) if r.get("reconciled")]
    assert adopted["request_id"] in {log["request_id"] for log in got.values()}


def test_a_bad_token_stops_before_anything_is_created(rep, film, tmp_path, monkeypatch) -> None:
    wrong = "r8_wrong-SECRET-0"
    with pytest.raises(AivpError) as err:
        run_in_process(replicate_overrides(rep, film, tmp_path), tmp_path / "run", monkeypatch, token=wrong)
    message = str(err.value)
    assert "REPLICATE_API_TOKEN" in message and wrong not in message
    assert rep.stats.calls["create"] == 0 and rep.stats.calls["upload"] == 0
    with pytest.raises(AuthError, match="no REPLICATE_API_TOKEN found"):
        run_in_process(replicate_overrides(rep, film, tmp_path), tmp_path / "run2", monkeypatch, token=None)


def test_the_command_line_renders_on_replicate(rep, film, tmp_path) -> None:
    overrides = replicate_overrides(rep, film, tmp_path, "model=kling_v25_turbo", "shots=[1,3]")
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("FAL_KEY", "AIVP_CONFIG_DIR")},
        "REPLICATE_API_TOKEN": TOKEN,
        "HOME": str(tmp_path),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "aivp_batch", *overrides, f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    got = logs(film)
    assert sorted(got) == ["shot-01", "shot-03"]
    assert {log["endpoint"] for log in got.values()} == {"kwaivgi/kling-v2.5-turbo-pro"}
    assert got["shot-01"]["payload"]["start_image"].startswith(rep.url)  # Kling 2.5's own field name
    assert rep.stats.creates == 2 and TOKEN not in proc.stdout + proc.stderr


def test_a_sweep_across_fal_and_replicate_on_the_two_fakes(rep, film, tmp_path) -> None:
    """One model family on two hosts: `-m provider=…` over fal's fake and Replicate's fake, each a
    provider option of the user's own (extending the packaged one) that points at its fake."""
    from conftest import FAL_TEST_KEY

    from aivp_batch.testing.fal_server import FakeFal

    conf = tmp_path / "conf" / "provider"
    conf.mkdir(parents=True)
    with FakeFal(key=FAL_TEST_KEY, latency_s=0.2) as fal:
        fal_urls = "\n".join(
            f"{k}: {fal.url}" for k in ("queue_url", "rest_url", "cdn_url", "schema_url", "api_url")
        )
        (conf / "fal_fake.yaml").write_text(
            f"defaults:\n  - fal\n  - _self_\n{fal_urls}\npoll_interval: 0.05\n"
        )
        (conf / "replicate_fake.yaml").write_text(
            f"defaults:\n  - replicate\n  - _self_\nbase_url: {rep.url}\n"
            "poll_interval: 0.05\npoll_max_s: 0.1\n"
        )
        env = {
            **{k: v for k, v in os.environ.items() if k not in ("FAL_KEY", "REPLICATE_API_TOKEN")},
            "AIVP_CONFIG_DIR": str(tmp_path / "conf"),
            "FAL_KEY": FAL_TEST_KEY,
            "REPLICATE_API_TOKEN": TOKEN,
            "HOME": str(tmp_path),
        }
        proc = subprocess.run(
            [sys.executable, "-m", "aivp_batch", "-m", f"project_dir={film}",
             "provider=fal_fake,replicate_fake", "model=veo31", "tier=iteration", "shots=[1,3]",
             f"schema_cache_dir={tmp_path / 'schemas'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr + proc.stdout
        assert fal.stats.calls["submit"] == 2 and rep.stats.creates == 2
    assert "sweep: 2/2 members ok" in proc.stdout
    for member, host in (("provider=fal_fake", "fal"), ("provider=replicate_fake", "replicate")):
        got = {
            p.stem: json.loads(p.read_text())
            for p in (tmp_path / "sweep" / member / "video/log").glob("*.json")
        }
        assert sorted(got) == ["shot-01", "shot-03"] and {log["provider"] for log in got.values()} == {host}
        assert all(log["status"] == "done" for log in got.values())
    rows = json.loads((tmp_path / "sweep/index.json").read_text())["rows"]
    assert len(rows) == 4 and all(r["status"] == "done" for r in rows)  # two hosts' takes side by side


# ---------------------------------------------------------------- the other families on Replicate


@pytest.mark.parametrize(
    "model, endpoints, start, end, usd",
    [
        # Hailuo-02: 6 or 10 s at 768p ($0.045/s); the end frame as last_frame_image.
        (
            "hailuo02",
            ["minimax/hailuo-02"] * 4,
            "first_frame_image",
            "last_frame_image",
            [0.27, 0.27, 0.27, 0.45],
        ),
        # Wan 2.5: image-to-video at 720p, text-to-video at its default 1280*720 ($0.10/s); no end frame.
        (
            "wan25",
            [
                "wan-video/wan-2.5-i2v",
                "wan-video/wan-2.5-i2v",
                "wan-video/wan-2.5-t2v",
                "wan-video/wan-2.5-i2v",
            ],
            "image",
            None,
            [0.5, 1.0, 0.5, 1.0],
        ),
    ],
)
def test_a_family_with_its_own_field_names_end_to_end(
    rep, film, tmp_path, monkeypatch, model, endpoints, start, end, usd
) -> None:
    overrides = replicate_overrides(rep, film, tmp_path, f"model={model}")
    code, summary = run_in_process(overrides, tmp_path / "run", monkeypatch)
    assert code == 0, summary
    got = logs(film)
    assert [got[s]["endpoint"] for s in sorted(got)] == endpoints
    assert all(log["status"] == "done" and log["request_id"] in rep.predictions for log in got.values())
    two = got["shot-02"]["payload"]  # a keyframe and an end frame
    assert two[start].startswith(f"{rep.url}/v1/files/")
    if end:
        assert got["shot-02"]["mode"] == "FLF" and two[end].startswith(f"{rep.url}/v1/files/")
    else:  # a model without an end frame starts from the keyframe alone
        assert got["shot-02"]["mode"] == "I2V" and set(two) - {"prompt", "duration", start} <= {
            "seed",
            "negative_prompt",
            "resolution",
        }
    assert all(isinstance(log["payload"]["duration"], int) for log in got.values())
    assert rep.stats.creates == 4 and rep.stats.duplicate_creates == 0
    for log in got.values():
        assert (film / "video/clips" / f"{log['id']}.mp4").is_file()
    assert [got[s]["cost_usd"] for s in sorted(got)] == pytest.approx(usd)
    assert summary["spent_usd"] == pytest.approx(sum(usd))


def test_kling_omni_groups_send_multi_prompt_as_a_json_string(rep, film, tmp_path, monkeypatch) -> None:
    """strategy=multishot on Replicate: one create per group, its shots as one JSON string of
    {prompt, duration} items (Replicate's Kling 3.0 Omni), the clip cut into the shots' clips."""
    from test_multishot import GROUPS, assert_delivered

    overrides = replicate_overrides(rep, film, tmp_path, "model=kling_o3", "tier=hero", "strategy=multishot")
    code, summary = run_in_process(overrides, tmp_path / "run", monkeypatch)
    assert code == 0, summary
    assert rep.stats.creates == 2 and rep.stats.duplicate_creates == 0
    got = assert_delivered(film)
    sent = {pid: pred.input for pid, pred in rep.predictions.items()}
    for key in GROUPS:
        payload = sent[got[key]["request_id"]]
        assert got[key]["endpoint"] == "kwaivgi/kling-v3-omni-video"
        assert isinstance(payload["multi_prompt"], str) and payload["prompt"]
        items = json.loads(payload["multi_prompt"])
        assert [i["duration"] for i in items] in ([5, 6], [4, 7]) and payload["duration"] == 11
        assert [i["prompt"] for i in items] == [got[s]["prompt"] for s in GROUPS[key]]
        assert payload["reference_images"] and all(u.startswith(rep.url) for u in payload["reference_images"])
        assert payload["generate_audio"] is True
    assert "start_image" in sent[got["group-01"]["request_id"]]  # shot-01's keyframe starts group-01
    # Again: nothing is created; all of it is reused.
    code, summary = run_in_process(overrides, tmp_path / "run2", monkeypatch)
    assert code == 0 and rep.stats.creates == 2 and all(r["reused"] for r in summary["results"])
