"""Multi-shot grouping: consecutive shots of one scene, at most 6 a call, their lengths within what
the call takes; a stated grouping is honoured or refused, never silently changed; a shot no group
holds renders alone, saying why."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO, fal_document
from omegaconf import OmegaConf

from aivp_batch.errors import ConfigError
from aivp_batch.grouping import Fallback, Group, group_shots, read_scene_settings, scene_setting, shots_of
from aivp_batch.models import MultishotLimits, build_model_spec
from aivp_batch.openapi import EndpointSchema
from aivp_batch.shots import Shot

LIMITS = MultishotLimits(max_shots=6, shot_durations=tuple(range(1, 16)), total_durations=tuple(range(3, 16)))


def shot(n: int, scene: str | None = "kitchen", duration: float | None = 2, **kw) -> Shot:
    return Shot(id=f"shot-{n:02d}", number=n, scene=scene, duration_s=duration, prompts={"kling": "x"}, **kw)


def layout(items) -> list[tuple[str, ...] | str]:
    """Groups as tuples of shot numbers' ids, fallbacks as the bare id."""
    return [tuple(s.id for s in i.shots) if isinstance(i, Group) else i.shot.id for i in items]


def sizes(items) -> list[int]:
    return [len(i.shots) if isinstance(i, Group) else 1 for i in items]


# ---------------------------------------------------------------- the rules


def test_consecutive_shots_of_one_scene_are_one_group() -> None:
    [group] = group_shots([shot(1), shot(2, duration=3), shot(3, duration=4)], LIMITS)
    assert isinstance(group, Group)
    assert (group.key, group.number, group.scene) == ("group-01", 1, "kitchen")
    assert group.durations == (2, 3, 4) and group.total_s == 9 and group.cuts_s == (0, 2, 5)
    assert group.notes == () and group.label is None


def test_a_group_never_crosses_a_scene_boundary() -> None:
    items = group_shots([shot(1), shot(2), shot(3, "street"), shot(4, "street")], LIMITS)
    assert layout(items) == [("shot-01", "shot-02"), ("shot-03", "shot-04")]
    assert [i.key for i in items] == ["group-01", "group-02"]


def test_a_shot_alone_in_its_scene_renders_alone() -> None:
    items = group_shots([shot(1, "hall"), shot(2), shot(3)], LIMITS)
    assert layout(items) == ["shot-01", ("shot-02", "shot-03")]
    assert isinstance(items[0], Fallback) and "alone in its scene" in items[0].reason
    assert items[1].key == "group-01"  # groups are numbered among themselves


def test_seven_shots_split_balanced_not_six_and_one() -> None:
    items = group_shots([shot(n, duration=1) for n in range(1, 8)], LIMITS)
    assert sizes(items) == [4, 3] and all(isinstance(i, Group) for i in items)
    assert shots_of(items) == [shot(n, duration=1) for n in range(1, 8)]


def test_as_few_calls_as_possible_then_balanced() -> None:
    assert sizes(group_shots([shot(n, duration=1) for n in range(1, 14)], LIMITS)) == [5, 4, 4]
    assert sizes(group_shots([shot(n, duration=1) for n in range(1, 7)], LIMITS)) == [6]


def test_the_total_stays_within_the_call() -> None:
    # 4 × 5 s: three fit in 15 s, but 3 + 1 leaves a shot alone; 2 + 2 does not.
    items = group_shots([shot(n, duration=5) for n in range(1, 5)], LIMITS)
    assert sizes(items) == [2, 2] and all(i.total_s <= 15 for i in items)
    items = group_shots([shot(1, duration=8), shot(2, duration=8), shot(3, duration=7)], LIMITS)
    assert layout(items) == ["shot-01", ("shot-02", "shot-03")]
    assert "no neighbour of its scene fits" in items[0].reason


def test_a_shot_longer_than_a_call_falls_back_and_splits_its_run() -> None:
    items = group_shots([shot(1), shot(2), shot(3, duration=16), shot(4), shot(5)], LIMITS)
    assert layout(items) == [("shot-01", "shot-02"), "shot-03", ("shot-04", "shot-05")]
    assert items[1].reason == "its 16s is longer than one multi-shot call holds (15s in all)"


def test_lengths_are_raised_to_allowed_ones_and_said() -> None:
    [group] = group_shots([shot(1, duration=2.5), shot(2, duration=None)], LIMITS)
    assert group.durations == (3, 5)
    assert group.notes == (
        "shot-01: raised 2.5s → 3s (allowed per shot: 1–15s)",
        "shot-02: no duration in the shot; using 5s",
    )


def test_strict_policy_leaves_an_odd_length_alone() -> None:
    items = group_shots([shot(1, duration=2.5), shot(2), shot(3)], LIMITS, policy="strict")
    assert layout(items) == ["shot-01", ("shot-02", "shot-03")]
    assert "duration_policy=strict" in items[0].reason
    with pytest.raises(ConfigError, match="duration_policy=sloppy"):
        group_shots([shot(1)], LIMITS, policy="sloppy")


def test_a_group_under_the_calls_minimum_gets_its_last_shot_raised() -> None:
    [group] = group_shots([shot(1, duration=1), shot(2, duration=1)], LIMITS)
    assert group.durations == (1, 2) and group.total_s == 3
    assert group.notes[-1] == (
        "shot-02: raised 1s → 2s: the group's 2s is not a length one call takes (allowed: 3–15s)"
    )


def test_only_neighbours_in_the_storyboard_are_grouped() -> None:
    # shots=[1,3]: shot 2 is not in the run, so 1 and 3 are not consecutive.
    assert layout(group_shots([shot(1), shot(3)], LIMITS)) == ["shot-01", "shot-03"]


def test_shots_without_a_scene_or_with_another_aspect_are_not_grouped() -> None:
    items = group_shots([shot(1, None), shot(2, None)], LIMITS)
    assert layout(items) == ["shot-01", "shot-02"] and "has no scene" in items[0].reason
    items = group_shots(
        [shot(1, aspect_ratio="16:9"), shot(2, aspect_ratio="9:16"), shot(3, aspect_ratio="9:16")], LIMITS
    )
    assert layout(items) == ["shot-01", ("shot-02", "shot-03")]


def test_scene_names_compare_loosely() -> None:
    [group] = group_shots([shot(1, "Kitchen Morning"), shot(2, "kitchen-morning")], LIMITS)
    assert len(group.shots) == 2


# ---------------------------------------------------------------- a stated grouping


def test_group_labels_are_honoured_and_the_rest_grouped_around_them() -> None:
    shots = [shot(1, group="a"), shot(2, group="a"), shot(3), shot(4), shot(5, group="b"), shot(6, group="b")]
    items = group_shots(shots, LIMITS)
    assert layout(items) == [("shot-01", "shot-02"), ("shot-03", "shot-04"), ("shot-05", "shot-06")]
    assert [i.label for i in items] == ["a", None, "b"]
    assert [i.key for i in items] == ["group-01", "group-02", "group-03"]


def test_a_grouping_list_is_honoured() -> None:
    shots = [shot(n) for n in range(1, 5)]
    items = group_shots(shots, LIMITS, explicit=[["shot-02", "shot-03"]])
    assert layout(items) == ["shot-01", ("shot-02", "shot-03"), "shot-04"]
    assert items[1].label == "#1"
    # a shot not selected in this run is left out of its stated group
    assert layout(group_shots(shots[:3], LIMITS, explicit=[["shot-03", "shot-04"]])) == [
        ("shot-01", "shot-02"),
        "shot-03",
    ]


def test_a_label_on_one_shot_makes_it_render_alone() -> None:
    items = group_shots([shot(1), shot(2, group="solo"), shot(3)], LIMITS)
    assert layout(items) == ["shot-01", "shot-02", "shot-03"]
    assert items[1].reason == "its group 'solo' holds no other shot"


@pytest.mark.parametrize(
    "shots, message",
    [
        ([shot(1, group="a"), shot(2, "street", group="a")], "shot-01 and shot-02 are in different scenes"),
        ([shot(1, group="a"), shot(2), shot(3, group="a")], "shot-01 and shot-03 are not consecutive shots"),
        ([shot(n, duration=1, group="a") for n in range(1, 8)], "7 shots; one call takes at most 6"),
        (
            [shot(1, duration=9, group="a"), shot(2, duration=9, group="a")],
            "18s in all; one call takes at most 15s",
        ),
        (
            [shot(1, duration=20, group="a"), shot(2, group="a")],
            "shot-01 cannot be in a group: its 20s is longer",
        ),
        (
            [shot(1, aspect_ratio="16:9", group="a"), shot(2, aspect_ratio="1:1", group="a")],
            "different aspect ratios (16:9 / 1:1)",
        ),
    ],
)
def test_a_stated_group_that_breaks_a_rule_is_refused(shots, message) -> None:
    with pytest.raises(ConfigError) as err:
        group_shots(shots, LIMITS)
    assert message in str(err.value)
    assert str(err.value).startswith("multi-shot group 'a' (")


def test_a_shot_in_two_stated_groups_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"shot-02: in two multi-shot groups \('a' and groups\[1\]\)"):
        group_shots([shot(1, group="a"), shot(2, group="a")], LIMITS, explicit=[["shot-02"]])


def test_a_stated_group_without_scenes_is_allowed() -> None:
    [group] = group_shots([shot(1, None, group="x"), shot(2, None, group="x")], LIMITS)
    assert group.scene is None and len(group.shots) == 2


# ---------------------------------------------------------------- scene settings


def test_scene_settings_are_read_from_the_script(tmp_path: Path) -> None:
    scenes = tmp_path / "script/scenes"
    scenes.mkdir(parents=True)
    (scenes / "kitchen-morning.md").write_text(
        "# Scene 1 — Kitchen\n\n## Setting\n\nA warm wooden kitchen at sunrise,\n"
        "pale light through the window.\n\n## Beats\n\nElena pours coffee.\n",
        encoding="utf-8",
    )
    (scenes / "s2.md").write_text(
        "| Field | Value |\n|---|---|\n| Scene | Harbour Night |\n| Setting | A stormy harbour at night |\n",
        encoding="utf-8",
    )
    (scenes / "s3.md").write_text("**Location**: a rooftop\n", encoding="utf-8")
    (scenes / "s4.md").write_text("Nothing about where it happens.\n", encoding="utf-8")
    settings = read_scene_settings(tmp_path)
    assert (
        scene_setting(settings, "Kitchen Morning")
        == "A warm wooden kitchen at sunrise, pale light through the window."
    )
    assert scene_setting(settings, "harbour night") == "A stormy harbour at night"
    assert scene_setting(settings, "s3") == "a rooftop"
    assert scene_setting(settings, "s4") is None and scene_setting(settings, None) is None
    assert read_scene_settings(tmp_path / "nowhere") == {} and read_scene_settings(None) == {}


# ---------------------------------------------------------------- limits from the model configs


@pytest.mark.parametrize("model", ["kling_o3", "kling_v3"])
@pytest.mark.parametrize("tier", ["iteration", "hero"])
def test_multishot_limits_agree_with_every_endpoints_schema(compose_cfg, model: str, tier: str) -> None:
    cfg = OmegaConf.to_container(compose_cfg(f"model={model}", f"tier={tier}"), resolve=True)
    multishot = build_model_spec(cfg["model"], cfg["provider"], tier).multishot
    assert multishot is not None and multishot.limits.max_shots == 6
    for mode in multishot.modes.values():
        schema = EndpointSchema(mode.endpoint, fal_document(mode.endpoint))
        assert schema.allowed_values("multi_prompt[0].duration") == [
            str(d) for d in multishot.limits.shot_durations
        ]
        assert schema.allowed_values("duration") == [str(d) for d in multishot.limits.total_durations]
        assert {"multi_prompt", "shot_type"} <= set(schema.properties)
        assert "customize" in schema.allowed_values("shot_type")


def test_group_endpoints_per_model(compose_cfg) -> None:
    def modes(model: str, tier: str = "hero") -> dict[str, tuple[str, bool, bool]]:
        cfg = OmegaConf.to_container(compose_cfg(f"model={model}", f"tier={tier}"), resolve=True)
        multishot = build_model_spec(cfg["model"], cfg["provider"], tier).multishot
        return {
            m: (s.endpoint, s.takes("character_refs"), s.takes("start_frame"))
            for m, s in multishot.modes.items()
        }

    assert modes("kling_o3") == {
        "T2V": ("fal-ai/kling-video/o3/pro/text-to-video", False, False),
        "I2V": ("fal-ai/kling-video/o3/pro/image-to-video", False, True),
        "REF": ("fal-ai/kling-video/o3/pro/reference-to-video", True, True),
    }
    assert modes("kling_o3", "iteration")["REF"][0] == "fal-ai/kling-video/o3/standard/reference-to-video"
    assert modes("kling_v3") == {
        "T2V": ("fal-ai/kling-video/v3/pro/text-to-video", False, False),
        "I2V": ("fal-ai/kling-video/v3/pro/image-to-video", True, True),
    }


def test_only_models_with_multishot_limits_take_groups(compose_cfg) -> None:
    with_limits = {
        p.stem for p in (REPO / "aivp_batch/conf/model").glob("*.yaml") if OmegaConf.load(p).get("multishot")
    }
    assert with_limits == {"kling_o3", "kling_v3"}
    cfg = OmegaConf.to_container(compose_cfg("model=seedance_v15"), resolve=True)
    assert build_model_spec(cfg["model"], cfg["provider"], "standard").multishot is None
    preview = OmegaConf.to_container(compose_cfg("model=kling_v3", "provider=preview"), resolve=True)
    multishot = build_model_spec(preview["model"], preview["provider"], "standard").multishot
    assert set(multishot.modes) == {"T2V", "I2V"} and multishot.items_field == "multi_prompt"
    assert multishot.limits.max_total_s == 15  # the model's limits, so the preview rehearses them


@pytest.mark.parametrize(
    "raw, message",
    [
        (
            {"max_shots": 1, "shot_durations": [1], "total_durations": [3]},
            "max_shots must be a whole number ≥ 2",
        ),
        ({"max_shots": 6, "shot_durations": "1-15", "total_durations": [3]}, "shot_durations must be a list"),
        ({"max_shots": 6, "shot_durations": [1], "total_durations": [3], "gap": 1}, "unknown keys"),
    ],
)
def test_bad_multishot_limits_are_refused(compose_cfg, raw, message) -> None:
    cfg = OmegaConf.to_container(compose_cfg("model=kling_v3"), resolve=True)
    cfg["model"]["multishot"] = raw
    with pytest.raises(ConfigError, match=message):
        build_model_spec(cfg["model"], cfg["provider"], "standard")


def test_the_manifest_states_groups(tmp_path: Path) -> None:
    from aivp_batch.manifest import load_shots

    entries = [
        {"id": "a", "prompt": "x", "scene": "s", "group": 1},
        {"id": "b", "prompt": "x", "scene": "s", "group": "1"},
        {"id": "c", "prompt": "x", "scene": "s"},
        {"id": "d", "prompt": "x", "scene": "s", "group": ["no"]},
    ]
    board = load_shots({"kind": "list", "shots": entries}, tmp_path)
    assert [(s.id, s.group) for s in board.shots] == [("a", "1"), ("b", "1"), ("c", None)]
    assert [p.message for p in board.problems] == [
        "d: group must be a label (a name or a number), not ['no']"
    ]
    assert layout(group_shots(board.shots, LIMITS)) == [("a", "b"), "c"]


def test_the_storyboard_metadata_states_groups(tmp_path: Path) -> None:
    from aivp_batch.storyboard import read_storyboard

    folder = tmp_path / "storyboard/storyboard-final/shots"
    folder.mkdir(parents=True)
    for n, group in ((1, "opening"), (2, "opening"), (3, "(none)")):
        (folder / f"shot-0{n}.md").write_text(
            f"| Field | Value |\n|---|---|\n| Scene | s |\n| Group | {group} |\n\n"
            "### Kling 3.0\n\n```\nA shot.\n```\n",
            encoding="utf-8",
        )
    board = read_storyboard(tmp_path)
    assert [s.group for s in board.shots] == ["opening", "opening", None]


def test_a_stated_single_shot_renders_alone_whatever_its_length() -> None:
    [alone] = group_shots([shot(1, duration=40, group="solo")], LIMITS)
    assert alone == Fallback(shot(1, duration=40, group="solo"), "its group 'solo' holds no other shot")
