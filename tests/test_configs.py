"""Every provider × model × tier composes; every fal model resolves to endpoints that exist."""

from __future__ import annotations

import pytest
from conftest import REPO, has_fal_document
from omegaconf import OmegaConf

from aivp_batch.errors import ConfigError
from aivp_batch.models import build_model_spec

# Hand-written model YAMLs; `auto` derives its map from an endpoint schema (tests/test_auto_model.py).
MODELS = sorted(p.stem for p in (REPO / "aivp_batch/conf/model").glob("*.yaml") if p.stem != "auto")
TIERS = ["iteration", "standard", "hero"]
PROVIDERS = ["fal", "preview", "replicate", "local"]
# The models with a `replicate:` block, and the Replicate model ids they use (all of them served,
# with a hand-written schema, by the fake server: aivp_batch/testing/replicate_schemas/).
ON_REPLICATE = {
    "hailuo02": {"minimax/hailuo-02"},
    "kling_o3": {"kwaivgi/kling-v3-omni-video"},
    "kling_v25_turbo": {"kwaivgi/kling-v2.5-turbo-pro"},
    "seedance_v1": {"bytedance/seedance-1-pro", "bytedance/seedance-1-lite"},
    "veo31": {"google/veo-3.1", "google/veo-3.1-fast"},
    "wan25": {"wan-video/wan-2.5-t2v", "wan-video/wan-2.5-i2v"},
}
ONLY_ON_REPLICATE = {"wan25"}  # no fal block


def test_every_model_in_the_issue_is_configured() -> None:
    assert set(MODELS) == {
        "seedance_v15",
        "seedance_v1",
        "seedance_v2",
        "kling_o3",
        "kling_v3",
        "kling_v26",
        "kling_v25_turbo",
        "veo31",
        "sora2",
        "hailuo02",
        "wan25",
    }


def test_defaults(compose_cfg) -> None:
    cfg = compose_cfg()
    assert (cfg.provider.name, cfg.model.name, cfg.tier.name, cfg.manifest.kind) == (
        "fal",
        "seedance_v15",
        "standard",
        "storyboard",
    )
    assert cfg.seed is None and cfg.dry_run is False and cfg.budget_usd == cfg.tier.budget_usd


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("tier", TIERS)
def test_compose_every_combination(compose_cfg, provider: str, model: str, tier: str) -> None:
    cfg = compose_cfg(f"provider={provider}", f"model={model}", f"tier={tier}")
    container = OmegaConf.to_container(cfg, resolve=True)
    assert container["model"]["name"] == model and container["tier"]["name"] == tier
    if not container["provider"]["available"]:
        return
    if container["model"].get("retired"):  # sora2: kept only to say it is gone (it has no endpoints)
        with pytest.raises(ConfigError, match=f"model={model} is retired: .*use model="):
            build_model_spec(container["model"], container["provider"], tier)
        return
    if provider == "replicate" and model not in ON_REPLICATE:
        with pytest.raises(ConfigError) as caught:
            build_model_spec(container["model"], container["provider"], tier)
        served = ", ".join(sorted(ON_REPLICATE))
        assert str(caught.value) == f"model={model} has no replicate endpoints; models on replicate: {served}"
        return
    if provider == "fal" and model in ONLY_ON_REPLICATE:
        with pytest.raises(ConfigError, match=f"^model={model} has no fal endpoints; models on fal: "):
            build_model_spec(container["model"], container["provider"], tier)
        return
    spec = build_model_spec(container["model"], container["provider"], tier)
    assert "T2V" in spec.modes and spec.durations
    if provider == "replicate":
        assert {m.endpoint for m in spec.modes.values()} <= ON_REPLICATE[model]
        assert spec.pricing == container["model"]["replicate"]["pricing"]  # its own rates, never fal's
    for mode in spec.modes.values():
        assert mode.durations and "{" not in mode.endpoint
        # Seedance 1.0's schema is not in the snapshot (it is fetched at run time); sora2 is retired.
        if provider == "fal" and model != "seedance_v1":
            assert has_fal_document(mode.endpoint), f"{model}/{tier}/{mode.mode}: {mode.endpoint}"


def test_hero_kling_o3_means_pro_with_audio(compose_cfg) -> None:
    cfg = OmegaConf.to_container(compose_cfg("model=kling_o3", "tier=hero"), resolve=True)
    spec = build_model_spec(cfg["model"], cfg["provider"], "hero")
    assert all("/pro/" in m.endpoint for m in spec.modes.values())
    assert spec.settings["audio"] is True
    iteration = build_model_spec(cfg["model"], cfg["provider"], "iteration")
    assert "/standard/" in iteration.modes["REF"].endpoint


def test_tier_variants_pick_endpoints(compose_cfg) -> None:
    cfg = OmegaConf.to_container(compose_cfg("model=veo31"), resolve=True)
    assert (
        build_model_spec(cfg["model"], cfg["provider"], "iteration").modes["T2V"].endpoint
        == "fal-ai/veo3.1/fast"
    )
    assert build_model_spec(cfg["model"], cfg["provider"], "hero").modes["T2V"].endpoint == "fal-ai/veo3.1"
    hailuo = OmegaConf.to_container(compose_cfg("model=hailuo02"), resolve=True)
    hero = build_model_spec(hailuo["model"], hailuo["provider"], "hero")
    assert hero.modes["I2V"].endpoint == "fal-ai/minimax/hailuo-02/pro/image-to-video"
    assert "duration" not in hero.modes["I2V"].fields and hero.durations == (6,)


def test_reserved_provider_is_a_clear_error(compose_cfg, tmp_path) -> None:
    from aivp_batch.app import build_plan, resolve_paths

    cfg = compose_cfg("provider=local", f"project_dir={REPO / 'examples/short-film'}")
    with pytest.raises(ConfigError, match="provider=local is reserved"):
        build_plan(cfg, resolve_paths(cfg, tmp_path))


def test_model_without_provider_endpoints(compose_cfg) -> None:
    cfg = OmegaConf.to_container(compose_cfg("model=seedance_v2"), resolve=True)
    with pytest.raises(ConfigError) as caught:
        build_model_spec(cfg["model"], {"name": "replicate"}, "standard")
    assert str(caught.value) == (
        "model=seedance_v2 has no replicate endpoints; models on replicate: hailuo02, kling_o3, "
        "kling_v25_turbo, seedance_v1, veo31, wan25"
    )
    assert "\n" not in str(caught.value)


def test_models_on_a_provider_come_from_the_model_yamls() -> None:
    from aivp_batch.models import models_on

    assert models_on("replicate") == sorted(ON_REPLICATE)
    assert set(models_on("fal")) == set(MODELS) - {"sora2"} - ONLY_ON_REPLICATE  # sora2 is retired
    assert models_on("nowhere") == []


def test_replicate_tiers_pick_the_model_and_its_resolution(compose_cfg) -> None:
    cfg = OmegaConf.to_container(compose_cfg("provider=replicate", "model=veo31"), resolve=True)
    iteration = build_model_spec(cfg["model"], cfg["provider"], "iteration")
    hero = build_model_spec(cfg["model"], cfg["provider"], "hero")
    assert {m.mode: m.endpoint for m in iteration.modes.values()} == {
        "T2V": "google/veo-3.1-fast",
        "I2V": "google/veo-3.1-fast",
        "REF": "google/veo-3.1",
    }
    assert iteration.settings == {"speed": "-fast", "resolution": "720p", "audio": False}
    assert hero.modes["T2V"].endpoint == "google/veo-3.1" and hero.settings["resolution"] == "1080p"
    # fal's own tiers are untouched by the replicate block
    fal = build_model_spec(cfg["model"], {"name": "fal"}, "hero")
    assert fal.modes["T2V"].endpoint == "fal-ai/veo3.1" and fal.settings["resolution"] == "4k"
