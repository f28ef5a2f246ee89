"""Where a shot becomes a payload: every model's payload for every mode validates against the real
schema of its endpoint; durations are raised (never shortened) or refused when strict."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO, fal_document, has_fal_document, write_png
from omegaconf import OmegaConf

from aivp_batch.errors import ConfigError, PayloadInvalid, SchemaUnavailable
from aivp_batch.media import frame_size
from aivp_batch.models import FieldSpec, build_model_spec
from aivp_batch.planning import job_identity, plan_jobs
from aivp_batch.pricing import estimate_usd
from aivp_batch.schemas import SchemaStore
from aivp_batch.storyboard import Shot
from aivp_batch.validation import validate_jobs

# Hand-written model YAMLs; `auto` derives its map from an endpoint schema (tests/test_auto_model.py).
MODELS = sorted(p.stem for p in (REPO / "aivp_batch/conf/model").glob("*.yaml") if p.stem != "auto")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_png(tmp_path / "image/frames/shot-01-ff.png", (1280, 720))
    write_png(tmp_path / "image/frames/shot-01-lf.png", (1280, 720), (30, 60, 90))
    write_png(tmp_path / "image/characters/elena-front.png", (768, 1024))
    write_png(tmp_path / "image/characters/elena-side.png", (768, 1024), (90, 80, 70))
    write_png(tmp_path / "image/characters/marco-front.png", (768, 1024), (10, 20, 30))
    return tmp_path


def shots_for_every_mode(project: Path) -> list[Shot]:
    prompts = {
        "seedance": "0-3秒：镜头缓缓推进，@图片1 转身",
        "kling": "[Camera: push in] Elena turns.",
        "motion": "Slow push in as the woman turns.",
    }
    frames = project / "image/frames"
    # One character, two angles: one Kling element (front + a reference image), two image refs.
    chars = tuple(sorted((project / "image/characters").glob("elena-*.png")))
    return [
        Shot(id="shot-01", number=1, prompts=prompts, duration_s=5, aspect_ratio="16:9"),
        Shot(
            id="shot-02",
            number=2,
            prompts=prompts,
            duration_s=5,
            aspect_ratio="16:9",
            start_frame=frames / "shot-01-ff.png",
        ),
        Shot(
            id="shot-03",
            number=3,
            prompts=prompts,
            duration_s=5,
            aspect_ratio="16:9",
            start_frame=frames / "shot-01-ff.png",
            end_frame=frames / "shot-01-lf.png",
        ),
        Shot(
            id="shot-04",
            number=4,
            prompts=prompts,
            duration_s=5,
            aspect_ratio="16:9",
            characters=("Elena",),
            character_refs=chars,
        ),
    ]


def spec_for(compose_cfg, model: str, tier: str, provider: str = "fal"):
    cfg = OmegaConf.to_container(
        compose_cfg(f"model={model}", f"tier={tier}", f"provider={provider}"), resolve=True
    )
    return build_model_spec(cfg["model"], cfg["provider"], tier)


def snapshot_store(tmp_path: Path, endpoints) -> SchemaStore:
    store = SchemaStore(cache_dir=tmp_path / "cache", offline=True)
    for endpoint in endpoints:
        if has_fal_document(endpoint):
            store.register(endpoint, fal_document(endpoint))
    return store


@pytest.mark.parametrize("tier", ["iteration", "standard", "hero"])
@pytest.mark.parametrize("model", [m for m in MODELS if m not in ("seedance_v1", "sora2")])
def test_every_mode_validates_against_the_real_schema(compose_cfg, project, tmp_path, model, tier) -> None:
    spec = spec_for(compose_cfg, model, tier)
    plan = plan_jobs(shots_for_every_mode(project), spec, provider="fal", seed=7)
    assert not plan.errors
    store = snapshot_store(tmp_path, {j.endpoint for j in plan.jobs})
    shas = validate_jobs(plan.jobs, store)
    assert set(shas) == {j.endpoint for j in plan.jobs}
    modes = {j.key: j.mode for j in plan.jobs}
    assert modes["shot-01"] == "T2V" and modes["shot-02"] == "I2V"
    assert modes["shot-03"] == ("FLF" if spec.supports_end_frame("I2V") or "FLF" in spec.modes else "I2V")
    assert modes["shot-04"] == ("REF" if "REF" in spec.modes else "T2V")
    for job in plan.jobs:
        assert job.estimate_usd > 0 and len(job.identity) == 64


def test_seedance_v1_needs_its_schema_online(compose_cfg, project, tmp_path) -> None:
    spec = spec_for(compose_cfg, "seedance_v1", "standard")
    plan = plan_jobs(shots_for_every_mode(project)[:1], spec, provider="fal", seed=1)
    with pytest.raises(SchemaUnavailable, match="seedance/v1/pro/text-to-video"):
        validate_jobs(plan.jobs, snapshot_store(tmp_path, []))


def test_field_names_and_types_follow_each_endpoint(compose_cfg, project) -> None:
    shots = shots_for_every_mode(project)
    kling = plan_jobs(shots, spec_for(compose_cfg, "kling_v3", "hero"), provider="fal", seed=3).jobs
    assert kling[1].payload["start_image_url"].startswith("file://") and kling[1].payload["duration"] == "5"
    assert "seed" not in kling[0].payload  # Kling takes no seed; it is still recorded on the job
    assert kling[0].seed == 3
    veo = plan_jobs(shots, spec_for(compose_cfg, "veo31", "standard"), provider="fal", seed=3).jobs
    assert veo[0].payload["duration"] == "6s" and veo[0].duration_note.startswith("raised 5s → 6s")
    assert set(veo[2].files) == {"first_frame_url", "last_frame_url"}
    o3 = plan_jobs(shots, spec_for(compose_cfg, "kling_o3", "hero"), provider="fal", seed=3).jobs
    [element] = o3[3].payload["elements"]
    assert element["frontal_image_url"].endswith("elena-front.png")
    assert [u.rsplit("/", 1)[1] for u in element["reference_image_urls"]] == ["elena-side.png"]
    assert o3[3].prompt == "[Camera: push in] Elena (@Element1) turns."
    sd2 = plan_jobs(shots, spec_for(compose_cfg, "seedance_v2", "standard"), provider="fal", seed=3).jobs
    assert (
        sd2[3].prompt.startswith("0-3秒")
        and "@Image1" in sd2[3].prompt
        and len(sd2[3].payload["image_urls"]) == 2
    )


def test_prompt_variant_per_model(compose_cfg, project) -> None:
    shot = shots_for_every_mode(project)[:1]
    assert (
        plan_jobs(shot, spec_for(compose_cfg, "seedance_v15", "standard"), provider="fal", seed=1)
        .jobs[0]
        .prompt_variant
        == "seedance"
    )
    assert (
        plan_jobs(shot, spec_for(compose_cfg, "kling_v26", "standard"), provider="fal", seed=1)
        .jobs[0]
        .prompt_variant
        == "kling"
    )
    only_motion = [Shot(id="shot-01", number=1, prompts={"motion": "A slow pan."}, duration_s=5)]
    job = plan_jobs(
        only_motion, spec_for(compose_cfg, "seedance_v15", "standard"), provider="fal", seed=1
    ).jobs[0]
    assert (job.prompt_variant, job.prompt) == ("motion", "A slow pan.")


def test_duration_raised_never_shortened_or_strict(compose_cfg) -> None:
    spec = spec_for(compose_cfg, "kling_v26", "standard")
    shots = [Shot(id="shot-07", number=7, prompts={"kling": "x"}, duration_s=7)]
    job = plan_jobs(shots, spec, provider="fal", seed=1).jobs[0]
    assert job.duration_s == 10 and job.payload["duration"] == "10" and "7s → 10s" in job.duration_note
    strict = plan_jobs(shots, spec, provider="fal", seed=1, duration_policy="strict")
    assert not strict.jobs
    assert strict.errors == [
        "shot-07: duration 7s is not allowed by fal-ai/kling-video/v2.6/pro/text-to-video "
        "(allowed: 5, 10) and duration_policy=strict"
    ]
    too_long = plan_jobs(
        [Shot(id="shot-08", number=8, prompts={"kling": "x"}, duration_s=12)], spec, provider="fal", seed=1
    )
    assert "longer than" in too_long.errors[0]


def test_spec_kling_field_names_are_caught(compose_cfg, project, tmp_path) -> None:
    spec = spec_for(compose_cfg, "kling_o3", "hero")
    shots = shots_for_every_mode(project)[:1]
    wrong = {
        "multi_shot_prompts": [{"prompt": "a", "duration": "5"}],
        "elements": [{"image_url": "https://x/y.png", "description": "the detective"}],
    }
    plan = plan_jobs(shots, spec, provider="fal", seed=1, payload_extra=wrong)
    with pytest.raises(PayloadInvalid) as err:
        validate_jobs(plan.jobs, snapshot_store(tmp_path, {plan.jobs[0].endpoint}))
    text = str(err.value)
    assert "field multi_shot_prompts: not declared" in text
    assert (
        "field elements" in text
        and "shot-01: model=kling_o3 endpoint=fal-ai/kling-video/o3/pro/text-to-video" in text
    )


def test_invalid_value_names_shot_endpoint_field_and_allowed(compose_cfg, project, tmp_path) -> None:
    spec = spec_for(compose_cfg, "veo31", "standard")
    plan = plan_jobs(
        shots_for_every_mode(project)[:1], spec, provider="fal", seed=1, payload_extra={"resolution": "8k"}
    )
    with pytest.raises(PayloadInvalid) as err:
        validate_jobs(plan.jobs, snapshot_store(tmp_path, {plan.jobs[0].endpoint}))
    assert "shot-01: model=veo31 endpoint=fal-ai/veo3.1/fast field resolution" in str(err.value)
    assert "'720p', '1080p', '4k'" in str(err.value)


def test_small_keyframe_fails_x_fal_limits_before_upload(compose_cfg, tmp_path) -> None:
    small = write_png(tmp_path / "image/frames/shot-01-ff.png", (200, 150))
    shot = Shot(id="shot-01", number=1, prompts={"kling": "x"}, duration_s=5, start_frame=small)
    plan = plan_jobs([shot], spec_for(compose_cfg, "kling_v3", "hero"), provider="fal", seed=1)
    with pytest.raises(PayloadInvalid, match="shot-01-ff.png"):
        validate_jobs(plan.jobs, snapshot_store(tmp_path, {plan.jobs[0].endpoint}))


def test_identity_hashes_files_by_content_and_random_seed_as_random(compose_cfg, project) -> None:
    spec = spec_for(compose_cfg, "seedance_v15", "standard")
    shot = shots_for_every_mode(project)[1:2]
    a = plan_jobs(shot, spec, provider="fal", seed=None).jobs[0]
    b = plan_jobs(shot, spec, provider="fal", seed=None).jobs[0]
    assert a.payload["seed"] == a.seed and a.seed_random  # a drawn seed is sent and recorded
    assert a.identity == b.identity  # …but a random seed does not make it a different render
    c = plan_jobs(shot, spec, provider="fal", seed=5).jobs[0]
    assert c.identity != a.identity and c.payload["seed"] == 5
    moved = job_identity("fal", c.endpoint, {**c.payload, "image_url": "https://cdn/x.png"}, {}, {}, False)
    assert moved != c.identity


def test_pricing_rules() -> None:
    seedance = {
        "unit": "token",
        "fps": 24,
        "rates": [{"when": {"audio": True}, "usd_per_million": 2.4}, {"usd_per_million": 1.2}],
    }
    assert frame_size("720p", "16:9") == (1280, 720) and frame_size("480p", "9:16") == (480, 854)
    assert estimate_usd(
        seedance, duration_s=5, settings={"audio": True, "resolution": "720p"}, aspect_ratio="16:9"
    ) == pytest.approx(0.2592)
    kling = {"unit": "second", "rates": [{"when": {"audio": True}, "usd": 0.14}, {"usd": 0.07}]}
    assert estimate_usd(kling, duration_s=10, settings={"audio": False}) == pytest.approx(0.7)
    assert estimate_usd({"unit": "free"}, duration_s=10, settings={}) == 0.0


# ---------------------------------------------------------------- priced from the final payload


def _t2v_shot(duration_s: float | None = 5, prompt: str = "A slow pan over a harbour.") -> Shot:
    return Shot(
        id="shot-03", number=3, prompts={"motion": prompt}, duration_s=duration_s, aspect_ratio="16:9"
    )


def test_payload_extra_duration_and_resolution_are_priced(compose_cfg) -> None:
    spec = spec_for(compose_cfg, "seedance_v15", "standard")  # the default model: 720p, audio
    [planned] = plan_jobs([_t2v_shot()], spec, provider="fal", seed=1).jobs
    assert (planned.duration_s, planned.estimate_usd) == (5, pytest.approx(0.2592))
    extra = {"duration": "12", "resolution": "1080p"}
    [job] = plan_jobs([_t2v_shot()], spec, provider="fal", seed=1, payload_extra=extra).jobs
    assert job.payload["duration"] == "12" and job.payload["resolution"] == "1080p"
    # 1920×1080 × 24 fps × 12 s / 1024 tokens at $2.4 per million (audio on)
    assert job.duration_s == 12 and job.estimate_usd == pytest.approx(1.3997)
    assert job.settings["resolution"] == "1080p"
    assert job.duration_note == "payload_extra sets duration='12': 12s, not 5s"


def test_veo_duration_with_its_unit_is_read_back(compose_cfg) -> None:
    spec = spec_for(compose_cfg, "veo31", "standard")  # /fast, 1080p, audio: $0.15/s
    [planned] = plan_jobs([_t2v_shot(4)], spec, provider="fal", seed=1).jobs
    assert (planned.payload["duration"], planned.estimate_usd) == ("4s", pytest.approx(0.6))
    [job] = plan_jobs([_t2v_shot(4)], spec, provider="fal", seed=1, payload_extra={"duration": "8s"}).jobs
    assert job.duration_s == 8 and job.estimate_usd == pytest.approx(1.2)


def test_payload_extra_audio_is_priced(compose_cfg) -> None:
    spec = spec_for(compose_cfg, "seedance_v15", "standard")
    extra = {"generate_audio": False}
    [job] = plan_jobs([_t2v_shot()], spec, provider="fal", seed=1, payload_extra=extra).jobs
    assert job.duration_s == 5 and job.estimate_usd == pytest.approx(0.1296)  # the no-audio rate
    assert job.duration_note is None


def test_a_payload_duration_that_is_no_number_is_a_planning_error(compose_cfg) -> None:
    spec = spec_for(compose_cfg, "seedance_v15", "standard")
    plan = plan_jobs([_t2v_shot()], spec, provider="fal", seed=1, payload_extra={"duration": "long"})
    assert plan.jobs == []
    assert plan.errors == [
        "shot-03: duration='long' in the payload does not read as a duration for "
        "fal-ai/bytedance/seedance/v1.5/pro/text-to-video"
    ]


def test_field_spec_parse_inverts_convert() -> None:
    for spec, value in [
        (FieldSpec("duration", format="{}"), 12),
        (FieldSpec("duration", format="{}s"), 8),
        (FieldSpec("duration", type="int"), 10),
        (FieldSpec("resolution"), "1080p"),
        (FieldSpec("generate_audio"), True),
    ]:
        assert spec.parse(spec.convert(value)) == value
    assert FieldSpec("duration", format="{}s").parse("7.5s") == 7.5
    with pytest.raises(ValueError):
        FieldSpec("duration", format="{}s").parse("8")


# ---------------------------------------------------------------- prompt size cap


def test_a_prompt_over_max_prompt_chars_is_a_planning_error(compose_cfg) -> None:
    spec = spec_for(compose_cfg, "seedance_v15", "standard")
    huge = _t2v_shot(prompt="a" * 3_300_000)
    plan = plan_jobs([huge, _t2v_shot()], spec, provider="fal", seed=1)
    assert plan.errors == ["shot-03: prompt is 3,300,000 characters; the limit is max_prompt_chars=20000"]
    assert len(plan.jobs) == 1
    capped = plan_jobs([_t2v_shot(prompt="x" * 11)], spec, provider="fal", seed=1, max_prompt_chars=10)
    assert capped.errors == ["shot-03: prompt is 11 characters; the limit is max_prompt_chars=10"]
    assert not plan_jobs(
        [_t2v_shot(prompt="x" * 10)], spec, provider="fal", seed=1, max_prompt_chars=10
    ).errors


def test_max_prompt_chars_is_in_the_config(compose_cfg) -> None:
    assert compose_cfg().max_prompt_chars == 20000


# ---------------------------------------------------------------- unreadable inputs


def test_an_unreadable_input_file_is_a_planning_error(compose_cfg, tmp_path, monkeypatch) -> None:
    frame = write_png(tmp_path / "ff.png", (640, 360))

    def denied(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("aivp_batch.planning.sha256_file", denied)
    shot = Shot(id="shot-01", number=1, prompts={"motion": "x"}, duration_s=5, start_frame=frame)
    plan = plan_jobs([shot], spec_for(compose_cfg, "seedance_v15", "standard"), provider="fal", seed=1)
    assert plan.errors == [f"shot-01: {frame} cannot be read (Permission denied)"]


def test_min_image_px_must_be_a_positive_whole_number(compose_cfg) -> None:
    cfg = OmegaConf.to_container(compose_cfg("model=seedance_v15"), resolve=True)
    model = {**cfg["model"], "min_image_px": "big"}
    with pytest.raises(ConfigError, match="min_image_px must be a whole number"):
        build_model_spec(model, cfg["provider"], "standard")
    assert (
        build_model_spec({**cfg["model"], "min_image_px": 128}, cfg["provider"], "standard").min_image_px
        == 128
    )
