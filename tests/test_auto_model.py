"""`model=auto model.endpoint=…`: the field map derived from the endpoint's own schema.

The main test sets each hand-written model YAML aside: for every model, tier and mode endpoint, a
representative shot is planned once through the YAML's spec and once through `auto` (given only
the endpoint id and the YAML tier's `settings.*`), and the two payloads must be equal — or
schema-equivalent where a difference is a documented, legitimate choice (KNOWN_DIFFERENCES).
An endpoint that takes no duration (Hailuo-02 Pro) gets the YAML tier's `durations` as
`model.durations`, as a user must pass it. Not compared, because no schema states them: the YAMLs'
`rules` (list limits fal gives only in prose) and `renders` (what a field-less endpoint renders at,
for the estimate), and the pricing rule.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import EXAMPLE, REPO, has_fal_document, write_png
from omegaconf import OmegaConf

from aivp_batch.auto_model import build_auto_spec, derive_fields, format_derived, pricing_from_unit_price
from aivp_batch.errors import ConfigError
from aivp_batch.models import FLF, I2V, REF, T2V, build_model_spec
from aivp_batch.planning import plan_jobs
from aivp_batch.providers.base import UnitPrice
from aivp_batch.schema_store import SchemaStore
from aivp_batch.shots import Shot

CONF = REPO / "aivp_batch/conf/model"
TIERS = ("iteration", "standard", "hero")
# seedance_v1: its OpenAPI documents are not in the bundled snapshot, so offline there is no
# schema to derive from (and none to validate the YAML's payloads against either).
NOT_BUNDLED = {"seedance_v1"}
# Differences between the YAML payload and the derived one that are legitimate, by model: field.
KNOWN_DIFFERENCES = {
    # The YAML leaves out `seed` on purpose: fal's August 2026 schema for Seedance 2.0 dropped it.
    # The bundled (June 2026) snapshot still lists it, and auto follows the schema it resolves —
    # against a live document without `seed` it sends none either.
    "seedance_v2": {"seed"},
}


def hand_written_models() -> list[str]:
    return sorted(p.stem for p in CONF.glob("*.yaml") if p.stem != "auto")


def retired(model: str) -> bool:
    return bool(OmegaConf.load(CONF / f"{model}.yaml").get("retired"))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """Keyframes and two characters with a front and a side portrait each (a Kling element needs both)."""
    for i, name in enumerate(("frames/shot-01-ff", "frames/shot-01-lf")):
        write_png(tmp_path / f"image/{name}.png", (1280, 720), (30 * i, 60, 90))
    for i, name in enumerate(("elena-front", "elena-side", "marco-front", "marco-side")):
        write_png(tmp_path / f"image/characters/{name}.png", (768, 1024), (10 + 40 * i, 20, 30))
    return tmp_path


def shot_for(mode: str, project: Path) -> Shot:
    """A representative shot for a mode, with every optional generic value set (portraits too:
    Kling 3.0's I2V takes them as elements)."""
    frames, chars = project / "image/frames", tuple(sorted((project / "image/characters").glob("*.png")))
    extra: dict = {"characters": ("Elena", "Marco"), "character_refs": chars}
    if mode in (I2V, FLF):
        extra["start_frame"] = frames / "shot-01-ff.png"
    if mode == FLF:
        extra["end_frame"] = frames / "shot-01-lf.png"
    if mode == T2V:
        extra = {}
    return Shot(
        id="shot-01",
        number=1,
        prompts={
            "seedance": "0-3秒：镜头缓缓推进，@图片1 转身",
            "kling": "[Camera: push in] Elena turns.",
            "motion": "Slow push in as the woman turns.",
        },
        duration_s=5,
        aspect_ratio="16:9",
        camera_fixed=True,
        negative_prompt="blurry, warped hands",
        **extra,
    )


@pytest.fixture
def store(tmp_path: Path) -> SchemaStore:
    return SchemaStore(cache_dir=tmp_path / "cache", offline=True)  # the bundled snapshot


def composed(compose_cfg, *overrides: str) -> dict:
    return OmegaConf.to_container(compose_cfg(*overrides), resolve=True)


def auto_spec(compose_cfg, store, tier: str, settings: dict | None = None, **model):
    cfg = composed(compose_cfg, "model=auto", f"tier={tier}")
    return build_auto_spec({**cfg["model"], **model}, cfg["provider"], tier, settings, store)


def modes_to_check(spec) -> list[tuple[str, str]]:
    """(mode of the shot, mode key of the endpoint): an I2V endpoint with an end frame serves FLF too."""
    out = [(mode, mode) for mode in spec.modes]
    if FLF not in spec.modes and spec.supports_end_frame(I2V):
        out.append((FLF, I2V))
    return out


def comparable_models() -> list[str]:
    """Every hand-written model but those with nothing to compare against offline: seedance_v1
    (its schemas are not in the bundled snapshot), retired ones (no endpoints) and those with no
    fal endpoints (wan25: Replicate only)."""
    return [
        m
        for m in hand_written_models()
        if m not in NOT_BUNDLED and not retired(m) and OmegaConf.load(CONF / f"{m}.yaml").get("fal")
    ]


def test_the_models_left_out_of_the_comparison_are_only_those() -> None:
    assert sorted(set(hand_written_models()) - set(comparable_models())) == ["seedance_v1", "sora2", "wan25"]


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("model", comparable_models())
def test_auto_derives_the_payloads_of_every_hand_written_model(
    compose_cfg, project, store, model, tier
) -> None:
    cfg = composed(compose_cfg, f"model={model}", f"tier={tier}")
    yaml_spec = build_model_spec(cfg["model"], cfg["provider"], tier)
    allowed = KNOWN_DIFFERENCES.get(model, set())
    for shot_mode, key in modes_to_check(yaml_spec):
        mode_spec = yaml_spec.modes[key]
        endpoint = mode_spec.endpoint
        assert has_fal_document(endpoint), endpoint
        extra = {} if "duration" in mode_spec.fields else {"durations": list(mode_spec.durations)}
        auto = auto_spec(compose_cfg, store, tier, yaml_spec.settings, endpoint=endpoint, **extra)
        assert [m.endpoint for m in auto.spec.modes.values()] == [endpoint]
        assert auto.spec.min_image_px == yaml_spec.min_image_px
        shot = shot_for(shot_mode, project)
        [want] = plan_jobs([shot], yaml_spec, provider="fal", seed=7).jobs
        plan = plan_jobs([shot], auto.spec, provider="fal", seed=7)
        assert not plan.errors, plan.errors
        [got] = plan.jobs
        where = f"{model}/{tier}/{shot_mode} {endpoint}"
        assert (got.mode, got.endpoint, got.duration_s) == (want.mode, want.endpoint, want.duration_s), where
        schema = store.get(endpoint)
        for job in (want, got):
            assert not schema.validate(job.payload), (where, schema.validate(job.payload))
            assert not schema.unknown_keys(job.payload), where
        common = want.payload.keys() & got.payload.keys()
        assert {k: got.payload[k] for k in common} == {k: want.payload[k] for k in common}, where
        assert set(want.payload) ^ set(got.payload) <= allowed, (where, set(want.payload) ^ set(got.payload))
        assert got.files == want.files, where
        assert bool(got.notes) == bool(want.notes), where  # the same portraits/end frame left unused
        if not (set(want.payload) ^ set(got.payload)):
            assert got.identity == want.identity, where  # the same render: never paid for twice


def test_auto_tiers_pick_the_lowest_and_highest_resolution(compose_cfg, store) -> None:
    endpoint = "fal-ai/bytedance/seedance/v1.5/pro/image-to-video"
    low = auto_spec(compose_cfg, store, "iteration", endpoint=endpoint).spec.modes[I2V].settings
    high = auto_spec(compose_cfg, store, "hero", endpoint=endpoint).spec.modes[I2V].settings
    assert (low["resolution"], low["audio"]) == ("480p", False)
    assert (high["resolution"], high["audio"]) == ("1080p", True)
    standard = auto_spec(compose_cfg, store, "standard", endpoint=endpoint).spec.modes[I2V].settings
    assert "resolution" not in standard  # the endpoint's own default
    override = auto_spec(compose_cfg, store, "hero", {"resolution": "720p"}, endpoint=endpoint)
    assert override.spec.modes[I2V].settings["resolution"] == "720p"
    kling = auto_spec(compose_cfg, store, "hero", endpoint="fal-ai/kling-video/v3/pro/text-to-video")
    assert "resolution" not in kling.spec.modes[T2V].settings  # takes none


def test_kling_v3_image_to_video_takes_character_elements(compose_cfg, store, project) -> None:
    auto = auto_spec(compose_cfg, store, "standard", endpoint="fal-ai/kling-video/v3/pro/image-to-video")
    mode = auto.spec.modes[I2V]
    assert mode.fields["character_refs"].field == "elements" and mode.ref_token == "@Element{n}"
    [job] = plan_jobs([shot_for(I2V, project)], auto.spec, provider="fal", seed=1).jobs
    assert [sorted(e) for e in job.payload["elements"]] == [["frontal_image_url", "reference_image_urls"]] * 2
    assert "@Element1" in job.prompt


def test_modes_from_id_and_fields(compose_cfg, store) -> None:
    def modes(endpoint: str) -> list[str]:
        return list(auto_spec(compose_cfg, store, "standard", endpoint=endpoint).spec.modes)

    assert modes("fal-ai/veo3.1") == [T2V]
    assert modes("fal-ai/veo3.1/fast/first-last-frame-to-video") == [FLF]
    assert modes("fal-ai/kling-video/o3/pro/reference-to-video") == [REF]
    spec = auto_spec(
        compose_cfg, store, "standard", endpoint="fal-ai/kling-video/v2.5-turbo/pro/image-to-video"
    )
    assert list(spec.spec.modes) == [I2V] and spec.spec.supports_end_frame(I2V)
    assert spec.spec.modes[I2V].fields["end_frame"].field == "tail_image_url"


def test_endpoints_per_mode(compose_cfg, store, project) -> None:
    with pytest.raises(ConfigError, match="needs tier setting 'speed'"):
        build_auto_spec(
            {"name": "auto", "auto": True, "endpoints": {"t2v": "fal-ai/veo3.1{speed}"}, "tiers": {"x": {}}},
            {"name": "fal"},
            "x",
            None,
            store,
        )
    auto = auto_spec(
        compose_cfg,
        store,
        "iteration",
        {"speed": "/fast"},
        endpoints={"t2v": "fal-ai/veo3.1{speed}", "i2v": "fal-ai/veo3.1{speed}/image-to-video"},
        pricing={"unit": "second", "rates": [{"usd": 0.1}]},
    )
    assert not auto.warnings  # priced: no "no price known"
    assert {m: s.endpoint for m, s in auto.spec.modes.items()} == {
        T2V: "fal-ai/veo3.1/fast",
        I2V: "fal-ai/veo3.1/fast/image-to-video",
    }
    plan = plan_jobs([shot_for(T2V, project), shot_for(I2V, project)], auto.spec, provider="fal", seed=1)
    assert [j.mode for j in plan.jobs] == [T2V, I2V]
    assert [j.estimate_usd for j in plan.jobs] == [0.6, 0.6]  # 5 s raised to 6 s × $0.10
    assert plan.jobs[0].payload["duration"] == "6s" and plan.jobs[0].payload["resolution"] == "720p"


def _document(properties: dict, required: list[str]) -> dict:
    return {
        "openapi": "3.0.4",
        "components": {
            "schemas": {"NewVideoInput": {"type": "object", "properties": properties, "required": required}}
        },
    }


def test_new_endpoint_spellings(compose_cfg, store, project) -> None:
    """A model fal adds next month: other field names, an integer duration range, `with_audio`."""
    store.register(
        "fal-ai/acme/v3/image-to-video",
        _document(
            {
                "prompt": {"type": "string"},
                "first_frame_url": {"type": "string"},
                "last_frame_url": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "duration": {"type": "integer", "minimum": 2, "maximum": 8},
                "with_audio": {"type": "boolean"},
                "size": {"type": "string", "enum": ["720p", "1080p"]},
                "seed": {"type": "integer"},
            },
            ["prompt", "first_frame_url", "size"],
        ),
    )
    auto = auto_spec(compose_cfg, store, "hero", endpoint="fal-ai/acme/v3/image-to-video")
    mode = auto.spec.modes[I2V]
    assert {g: (f.field, f.format, f.type) for g, f in mode.fields.items()} == {
        "prompt": ("prompt", None, None),
        "start_frame": ("first_frame_url", None, None),
        "end_frame": ("last_frame_url", None, None),
        "duration": ("duration", None, "int"),
        "audio": ("with_audio", None, None),
        "seed": ("seed", None, None),
    }
    assert mode.durations == (2, 3, 4, 5, 6, 7, 8)
    [job] = plan_jobs([shot_for(FLF, project)], auto.spec, provider="fal", seed=3).jobs
    assert job.mode == FLF and job.payload["duration"] == 5 and job.payload["with_audio"] is True
    shown = format_derived(auto)
    assert "auto I2V+FLF fal-ai/acme/v3/image-to-video" in shown
    assert "duration         → duration (integer, 2, 3, 4, 5, 6, 7, 8)" in shown
    assert "unfilled           required size" in shown
    assert any("no price known" in w and "model.pricing" in w for w in auto.warnings)
    assert job.estimate_usd == 0


def test_string_durations_with_suffix_and_plain(store) -> None:
    for values, fmt, sent in ((["4s", "8s"], "{}s", "8s"), (["5", "10"], "{}", "10"), ([5, 10], None, 10)):
        kind = "string" if isinstance(values[0], str) else "integer"
        store.register(
            "x/t2v", _document({"prompt": {"type": "string"}, "duration": {"type": kind, "enum": values}}, [])
        )
        store._memo.pop("x/t2v", None)
        schema = store.get("x/t2v")
        spec = derive_fields(schema, T2V)["duration"]
        assert spec.format == fmt and spec.convert(int(str(values[-1]).rstrip("s"))) == sent


def test_clear_errors(compose_cfg, store) -> None:
    with pytest.raises(ConfigError, match="needs the endpoint to derive from: model.endpoint="):
        auto_spec(compose_cfg, store, "standard")
    with pytest.raises(ConfigError, match="takes no duration; pass model.durations="):
        auto_spec(compose_cfg, store, "hero", endpoint="fal-ai/minimax/hailuo-02/pro/image-to-video")
    fixed = auto_spec(
        compose_cfg, store, "hero", endpoint="fal-ai/minimax/hailuo-02/pro/image-to-video", durations=[6]
    )
    assert fixed.spec.modes[I2V].durations == (6,)
    with pytest.raises(ConfigError, match="no prompt field"):
        store.register("x/upscale", _document({"video_url": {"type": "string"}}, ["video_url"]))
        auto_spec(compose_cfg, store, "standard", endpoint="x/upscale")


def test_pricing_from_fals_unit_price() -> None:
    def rule(price: float, unit: str) -> tuple | None:
        found = pricing_from_unit_price(UnitPrice(price, unit, "USD"))
        return None if found is None else (found["unit"], found["rates"][0]["usd"])

    assert rule(0.07, "seconds") == ("second", 0.07)
    assert rule(0.5, "5 seconds") == ("second", 0.1)
    assert rule(0.4, "video") == ("video", 0.4)
    assert rule(2.4, "1m tokens") is None


def test_dry_run_shows_the_derived_map(compose_cfg, tmp_path, capsys) -> None:
    from aivp_batch.app import build_plan, resolve_paths

    cfg = compose_cfg(
        "model=auto",
        "model.endpoint=fal-ai/kling-video/v2.6/pro/image-to-video",
        "model.pricing={unit: second, rates: [{usd: 0.07}]}",
        f"project_dir={EXAMPLE}",
        f"output_dir={tmp_path / 'out'}",
        f"schema_cache_dir={tmp_path / 'cache'}",
        "offline=true",
        "dry_run=true",
        "shots=[1]",
    )
    plan, problems, _ = build_plan(cfg, resolve_paths(cfg, tmp_path))
    out, err = capsys.readouterr()
    assert "auto I2V+FLF fal-ai/kling-video/v2.6/pro/image-to-video" in out
    assert "start_frame      → start_image_url (string; required)" in out
    assert "duration         → duration (string, '5', '10')" in out
    assert "no price known" not in err
    assert [j.endpoint for j in plan.jobs] == ["fal-ai/kling-video/v2.6/pro/image-to-video"]
    assert plan.jobs[0].estimate_usd > 0
