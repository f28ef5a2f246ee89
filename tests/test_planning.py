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
from aivp_batch.planning import job_identity, plan_jobs, plan_multishot
from aivp_batch.pricing import estimate_usd
from aivp_batch.schema_store import SchemaStore
from aivp_batch.shots import Shot
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
# wan25 is on Replicate only (tests/test_models.py validates it against the fake Replicate's schemas).
@pytest.mark.parametrize("model", [m for m in MODELS if m not in ("seedance_v1", "sora2", "wan25")])
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


# ---------------------------------------------------------------- strategy=multishot


def _ms(n: int, scene: str | None = "harbour", duration: float | None = 3, **kw) -> Shot:
    kw.setdefault("prompts", {"kling": f"[Camera: static] Shot {n}.", "motion": f"Shot {n}."})
    return Shot(id=f"shot-{n:02d}", number=n, scene=scene, duration_s=duration, aspect_ratio="16:9", **kw)


def _example_shots() -> list[Shot]:
    from conftest import EXAMPLE

    from aivp_batch.storyboard import read_storyboard

    return read_storyboard(EXAMPLE).shots


@pytest.mark.parametrize(
    "model, tier, endpoints",
    [
        (
            "kling_o3",
            "hero",
            ["fal-ai/kling-video/o3/pro/reference-to-video", "fal-ai/kling-video/o3/pro/reference-to-video"],
        ),
        (
            "kling_o3",
            "iteration",
            [
                "fal-ai/kling-video/o3/standard/reference-to-video",
                "fal-ai/kling-video/o3/standard/reference-to-video",
            ],
        ),
        (
            "kling_v3",
            "standard",
            ["fal-ai/kling-video/v3/pro/image-to-video", "fal-ai/kling-video/v3/pro/text-to-video"],
        ),
    ],
)
def test_multishot_renders_the_example_in_two_calls_that_validate(
    compose_cfg, tmp_path, model, tier, endpoints
) -> None:
    spec = spec_for(compose_cfg, model, tier)
    plan = plan_multishot(_example_shots(), spec, provider="fal", seed=1)
    assert not plan.errors and plan.fallbacks == {}
    # 5 + 6 + 4 + 7 s: 15 s a call at most, so two calls of two shots (not 3 + 1).
    assert [j.key for j in plan.jobs] == ["group-01", "group-02"]
    assert [[s.id for s in j.shots] for j in plan.jobs] == [["shot-01", "shot-02"], ["shot-03", "shot-04"]]
    assert [j.endpoint for j in plan.jobs] == endpoints
    for job, durations in zip(plan.jobs, [(5, 6), (4, 7)], strict=True):
        assert "prompt" not in job.payload and job.payload["shot_type"] == "customize"
        assert [i["duration"] for i in job.payload["multi_prompt"]] == [str(d) for d in durations]
        assert job.payload["duration"] == "11" and job.duration_s == 11 and job.shot_durations_s == durations
        assert job.requested_duration_s == sum(durations)
        assert job.prompt == "\n\n".join(i["prompt"] for i in job.payload["multi_prompt"])
        rate = estimate_usd(spec.pricing, duration_s=11, settings=job.settings, endpoint=job.endpoint)
        assert job.estimate_usd == rate > 0 and len(job.identity) == 64
    store = snapshot_store(tmp_path, endpoints)
    assert set(validate_jobs(plan.jobs, store)) == set(endpoints)


@pytest.mark.parametrize(
    "model, keyframe, characters, mode, endpoint",
    [
        ("kling_o3", False, False, "T2V", "fal-ai/kling-video/o3/pro/text-to-video"),
        ("kling_o3", True, False, "I2V", "fal-ai/kling-video/o3/pro/image-to-video"),
        ("kling_o3", False, True, "REF", "fal-ai/kling-video/o3/pro/reference-to-video"),
        ("kling_o3", True, True, "REF", "fal-ai/kling-video/o3/pro/reference-to-video"),
        ("kling_v3", False, False, "T2V", "fal-ai/kling-video/v3/pro/text-to-video"),
        ("kling_v3", True, False, "I2V", "fal-ai/kling-video/v3/pro/image-to-video"),
        ("kling_v3", False, True, "T2V", "fal-ai/kling-video/v3/pro/text-to-video"),
        ("kling_v3", True, True, "I2V", "fal-ai/kling-video/v3/pro/image-to-video"),
    ],
)
def test_a_groups_endpoint_follows_its_keyframe_and_characters(
    compose_cfg, project, tmp_path, model, keyframe, characters, mode, endpoint
) -> None:
    frame = project / "image/frames/shot-01-ff.png"
    chars = tuple(sorted((project / "image/characters").glob("elena-*.png")))
    extra = {"characters": ("Elena",), "character_refs": chars} if characters else {}
    shots = [_ms(1, start_frame=frame if keyframe else None, **extra), _ms(2, **extra)]
    [job] = plan_multishot(shots, spec_for(compose_cfg, model, "hero"), provider="fal", seed=1).jobs
    assert (job.mode, job.endpoint) == (mode, endpoint)
    takes_image = {"T2V": None, "I2V": "image_url" if model == "kling_o3" else "start_image_url"}
    image_field = takes_image.get(mode, "start_image_url")
    sent_images = {k for k in job.files if not k.startswith("elements")}
    assert sent_images == ({image_field} if keyframe and image_field else set())
    assert ("elements" in job.payload) == (characters and mode != "T2V")  # T2V takes no elements
    validate_jobs([job], snapshot_store(tmp_path, [endpoint]))


def test_a_groups_characters_are_one_element_each_named_in_every_item(compose_cfg, project, tmp_path) -> None:
    chars = project / "image/characters"
    marco_side = write_png(chars / "marco-side.png", (768, 1024), (40, 50, 60))
    elena = (chars / "elena-front.png", chars / "elena-side.png")
    marco = (chars / "marco-front.png", marco_side)
    shots = [
        _ms(1, prompts={"kling": "Elena waits by the window."}, characters=("Elena",), character_refs=elena),
        _ms(
            2,
            prompts={"kling": "@Marco comes in; Elena looks up."},
            characters=("Marco", "Elena"),
            character_refs=marco + elena,
        ),
        _ms(3, prompts={"kling": "A door closes."}, characters=("Marco",), character_refs=marco),
    ]
    [job] = plan_multishot(shots, spec_for(compose_cfg, "kling_o3", "hero"), provider="fal", seed=1).jobs
    assert [e["frontal_image_url"] for e in job.payload["elements"]] == [
        elena[0].as_uri(),
        marco[0].as_uri(),
    ]  # in the order the items first name them
    assert [i["prompt"] for i in job.payload["multi_prompt"]] == [
        "Elena (@Element1) waits by the window.",
        "@Element2 comes in; Elena (@Element1) looks up.",
        "A door closes.\n@Element2: Marco",  # its own character, unnamed: listed; Elena is not in it
    ]
    # every portrait once: one upload each
    assert sorted(job.files.values()) == sorted({*elena, *marco})
    assert job.files["elements[1].reference_image_urls[0]"] == marco_side
    validate_jobs([job], snapshot_store(tmp_path, [job.endpoint]))


def test_the_scenes_setting_is_folded_into_every_item(compose_cfg) -> None:
    shots = [_ms(1), _ms(2, prompts={"kling": "(Duration: 2.5s) Shot 2."}, duration=2.5)]
    settings = {"harbour": "A stormy harbour at night, rain on the cobbles"}
    [job] = plan_multishot(
        shots, spec_for(compose_cfg, "kling_v3", "hero"), provider="fal", seed=1, scene_settings=settings
    ).jobs
    items = job.payload["multi_prompt"]
    assert all(
        i["prompt"].startswith("Setting: A stormy harbour at night, rain on the cobbles\n") for i in items
    )
    assert items[1]["prompt"].endswith("(Duration: 3s) Shot 2.") and items[1]["duration"] == "3"
    assert job.duration_note == "shot-02: raised 2.5s → 3s (allowed per shot: 1–15s)"


def test_prompt_and_multi_prompt_are_refused_together(compose_cfg, project, tmp_path) -> None:
    spec = spec_for(compose_cfg, "kling_v3", "hero")
    plan = plan_multishot([_ms(1), _ms(2)], spec, provider="fal", seed=1, payload_extra={"prompt": "x"})
    with pytest.raises(PayloadInvalid) as err:
        validate_jobs(plan.jobs, snapshot_store(tmp_path, {j.endpoint for j in plan.jobs}))
    assert str(err.value) == (
        "group-01: model=kling_v3 endpoint=fal-ai/kling-video/v3/pro/text-to-video field multi_prompt: "
        "sent together with prompt; Kling takes one prompt or a multi_prompt list of shots, not both"
    )
    # The rule holds for a single shot too: its prompt plus a multi_prompt smuggled in.
    single = plan_jobs(
        [_ms(1)],
        spec,
        provider="fal",
        seed=1,
        payload_extra={"multi_prompt": [{"prompt": "y", "duration": "3"}]},
    )
    with pytest.raises(PayloadInvalid, match="shot-01: .* field multi_prompt: sent together with prompt"):
        validate_jobs(single.jobs, snapshot_store(tmp_path, {j.endpoint for j in single.jobs}))


def test_payload_rules_parse_excludes() -> None:
    from aivp_batch.models import PayloadRule, parse_rules

    [rule] = parse_rules("m", [{"path": "multi_prompt", "excludes": ["prompt"], "message": "one or other"}])
    assert rule == PayloadRule("multi_prompt", excludes=("prompt",), message="one or other")
    assert rule.violations({"prompt": "a", "multi_prompt": [{}]}) == [
        ("multi_prompt", "sent together with prompt")
    ]
    assert rule.violations({"prompt": "a", "multi_prompt": None}) == []
    assert rule.violations({"multi_prompt": [{}]}) == []
    with pytest.raises(ConfigError, match="excludes must be a list of field names"):
        parse_rules("m", [{"path": "multi_prompt", "excludes": "prompt"}])


def test_shots_that_fit_no_group_take_the_single_shot_path(compose_cfg) -> None:
    spec = spec_for(compose_cfg, "kling_v3", "hero")
    shots = [_ms(1, "lighthouse"), _ms(2), _ms(3), _ms(4, duration=20)]
    plan = plan_multishot(shots, spec, provider="fal", seed=1)
    assert [j.key for j in plan.jobs] == ["shot-01", "group-01"]
    assert plan.fallbacks == {
        "shot-01": "it is alone in its scene (no consecutive shot of the same scene and aspect ratio)",
        "shot-04": "its 20s is longer than one multi-shot call holds (15s in all)",
    }
    single = plan.jobs[0]
    assert single.notes[0].startswith("renders alone (strategy=multishot): it is alone in its scene")
    assert "prompt" in single.payload and single.shot_durations_s == ()
    # …exactly the job strategy=single plans for it, and shot-04 fails there as it would alone
    [same] = plan_jobs(shots[:1], spec, provider="fal", seed=1).jobs
    assert (single.identity, single.payload) == (same.identity, same.payload)
    assert plan.errors == [plan_jobs(shots[3:], spec, provider="fal", seed=1).errors[0]]
    assert "longer than" in plan.errors[0]


def test_a_model_without_groups_plans_every_shot_alone(compose_cfg, project) -> None:
    spec = spec_for(compose_cfg, "seedance_v15", "standard")
    shots = shots_for_every_mode(project)
    plan = plan_multishot(shots, spec, provider="fal", seed=1)
    assert [j.identity for j in plan.jobs] == [
        j.identity for j in plan_jobs(shots, spec, provider="fal", seed=1).jobs
    ]
    assert set(plan.fallbacks.values()) == {"model=seedance_v15 takes no multi-shot groups on provider=fal"}


def test_a_groups_identity_hashes_its_files_and_ignores_a_drawn_seed(compose_cfg, project) -> None:
    spec = spec_for(compose_cfg, "kling_o3", "hero")
    frame = project / "image/frames/shot-01-ff.png"
    shots = [_ms(1, start_frame=frame), _ms(2)]
    a = plan_multishot(shots, spec, provider="fal", seed=None).jobs[0]
    b = plan_multishot(shots, spec, provider="fal", seed=None).jobs[0]
    assert a.identity == b.identity and a.file_hashes == {"image_url": b.file_hashes["image_url"]}
    write_png(frame, (1280, 720), (1, 2, 3))  # the keyframe edited: another render
    assert plan_multishot(shots, spec, provider="fal", seed=None).jobs[0].identity != a.identity
    # a seed asked for on an endpoint that takes none is a take of its own
    assert plan_multishot(shots, spec, provider="fal", seed=2).jobs[0].identity != a.identity
    single = plan_jobs(shots[:1], spec, provider="fal", seed=None).jobs[0]
    assert single.identity != a.identity


def test_multishot_planning_errors_are_lines(compose_cfg) -> None:
    spec = spec_for(compose_cfg, "kling_v3", "hero")
    extra = plan_multishot([_ms(1), _ms(2)], spec, provider="fal", seed=1, payload_extra={"duration": "10"})
    assert extra.errors == [
        "group-01: payload_extra sets duration='10', but a multi-shot group's duration is the sum of its "
        "shots' (6s)"
    ]
    stated = plan_multishot([_ms(1, group="a"), _ms(2, "street", group="a")], spec, provider="fal", seed=1)
    assert not stated.jobs
    assert stated.errors == [
        "multi-shot group 'a' (shot-01, shot-02): shot-01 and shot-02 are in different scenes "
        "(harbour / street)"
    ]
    long = plan_multishot(
        [_ms(1, prompts={"kling": "x" * 50}), _ms(2)], spec, provider="fal", seed=1, max_prompt_chars=40
    )
    assert long.errors == ["group-01: shot-01's prompt is 50 characters; the limit is max_prompt_chars=40"]


def test_groups_stated_by_the_manifest_are_honoured(compose_cfg) -> None:
    spec = spec_for(compose_cfg, "kling_v3", "hero")
    shots = [_ms(n) for n in range(1, 5)]
    plan = plan_multishot(shots, spec, provider="fal", seed=1, groups=[["shot-01", "shot-02", "shot-03"]])
    assert [[s.id for s in j.shots] for j in plan.jobs] == [["shot-01", "shot-02", "shot-03"], ["shot-04"]]
    assert plan.fallbacks == {
        "shot-04": "it is alone in its scene (no consecutive shot of the same scene and aspect ratio)"
    }


def test_the_preview_renders_groups_with_the_models_limits(compose_cfg, project) -> None:
    from aivp_batch.providers.preview import PREVIEW_ENDPOINT, preview_openapi

    spec = spec_for(compose_cfg, "kling_o3", "standard", provider="preview")
    frame = project / "image/frames/shot-01-ff.png"
    shots = [_ms(1, start_frame=frame, dialogue="Hold on!"), _ms(2, duration=2), _ms(3, "street")]
    plan = plan_multishot(shots, spec, provider="preview", seed=4)
    assert [j.key for j in plan.jobs] == ["group-01", "shot-03"]
    group = plan.jobs[0]
    assert (group.endpoint, group.mode, group.estimate_usd) == (PREVIEW_ENDPOINT, "I2V", 0.0)
    assert group.payload["prompt"] == "group-01: shot-01, shot-02" and group.payload["duration"] == 5
    assert group.payload["multi_prompt"] == [
        {
            "prompt": "[Camera: static] Shot 1.",
            "duration": 3,
            "title": "shot-01",
            "caption": "Shot 1.",
            "dialogue": "Hold on!",
        },
        {"prompt": "[Camera: static] Shot 2.", "duration": 2, "title": "shot-02", "caption": "Shot 2."},
    ]
    assert set(group.files) == {"image_url"}
    store = SchemaStore(offline=True, bundled=None)
    store.register(PREVIEW_ENDPOINT, preview_openapi())
    validate_jobs(plan.jobs, store)
