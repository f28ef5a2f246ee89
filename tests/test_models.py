"""Model configs mean what they say: Kling elements are one per character and need a second
angle, each tier is priced from what its endpoint renders and iteration is the cheapest, and a
retired model is refused in one line."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import EXAMPLE, REPO, fal_document, has_fal_document, write_png
from omegaconf import OmegaConf
from test_cli import run_cli

from aivp_batch.app import budget_warning
from aivp_batch.errors import ConfigError, PayloadInvalid
from aivp_batch.models import PayloadRule, build_model_spec, parse_field, parse_rules
from aivp_batch.planning import Plan, plan_jobs
from aivp_batch.schema_store import SchemaStore
from aivp_batch.shots import Shot
from aivp_batch.validation import validate_jobs

MODELS = sorted(p.stem for p in (REPO / "aivp_batch/conf/model").glob("*.yaml"))
# The live models on fal: wan25 has only a replicate block (models on replicate: REPLICATE_MODELS).
LIVE_MODELS = [
    m
    for m in MODELS
    if m not in ("sora2", "auto") and OmegaConf.load(REPO / f"aivp_batch/conf/model/{m}.yaml").get("fal")
]


def spec_for(compose_cfg, model: str, tier: str):
    cfg = OmegaConf.to_container(compose_cfg(f"model={model}", f"tier={tier}"), resolve=True)
    return build_model_spec(cfg["model"], cfg["provider"], tier)


def snapshot_store(tmp_path: Path, jobs) -> SchemaStore:
    store = SchemaStore(cache_dir=tmp_path / "cache", offline=True)
    for endpoint in {j.endpoint for j in jobs}:
        assert has_fal_document(endpoint), endpoint
        store.register(endpoint, fal_document(endpoint))
    return store


@pytest.fixture
def cast(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "image/characters"
    files = {
        name: write_png(folder / f"{name}.png", (768, 1024), colour)
        for name, colour in [
            ("marlow-front", (200, 10, 10)),
            ("marlow-side", (180, 30, 30)),
            ("vera-back", (10, 10, 160)),
            ("vera-front", (10, 10, 200)),
            ("vera-side", (30, 30, 180)),
        ]
    }
    files["frame"] = write_png(tmp_path / "image/frames/shot-01-ff.png", (1280, 720))
    return files


def two_character_shot(cast: dict[str, Path], *, keyframe: bool = False, refs=None) -> Shot:
    refs = refs or [cast[k] for k in ("marlow-front", "marlow-side", "vera-back", "vera-front", "vera-side")]
    return Shot(
        id="shot-01",
        number=1,
        # Vera is introduced first, so she is @Element1 although Marlow sorts first.
        prompts={"kling": "[Camera: slow dolly] Vera waits at the bar; @Marlow walks in and Vera turns."},
        duration_s=5,
        aspect_ratio="16:9",
        characters=("Marlow", "Vera"),
        character_refs=tuple(refs),
        start_frame=cast["frame"] if keyframe else None,
    )


# ---------------------------------------------------------------- Kling elements


@pytest.mark.parametrize(
    "model, tier, keyframe, endpoint",
    [
        ("kling_o3", "iteration", False, "fal-ai/kling-video/o3/standard/reference-to-video"),
        ("kling_o3", "hero", False, "fal-ai/kling-video/o3/pro/reference-to-video"),
        ("kling_v3", "standard", True, "fal-ai/kling-video/v3/pro/image-to-video"),
    ],
)
def test_two_characters_are_two_elements(
    compose_cfg, cast, tmp_path, model, tier, keyframe, endpoint
) -> None:
    shot = two_character_shot(cast, keyframe=keyframe)
    [job] = plan_jobs([shot], spec_for(compose_cfg, model, tier), provider="fal", seed=1).jobs
    assert job.endpoint == endpoint
    vera, marlow = job.payload["elements"]
    assert vera["frontal_image_url"] == cast["vera-front"].as_uri()
    assert vera["reference_image_urls"] == [cast["vera-back"].as_uri(), cast["vera-side"].as_uri()]
    assert marlow == {
        "frontal_image_url": cast["marlow-front"].as_uri(),
        "reference_image_urls": [cast["marlow-side"].as_uri()],
    }
    assert job.prompt == (
        "[Camera: slow dolly] Vera (@Element1) waits at the bar; @Element2 walks in and Vera turns."
    )
    assert job.files["elements[0].reference_image_urls[1]"] == cast["vera-side"]
    assert set(validate_jobs([job], snapshot_store(tmp_path, [job]))) == {endpoint}


def test_a_character_with_one_portrait_is_a_clear_error(compose_cfg, cast, tmp_path) -> None:
    shot = two_character_shot(cast, refs=[cast["marlow-front"], cast["vera-front"], cast["vera-side"]])
    plan = plan_jobs([shot], spec_for(compose_cfg, "kling_o3", "standard"), provider="fal", seed=1)
    with pytest.raises(PayloadInvalid) as err:
        validate_jobs(plan.jobs, snapshot_store(tmp_path, plan.jobs))
    [line] = str(err.value).splitlines()
    assert line.startswith(
        "shot-01: model=kling_o3 endpoint=fal-ai/kling-video/o3/standard/reference-to-video "
        "field elements[1].reference_image_urls: 0 items, needs 1–3 (given: marlow-front.png); "
        "a Kling element is one character: its front portrait plus 1–3 portraits from other angles"
    )
    assert "character_refs=false" in line


def test_more_than_three_other_angles_is_refused(compose_cfg, cast, tmp_path) -> None:
    extra = [write_png(cast["vera-front"].parent / f"vera-{a}.png", (768, 1024)) for a in ("left", "right")]
    portraits = [path for name, path in cast.items() if name != "frame"]
    shot = two_character_shot(cast, refs=portraits + extra)  # Vera: front + back, side, left, right
    plan = plan_jobs([shot], spec_for(compose_cfg, "kling_o3", "hero"), provider="fal", seed=1)
    with pytest.raises(PayloadInvalid, match=r"elements\[0\].reference_image_urls: 4 items, needs 1–3"):
        validate_jobs(plan.jobs, snapshot_store(tmp_path, plan.jobs))


def test_kling_v3_keyframe_leaves_out_a_character_without_a_second_angle(compose_cfg, cast, tmp_path) -> None:
    shot = two_character_shot(
        cast, keyframe=True, refs=[cast["marlow-front"], cast["vera-front"], cast["vera-side"]]
    )
    [job] = plan_jobs([shot], spec_for(compose_cfg, "kling_v3", "hero"), provider="fal", seed=1).jobs
    assert [e["frontal_image_url"] for e in job.payload["elements"]] == [cast["vera-front"].as_uri()]
    assert "@Element1" in job.prompt and "@Element2" not in job.prompt
    assert any("marlow-front.png not used" in note for note in job.notes)
    validate_jobs([job], snapshot_store(tmp_path, [job]))


def test_chinese_image_refs_point_at_the_characters_element(compose_cfg, cast) -> None:
    refs = (cast["marlow-front"], cast["marlow-side"], cast["vera-front"], cast["vera-side"])
    shot = Shot(
        id="shot-02",
        number=2,
        prompts={"seedance": "0-3秒：@图片3 回头，@图片1 走近"},
        duration_s=5,
        characters=("Marlow", "Vera"),
        character_refs=refs,
    )
    [job] = plan_jobs([shot], spec_for(compose_cfg, "kling_o3", "hero"), provider="fal", seed=1).jobs
    assert job.prompt == "0-3秒：@Element1 回头，@Element2 走近"  # image 3 is Vera's front portrait
    assert job.payload["elements"][0]["frontal_image_url"] == cast["vera-front"].as_uri()


def test_an_unnamed_character_is_listed_on_a_last_line(compose_cfg, cast) -> None:
    shot = Shot(
        id="shot-03",
        number=3,
        prompts={"kling": "[Camera: static] Rain on the window."},
        duration_s=5,
        characters=("Marlow",),
        character_refs=(cast["marlow-front"], cast["marlow-side"]),
    )
    [job] = plan_jobs([shot], spec_for(compose_cfg, "kling_o3", "hero"), provider="fal", seed=1).jobs
    assert job.prompt == "[Camera: static] Rain on the window.\n@Element1: Marlow"


def test_image_list_rules_of_every_model() -> None:
    """Every image-list field a model config fills carries its limits as rules."""
    rules = {}
    for model in LIVE_MODELS:
        cfg = OmegaConf.load(REPO / f"aivp_batch/conf/model/{model}.yaml")
        for key, mode in (cfg.get("fal") or {}).get("modes", {}).items():
            if "character_refs" in (mode.get("fields") or {}):
                rules[(model, key)] = [
                    (r.path, r.min_items, r.max_items) for r in parse_rules(model, mode.get("rules"))
                ]
    assert rules == {
        ("kling_o3", "ref"): [("elements[*].reference_image_urls", 1, 3)],
        ("kling_v3", "i2v"): [("elements[*].reference_image_urls", 1, 3)],
        ("seedance_v2", "ref"): [("image_urls", 1, 9)],
        ("veo31", "ref"): [("image_urls", 1, 3)],
    }


def test_payload_rule_locations_and_bounds() -> None:
    rule = PayloadRule("elements[*].reference_image_urls", min_items=1, max_items=3)
    payload = {"elements": [{"frontal_image_url": "a"}, {"reference_image_urls": ["b", "c"]}]}
    assert rule.locations(payload) == [
        ("elements[0].reference_image_urls", None),
        ("elements[1].reference_image_urls", ["b", "c"]),
    ]
    assert rule.check(None) == "0 items, needs 1–3" and rule.check(["b"]) is None
    assert rule.locations({"prompt": "x"}) == []  # no elements sent: nothing to check
    assert PayloadRule("image_urls", max_items=2).check(["a", "b", "c"]) == "3 items, needs 0–2"
    with pytest.raises(ConfigError, match="needs min_items and/or max_items"):
        parse_rules("m", [{"path": "image_urls"}])
    with pytest.raises(ConfigError, match="unknown keys"):
        parse_rules("m", [{"path": "image_urls", "max": 3}])


# ---------------------------------------------------------------- tiers and prices


def fixed_storyboard(tmp_path: Path) -> list[Shot]:
    ff = write_png(tmp_path / "f/ff.png", (1280, 720))
    lf = write_png(tmp_path / "f/lf.png", (1280, 720), (1, 2, 3))
    refs = (
        write_png(tmp_path / "image/characters/ada-front.png", (768, 1024)),
        write_png(tmp_path / "image/characters/ada-side.png", (768, 1024), (9, 9, 9)),
    )
    prompts = {"seedance": "0-4秒：@图片1 走过", "kling": "Ada walks past.", "motion": "Ada walks past."}
    base = {"prompts": prompts, "duration_s": 5, "aspect_ratio": "16:9"}
    return [
        Shot(id="shot-01", number=1, **base),
        Shot(id="shot-02", number=2, start_frame=ff, **base),
        Shot(id="shot-03", number=3, start_frame=ff, end_frame=lf, **base),
        Shot(id="shot-04", number=4, characters=("Ada",), character_refs=refs, **base),
    ]


# Where a cheaper (or dearer) variant or setting exists, the tiers must differ.
STRICTLY_CHEAPER_ITERATION = {
    "seedance_v15", "seedance_v1", "seedance_v2", "kling_o3", "kling_v3", "kling_v26", "veo31", "hailuo02"
}  # fmt: skip
STRICTLY_DEARER_HERO = {"seedance_v15", "seedance_v1", "seedance_v2", "kling_o3", "veo31", "hailuo02"}


@pytest.mark.parametrize("model", LIVE_MODELS)
def test_iteration_is_the_cheapest_tier(compose_cfg, tmp_path, model) -> None:
    shots = fixed_storyboard(tmp_path)
    totals = {}
    for tier in ("iteration", "standard", "hero"):
        plan = plan_jobs(shots, spec_for(compose_cfg, model, tier), provider="fal", seed=1)
        assert not plan.errors, plan.errors
        totals[tier] = plan.total_usd
    assert totals["iteration"] <= totals["standard"] <= totals["hero"], totals
    if model in STRICTLY_CHEAPER_ITERATION:
        assert totals["iteration"] < totals["standard"], totals
    if model in STRICTLY_DEARER_HERO:
        assert totals["standard"] < totals["hero"], totals


def test_kling_o3_iteration_uses_standard_references_and_no_audio(compose_cfg, tmp_path) -> None:
    jobs = plan_jobs(
        fixed_storyboard(tmp_path), spec_for(compose_cfg, "kling_o3", "iteration"), provider="fal", seed=1
    ).jobs
    assert {j.key: j.endpoint.split("/")[3] for j in jobs} == {
        "shot-01": "pro", "shot-02": "pro", "shot-03": "pro", "shot-04": "standard"
    }  # fmt: skip
    assert all(j.payload["generate_audio"] is False for j in jobs)
    assert [j.estimate_usd for j in jobs] == [1.12, 1.12, 1.12, pytest.approx(0.825)]


def test_hailuo_is_priced_at_what_it_renders(compose_cfg, tmp_path) -> None:
    t2v, i2v, *_ = fixed_storyboard(tmp_path)
    iteration = spec_for(compose_cfg, "hailuo02", "iteration")
    [text, image] = plan_jobs([t2v, i2v], iteration, provider="fal", seed=1).jobs
    # Standard text-to-video has no resolution field: fal renders 768P, $0.045/s × 6 s.
    assert "resolution" not in text.payload and text.settings["resolution"] == "768P"
    assert text.estimate_usd == pytest.approx(0.27)
    assert image.payload["resolution"] == "512P" and image.estimate_usd == pytest.approx(0.102)
    hero = plan_jobs([t2v], spec_for(compose_cfg, "hailuo02", "hero"), provider="fal", seed=1).jobs[0]
    assert hero.settings["resolution"] == "1080P" and hero.estimate_usd == pytest.approx(0.48)


def test_budget_warning_says_how_many_shots_fit(compose_cfg) -> None:
    spec = spec_for(compose_cfg, "kling_v26", "standard")  # $0.14/s: $0.70 a 5 s shot
    shots = [Shot(id=f"shot-{n:02d}", number=n, prompts={"kling": "x"}, duration_s=5) for n in range(1, 11)]
    plan: Plan = plan_jobs(shots, spec, provider="fal", seed=1)
    assert budget_warning(plan, 5.0) == (
        "the plan's estimate $7.00 exceeds budget_usd=5: 7 of 10 shots fit $5.00; not submitted: "
        "shot-08, shot-09, shot-10 (raise budget_usd or pick another tier/model)"
    )


# ---------------------------------------------------------------- retired


def test_sora2_is_retired(compose_cfg) -> None:
    cfg = OmegaConf.to_container(compose_cfg("model=sora2"), resolve=True)
    with pytest.raises(ConfigError) as err:
        build_model_spec(cfg["model"], cfg["provider"], "standard")
    assert str(err.value) == (
        "model=sora2 is retired: OpenAI shut the Sora 2 API on 2026-09-24 and fal removed "
        "fal-ai/sora-2/*; use model=veo31 or model=kling_v3"
    )


def test_sora2_dry_run_exits_2_with_one_line(tmp_path) -> None:
    proc = run_cli(f"project_dir={EXAMPLE}", "model=sora2", "dry_run=true", "offline=true", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "aivp-batch: error: model=sora2 is retired: OpenAI shut the Sora 2 API on 2026-09-24 and fal "
        "removed fal-ai/sora-2/*; use model=veo31 or model=kling_v3"
    ]
    assert proc.stdout == ""


# ---------------------------------------------------------------- per provider: pricing, tiers, Replicate

REPLICATE_MODELS = ["hailuo02", "kling_o3", "kling_v25_turbo", "seedance_v1", "veo31", "wan25"]
TIERS = ("iteration", "standard", "hero")
# The Replicate model ids the fixed storyboard's jobs go to, per model and tier (every one served,
# with a hand-written schema, by the fake server: aivp_batch/testing/replicate_schemas/).
REPLICATE_ENDPOINTS = {
    "hailuo02": dict.fromkeys(TIERS, {"minimax/hailuo-02"}),
    "kling_o3": dict.fromkeys(TIERS, {"kwaivgi/kling-v3-omni-video"}),
    "kling_v25_turbo": dict.fromkeys(TIERS, {"kwaivgi/kling-v2.5-turbo-pro"}),
    # Seedance 1 Lite is seedance_v1's iteration tier on Replicate (as Veo 3.1 Fast is veo31's)
    "seedance_v1": {
        "iteration": {"bytedance/seedance-1-lite"},
        "standard": {"bytedance/seedance-1-pro"},
        "hero": {"bytedance/seedance-1-pro"},
    },
    "veo31": {  # reference images (shot-04) on the full model only
        "iteration": {"google/veo-3.1-fast", "google/veo-3.1"},
        "standard": {"google/veo-3.1-fast", "google/veo-3.1"},
        "hero": {"google/veo-3.1"},
    },
    "wan25": dict.fromkeys(TIERS, {"wan-video/wan-2.5-t2v", "wan-video/wan-2.5-i2v"}),
}
# Each family's own name for the first frame (shot-02: a keyframe only) and the end frame (shot-03).
REPLICATE_FRAMES = {
    "hailuo02": ("first_frame_image", "last_frame_image"),
    "kling_o3": ("start_image", "end_image"),
    "kling_v25_turbo": ("start_image", None),
    "seedance_v1": ("image", "last_frame_image"),
    "veo31": ("image", "last_frame"),
    "wan25": ("image", None),
}


def replicate_spec(compose_cfg, model: str, tier: str):
    cfg = OmegaConf.to_container(
        compose_cfg("provider=replicate", f"model={model}", f"tier={tier}"), resolve=True
    )
    return build_model_spec(cfg["model"], cfg["provider"], tier)


def replicate_store(tmp_path: Path) -> SchemaStore:
    """The fake Replicate server's hand-written documents, rooted at `Input` as the run's
    ReplicateSchemaSource roots them (no network)."""
    from aivp_batch.providers.replicate import endpoint_document
    from aivp_batch.testing.replicate_server import load_models

    store = SchemaStore(cache_dir=tmp_path / "cache", offline=True, bundled=None)
    for name, model in load_models().items():
        store.register(name, endpoint_document(model["latest_version"]["openapi_schema"], name))
    return store


def _toy(**blocks) -> dict:
    return {
        "name": "toy",
        "durations": [5],
        "tiers": {"standard": {"audio": True}},
        "pricing": {"unit": "second", "rates": [{"usd": 1.0}]},
        **blocks,
    }


def test_a_providers_own_pricing_wins_and_fal_keeps_the_top_level_one() -> None:
    modes = {"modes": {"t2v": {"endpoint": "x/y"}}, "fields": {"prompt": "prompt"}}
    own = {"unit": "second", "rates": [{"usd": 0.25}]}
    model = _toy(fal=dict(modes), replicate={**modes, "pricing": own})
    assert build_model_spec(model, {"name": "fal"}, "standard").pricing == model["pricing"]
    assert build_model_spec(model, {"name": "replicate"}, "standard").pricing == own
    fal_own = _toy(fal={**modes, "pricing": own})
    assert build_model_spec(fal_own, {"name": "fal"}, "standard").pricing == own


def test_a_provider_other_than_fal_never_inherits_fals_rates() -> None:
    model = _toy(replicate={"modes": {"t2v": {"endpoint": "x/y"}}})
    with pytest.raises(ConfigError) as caught:
        build_model_spec(model, {"name": "replicate"}, "standard")
    assert str(caught.value) == (
        "model=toy has no pricing for provider=replicate: add replicate.pricing to its model YAML "
        "(the top-level pricing is fal's)"
    )


def test_a_providers_tier_block_is_merged_over_the_models() -> None:
    block = {
        "modes": {"t2v": {"endpoint": "x/y{speed}"}},
        "pricing": {"unit": "free"},
        "tiers": {"standard": {"speed": "-fast", "durations": [4, 8]}},
    }
    model = _toy(replicate=block)
    model["tiers"]["standard"]["speed"] = "/fast"
    spec = build_model_spec(model, {"name": "replicate"}, "standard", {"audio": False})
    assert spec.modes["T2V"].endpoint == "x/y-fast" and spec.durations == (4, 8)
    assert spec.settings == {"audio": False, "speed": "-fast"}  # the user's override still wins
    with pytest.raises(ConfigError, match="replicate.tiers must map tier names"):
        build_model_spec(_toy(replicate={**block, "tiers": ["standard"]}), {"name": "replicate"}, "standard")


@pytest.mark.parametrize("tier", ["iteration", "standard", "hero"])
@pytest.mark.parametrize("model", REPLICATE_MODELS)
def test_every_replicate_mode_validates_against_its_document(compose_cfg, tmp_path, model, tier) -> None:
    spec = replicate_spec(compose_cfg, model, tier)
    plan = plan_jobs(fixed_storyboard(tmp_path), spec, provider="replicate", seed=3)
    assert not plan.errors, plan.errors
    validate_jobs(plan.jobs, replicate_store(tmp_path))
    by_key = {j.key: j for j in plan.jobs}
    assert by_key["shot-01"].mode == "T2V" and by_key["shot-02"].mode == "I2V"
    for job in plan.jobs:
        assert isinstance(job.payload["duration"], int)  # Replicate's durations are integers
        assert not any(k.endswith("_url") for k in job.payload), job.payload  # no fal field names
    if model == "veo31" and tier != "hero":
        assert by_key["shot-01"].endpoint == "google/veo-3.1-fast"
    assert {j.endpoint for j in plan.jobs} == REPLICATE_ENDPOINTS[model][tier]
    start, end = REPLICATE_FRAMES[model]
    assert set(by_key["shot-02"].files) == {start}
    assert set(by_key["shot-03"].files) == {start, end} - {None}
    if model == "kling_o3":  # Kling 3.0 Omni: portraits as reference_images, named in the prompt
        ref = by_key["shot-04"]
        assert ref.mode == "REF" and len(ref.payload["reference_images"]) == 2
        assert "<<<image_1>>>" in ref.prompt and ref.payload["generate_audio"] is (tier != "iteration")


@pytest.mark.parametrize("model", REPLICATE_MODELS)
def test_iteration_is_the_cheapest_tier_on_replicate(compose_cfg, tmp_path, model) -> None:
    shots = fixed_storyboard(tmp_path)
    totals = {
        tier: plan_jobs(
            shots, replicate_spec(compose_cfg, model, tier), provider="replicate", seed=1
        ).total_usd
        for tier in TIERS
    }
    assert totals["iteration"] <= totals["standard"] <= totals["hero"], totals
    if model != "kling_v25_turbo":  # one price for every tier
        assert totals["iteration"] < totals["standard"], totals
    if model not in ("kling_v25_turbo", "kling_o3"):  # Kling O3: hero is standard (Pro with audio)
        assert totals["standard"] < totals["hero"], totals


def test_replicate_models_are_priced_at_replicates_rates(compose_cfg, tmp_path) -> None:
    shots = fixed_storyboard(tmp_path)[:1]  # one 5 s text-to-video shot
    usd = {
        (model, tier): plan_jobs(
            shots, replicate_spec(compose_cfg, model, tier), provider="replicate", seed=1
        ).total_usd
        for model in REPLICATE_MODELS
        for tier in ("iteration", "standard", "hero")
    }
    # Veo 3.1 renders 6 s for a 5 s shot (4, 6 or 8): Fast without audio, Fast with, full with.
    assert [usd["veo31", t] for t in ("iteration", "standard", "hero")] == pytest.approx([0.6, 0.9, 2.4])
    # Seedance: 1 Lite at 480p, then 1 Pro at 720p and 1080p.
    assert [usd["seedance_v1", t] for t in TIERS] == pytest.approx([0.09, 0.3, 0.75])
    assert usd["kling_v25_turbo", "standard"] == pytest.approx(0.35)
    # Hailuo-02 renders 6 s for a 5 s shot (6 or 10): 512p, 768p, 1080p.
    assert [usd["hailuo02", t] for t in TIERS] == pytest.approx([0.102, 0.27, 0.48])
    # Kling 3.0 Omni: Pro without audio, then with (hero is standard).
    assert [usd["kling_o3", t] for t in TIERS] == pytest.approx([1.12, 1.68, 1.68])
    # Wan 2.5: 480p, 720p, 1080p. Text-to-video sends them as a size looked up with the aspect ratio.
    assert [usd["wan25", t] for t in TIERS] == pytest.approx([0.25, 0.5, 0.75])
    wan_t2v = [
        plan_jobs([replace(shots[0], aspect_ratio=ar)], replicate_spec(compose_cfg, "wan25", t),
                  provider="replicate", seed=1).jobs[0]
        for t in TIERS for ar in ("16:9", "9:16")
    ]  # fmt: skip
    assert [j.payload["size"] for j in wan_t2v] == [
        "832*480", "480*832", "1280*720", "720*1280", "1920*1080", "1080*1920"
    ]  # fmt: skip
    assert all("resolution" not in j.payload and "aspect_ratio" not in j.payload for j in wan_t2v)
    keyframe = fixed_storyboard(tmp_path)[1:2]
    wan_i2v = [
        plan_jobs(keyframe, replicate_spec(compose_cfg, "wan25", t), provider="replicate", seed=1).jobs[0]
        for t in TIERS
    ]
    assert [j.payload["resolution"] for j in wan_i2v] == ["480p", "720p", "1080p"]
    assert [j.estimate_usd for j in wan_i2v] == pytest.approx([0.25, 0.5, 0.75])
    fal_hero = plan_jobs(shots, spec_for(compose_cfg, "veo31", "hero"), provider="fal", seed=1)
    assert fal_hero.total_usd == pytest.approx(3.6)  # fal's own 4k rate, not Replicate's


def test_a_model_not_on_replicate_exits_2_with_one_line(tmp_path) -> None:
    proc = run_cli(
        f"project_dir={EXAMPLE}",
        "provider=replicate",
        "model=seedance_v2",
        "dry_run=true",
        "offline=true",
        cwd=tmp_path,
        env={"REPLICATE_API_TOKEN": "r8_unused"},
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "aivp-batch: error: model=seedance_v2 has no replicate endpoints; "
        "models on replicate: hailuo02, kling_o3, kling_v25_turbo, seedance_v1, veo31, wan25"
    ]


def test_a_model_only_on_replicate_exits_2_with_one_line_on_fal(tmp_path) -> None:
    proc = run_cli(f"project_dir={EXAMPLE}", "model=wan25", "dry_run=true", "offline=true", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "aivp-batch: error: model=wan25 has no fal endpoints; models on fal: hailuo02, kling_o3, "
        "kling_v25_turbo, kling_v26, kling_v3, seedance_v1, seedance_v15, seedance_v2, veo31"
    ]


# ---------------------------------------------------------------- multi-shot items as a JSON string


def test_replicate_kling_sends_multi_prompt_as_one_json_string(compose_cfg, tmp_path) -> None:
    """Kling 3.0 Omni on Replicate takes a group's shots as one JSON string of {prompt, duration}
    items (`items: {encode: json}` in the model YAML); on fal the same model takes a list."""
    from aivp_batch.planning import plan_multishot

    shots = fixed_storyboard(tmp_path)
    groups = [["shot-01", "shot-02"], ["shot-03", "shot-04"]]
    spec = replicate_spec(compose_cfg, "kling_o3", "hero")
    assert spec.multishot is not None and spec.multishot.items_encode == "json"
    plan = plan_multishot(shots, spec, provider="replicate", seed=1, groups=groups)
    assert not plan.errors and [j.key for j in plan.jobs] == ["group-01", "group-02"]
    validate_jobs(plan.jobs, replicate_store(tmp_path))
    text, ref = plan.jobs
    assert (text.mode, ref.mode) == ("T2V", "REF")  # group-02: its characters, and shot-03's keyframe
    assert set(ref.files) == {"start_image", "reference_images[0]", "reference_images[1]"}
    for job in plan.jobs:
        sent = job.payload["multi_prompt"]
        assert isinstance(sent, str) and job.payload["prompt"]  # Replicate requires a prompt beside it
        items = json.loads(sent)
        assert [set(item) for item in items] == [{"prompt", "duration"}] * 2
        assert [item["duration"] for item in items] == [5, 5] and job.payload["duration"] == 10
        assert [item["prompt"] for item in items] == list(job.shot_prompts)
        assert sent == json.dumps(items, ensure_ascii=False, separators=(",", ":"))
    fal = plan_multishot(
        shots, spec_for(compose_cfg, "kling_o3", "hero"), provider="fal", seed=1, groups=groups
    )
    assert [type(j.payload["multi_prompt"]) for j in fal.jobs] == [list, list]
    assert fal.jobs[0].payload["multi_prompt"][0]["duration"] == "5"


def test_an_unknown_items_encoding_is_refused(compose_cfg) -> None:
    cfg = OmegaConf.to_container(compose_cfg("provider=replicate", "model=kling_o3"), resolve=True)
    cfg["model"]["replicate"]["multishot"]["items"]["encode"] = "yaml"
    with pytest.raises(ConfigError, match=r"replicate.multishot.items.encode must be one of json"):
        build_model_spec(cfg["model"], cfg["provider"], "standard")


def test_a_values_table_maps_generic_values_and_reads_back() -> None:
    size = parse_field(
        {"field": "size", "key": "{resolution} {aspect_ratio}", "values": {"720p 9:16": "720*1280"}},
        "wan.size",
    )
    assert (
        size is not None
        and size.convert("9:16", {"resolution": "720p", "aspect_ratio": "9:16"}) == "720*1280"
    )
    with pytest.raises(ConfigError, match="size has no value for '720p 1:1': it takes 720p 9:16"):
        size.convert("1:1", {"resolution": "720p", "aspect_ratio": "1:1"})
    assert size.parse("720*1280", "resolution") == "720p" and size.parse("720*1280", "aspect_ratio") == "9:16"
    with pytest.raises(ValueError, match="none of"):
        size.parse("1*1", "resolution")
    with pytest.raises(ConfigError, match="values must be a table"):
        parse_field({"field": "size", "values": ["720*1280"]}, "wan.size")


def test_a_square_shot_on_wan_text_to_video_is_refused_before_spending(compose_cfg, tmp_path) -> None:
    shot = replace(fixed_storyboard(tmp_path)[0], aspect_ratio="1:1")
    plan = plan_jobs([shot], replicate_spec(compose_cfg, "wan25", "standard"), provider="replicate", seed=1)
    assert not plan.jobs and plan.errors == [
        "shot-01: model=wan25 wan-video/wan-2.5-t2v: size has no value for '720p 1:1': it takes "
        "480p 16:9, 480p 9:16, 720p 16:9, 720p 9:16, 1080p 16:9, 1080p 9:16"
    ]
