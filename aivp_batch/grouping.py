"""Multi-shot grouping (strategy=multishot): which storyboard shots render together in one call.

A group is a run of consecutive shots of one scene that one call can hold: at most
`max_shots`, each shot's length one the model takes for a shot, the lengths' sum one it takes for a
call. Each shot keeps its storyboard length where the model allows it; otherwise it is raised to
the next allowed one (never shortened) and the group says so.

Rules, in order:

- Shots are consecutive in the storyboard (their numbers follow each other: `shots=[1,3]` never
  makes 1 and 3 one group), of the same scene (a shot with no scene is grouped only where the
  manifest says so) and the same aspect ratio; a group never crosses a scene boundary.
- A shot no call can hold (its length alone is over the call's limit, or `duration_policy=strict`
  and its length is not one the model takes for a shot) renders alone: a `Fallback`, which then
  goes through the single-shot path (and fails there if no single call can hold it either).
- Each run is cut into as few groups as possible; among the cuts with that many, the one with the
  fewest groups of a single shot, then the best balanced (by shot count, then by seconds): a scene
  of 7 short shots becomes 4 + 3, not 6 + 1 (on a tie the earlier groups are the larger). A group
  left with one shot is a `Fallback`.
- A manifest may state the grouping: shots sharing a `group:` label (or the lists passed as
  `explicit`) render together. Such a group is checked against the same rules and refused with a
  `ConfigError` (one line per problem) rather than silently changed; a label on one shot only makes
  that shot render alone. Shots without a label are grouped as above, between the stated groups.
- A group whose lengths sum to a length no call takes (less than the minimum) gets its last shot
  raised to the next one that is.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .models import MultishotLimits
from .shots import Shot

DEFAULT_SHOT_S = 5  # a shot with no duration (planning's DEFAULT_DURATION_S)
SCENES_DIR = Path("script/scenes")


@dataclass(frozen=True)
class Group:
    """Shots rendered in one call. `durations` are the whole seconds each shot gets (its item's
    duration); `notes` say what was adjusted and why."""

    number: int
    scene: str | None
    shots: tuple[Shot, ...]
    durations: tuple[int, ...]
    notes: tuple[str, ...] = ()
    label: str | None = None  # the manifest's group label, when the grouping was stated

    @property
    def key(self) -> str:
        return f"group-{self.number:02d}"

    @property
    def total_s(self) -> int:
        return sum(self.durations)

    @property
    def cuts_s(self) -> tuple[int, ...]:
        """Where each shot starts in the group's clip: 0, d0, d0+d1, …"""
        out, at = [], 0
        for d in self.durations:
            out.append(at)
            at += d
        return tuple(out)


@dataclass(frozen=True)
class Fallback:
    """A shot that renders alone, on the single-shot path, and why."""

    shot: Shot
    reason: str


Planned = Group | Fallback


def group_shots(
    shots: Sequence[Shot],
    limits: MultishotLimits,
    *,
    policy: str = "raise",
    explicit: Sequence[Sequence[str]] | None = None,
) -> list[Planned]:
    """The shots as groups and single-shot fallbacks, in shot order (see the module's rules).
    `policy` is `duration_policy` (raise | strict); `explicit` lists groups of shot ids (a
    manifest-level grouping), on top of each shot's own `group` label."""
    if policy not in ("raise", "strict"):
        raise ConfigError(f"duration_policy={policy} is not one of raise, strict")
    labels = _labels(shots, explicit)
    fitted = {shot.id: _fit(shot, limits, policy) for shot in shots}
    out: list[Planned] = []
    errors: list[str] = []
    pending: list[Shot] = []  # unlabelled shots since the last stated group

    def flush() -> None:
        for run in _runs(pending, fitted):
            out.extend(_partition(run, fitted, limits))
        pending.clear()

    done: set[str] = set()
    for shot in shots:
        if shot.id in done:
            continue
        label = labels.get(shot.id)
        if label is None:
            pending.append(shot)
            continue
        flush()
        members = [s for s in shots if labels.get(s.id) == label]
        done.update(s.id for s in members)
        if len(members) == 1:
            out.append(Fallback(shot, f"its group {label!r} holds no other shot"))
        elif problems := _stated_problems(label, members, shots, fitted, limits):
            errors.extend(problems)
        else:
            out.append(_group(members, fitted, limits, label=label))
    flush()
    if errors:
        raise ConfigError("\n".join(errors))
    return _numbered(out)


# --------------------------------------------------------------------------- durations


@dataclass(frozen=True)
class _Fit:
    seconds: int | None  # None: no call can hold the shot
    note: str | None = None
    reason: str | None = None  # why it falls back, when seconds is None


def _fit(shot: Shot, limits: MultishotLimits, policy: str) -> _Fit:
    allowed = [d for d in limits.shot_durations if d <= limits.max_total_s]
    listing = _listing(allowed)
    wanted = shot.duration_s
    if wanted is None:
        pick = min((d for d in allowed if d >= DEFAULT_SHOT_S), default=allowed[-1])
        return _Fit(pick, f"{shot.id}: no duration in the shot; using {pick}s")
    if wanted in allowed:
        return _Fit(int(wanted))
    longer = [d for d in allowed if d >= wanted]
    if not longer:
        return _Fit(
            None,
            reason=f"its {_fmt(wanted)}s is longer than one multi-shot call holds "
            f"({limits.max_total_s}s in all)",
        )
    if policy == "strict":
        return _Fit(
            None,
            reason=f"its {_fmt(wanted)}s is not a shot length the model takes in a group "
            f"(allowed: {listing}) and duration_policy=strict",
        )
    return _Fit(longer[0], f"{shot.id}: raised {_fmt(wanted)}s → {longer[0]}s (allowed per shot: {listing})")


def _listing(values: Sequence[int]) -> str:
    if len(values) > 2 and list(values) == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}–{values[-1]}s"
    return ", ".join(f"{v}s" for v in values)


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


# --------------------------------------------------------------------------- runs and cuts


def _next_to(a: Shot, b: Shot) -> bool:
    """Whether b may follow a in one group: consecutive numbers, one scene, one aspect ratio."""
    return (
        b.number == a.number + 1
        and a.scene is not None
        and _scene_key(a.scene) == _scene_key(b.scene or "")
        and (a.aspect_ratio or None) == (b.aspect_ratio or None)
    )


def _runs(shots: Sequence[Shot], fitted: Mapping[str, _Fit]) -> list[list[Shot]]:
    """Maximal runs of shots that may share groups; a shot no call holds is a run of its own."""
    runs: list[list[Shot]] = []
    run: list[Shot] = []
    for shot in shots:
        fit = fitted[shot.id]
        if fit.seconds is None:
            if run:
                runs.append(run)
                run = []
            runs.append([shot])  # a run of one: _partition makes it its fallback
            continue
        if run and not _next_to(run[-1], shot):
            runs.append(run)
            run = []
        run.append(shot)
    if run:
        runs.append(run)
    return runs


def _partition(run: list[Shot], fitted: Mapping[str, _Fit], limits: MultishotLimits) -> list[Planned]:
    if len(run) == 1:
        return [Fallback(run[0], _alone_reason(run[0], fitted))]
    secs = [fitted[s.id].seconds or 0 for s in run]
    n = len(run)
    # best[j]: the best cut of run[:j] as (cost, start of its last group); cost adds up per group:
    # (groups, groups of one shot, Σ shots², Σ seconds²).
    best: list[tuple[tuple[int, int, int, int], int] | None] = [None] * (n + 1)
    best[0] = ((0, 0, 0, 0), 0)
    for j in range(1, n + 1):
        for i in reversed(range(max(0, j - limits.max_shots), j)):  # ties: earlier groups are the larger
            if best[i] is None:
                continue
            total = sum(secs[i:j])
            if j - i > 1 and total > limits.max_total_s:
                continue
            size = j - i
            prev = best[i][0]  # type: ignore[index]
            cost = (prev[0] + 1, prev[1] + (size == 1), prev[2] + size * size, prev[3] + total * total)
            if best[j] is None or cost < best[j][0]:  # type: ignore[index]
                best[j] = (cost, i)
    cuts: list[tuple[int, int]] = []
    j = n
    while j > 0:
        i = best[j][1]  # type: ignore[index]
        cuts.append((i, j))
        j = i
    out: list[Planned] = []
    for i, j in reversed(cuts):
        if j - i == 1:
            reason = "no neighbour of its scene fits in one call with it"
            out.append(Fallback(run[i], reason))
        else:
            out.append(_group(run[i:j], fitted, limits))
    return out


def _alone_reason(shot: Shot, fitted: Mapping[str, _Fit]) -> str:
    fit = fitted[shot.id]
    if fit.reason:
        return fit.reason
    if shot.scene is None:
        return "it has no scene (only consecutive shots of one scene are grouped)"
    return "it is alone in its scene (no consecutive shot of the same scene and aspect ratio)"


def _group(
    members: Sequence[Shot], fitted: Mapping[str, _Fit], limits: MultishotLimits, label: str | None = None
) -> Group:
    secs = [fitted[s.id].seconds or 0 for s in members]
    notes = [n for s in members if (n := fitted[s.id].note)]
    total = sum(secs)
    if total not in limits.total_durations:  # under the minimum (or in a gap of the call's lengths)
        need = min((t for t in limits.total_durations if t >= total), default=total)
        raised = secs[-1] + need - total
        if raised != secs[-1] and raised in limits.shot_durations:
            notes.append(
                f"{members[-1].id}: raised {secs[-1]}s → {raised}s: the group's {total}s is not a length "
                f"one call takes (allowed: {_listing(limits.total_durations)})"
            )
            secs[-1] = raised
    return Group(
        number=0,
        scene=members[0].scene,
        shots=tuple(members),
        durations=tuple(secs),
        notes=tuple(notes),
        label=label,
    )


def _numbered(items: list[Planned]) -> list[Planned]:
    items.sort(key=lambda p: (p.shots[0] if isinstance(p, Group) else p.shot).number)
    out: list[Planned] = []
    number = 0
    for item in items:
        if isinstance(item, Group):
            number += 1
            item = dataclasses.replace(item, number=number)
        out.append(item)
    return out


# --------------------------------------------------------------------------- stated groups


def _labels(shots: Sequence[Shot], explicit: Sequence[Sequence[str]] | None) -> dict[str, str]:
    """Shot id → group label: the shots' own `group`, then the `explicit` lists (`#1`, `#2`…)."""
    labels = {s.id: s.group for s in shots if s.group}
    known = {s.id for s in shots}
    errors = []
    for k, ids in enumerate(explicit or (), start=1):
        if isinstance(ids, str) or not isinstance(ids, Sequence):
            raise ConfigError(f"groups[{k}] must be a list of shot ids, not {ids!r}")
        for shot_id in map(str, ids):
            if shot_id not in known:
                continue  # not selected in this run (shots=[…]): the rest of its group is checked
            if shot_id in labels and labels[shot_id] != f"#{k}":
                errors.append(f"{shot_id}: in two multi-shot groups ({labels[shot_id]!r} and groups[{k}])")
            labels[shot_id] = f"#{k}"
    if errors:
        raise ConfigError("\n".join(errors))
    return labels


def _stated_problems(
    label: str,
    members: Sequence[Shot],
    shots: Sequence[Shot],
    fitted: Mapping[str, _Fit],
    limits: MultishotLimits,
) -> list[str]:
    where = f"multi-shot group {label!r} ({', '.join(s.id for s in members)})"
    problems = []
    for shot in members:
        if (reason := fitted[shot.id].reason) is not None:
            problems.append(f"{where}: {shot.id} cannot be in a group: {reason}")
    if len(members) < 2:
        return problems
    positions = [shots.index(s) for s in members]
    for a, b, pa, pb in zip(members, members[1:], positions, positions[1:], strict=False):
        if pb != pa + 1 or b.number != a.number + 1:
            problems.append(f"{where}: {a.id} and {b.id} are not consecutive shots")
        elif _scene_key(a.scene or "") != _scene_key(b.scene or ""):
            problems.append(f"{where}: {a.id} and {b.id} are in different scenes ({a.scene} / {b.scene})")
        elif (a.aspect_ratio or None) != (b.aspect_ratio or None):
            problems.append(
                f"{where}: {a.id} and {b.id} have different aspect ratios "
                f"({a.aspect_ratio} / {b.aspect_ratio})"
            )
    if len(members) > limits.max_shots:
        problems.append(f"{where}: {len(members)} shots; one call takes at most {limits.max_shots}")
    total = sum(fitted[s.id].seconds or 0 for s in members)
    if total > limits.max_total_s:
        problems.append(f"{where}: {total}s in all; one call takes at most {limits.max_total_s}s")
    return problems


# --------------------------------------------------------------------------- scene settings

_SETTING_HEADING = re.compile(r"^#{1,6}\s*(?:setting|location)\b.*$", re.IGNORECASE)
_SETTING_LABEL = re.compile(
    r"^(?:[-*+]\s+)?(?:\*\*)?(?:setting|location)(?:\*\*)?\s*[:：]\s*(?:\*\*)?\s*(?P<value>.+)$",
    re.IGNORECASE,
)
_SETTING_ROW = re.compile(r"^\|\s*(?:setting|location)\s*\|\s*(?P<value>[^|]+)\|", re.IGNORECASE)
_SCENE_ROW = re.compile(r"^\|\s*scene(?:\s*id)?\s*\|\s*(?P<value>[^|]+)\|", re.IGNORECASE)


def read_scene_settings(project_dir: Path | None) -> dict[str, str]:
    """Scene → its setting, from `script/scenes/*.md` when the project has them: the text under a
    `## Setting` (or `## Location`) heading, else a `**Setting**: …` / `Setting: …` line or a
    `| Setting | … |` row. A file is the scene named by its stem and by a `| Scene | … |` row in
    it. A file that names no setting adds nothing; an unreadable one is skipped."""
    if project_dir is None:
        return {}
    folder = Path(project_dir) / SCENES_DIR
    if not folder.is_dir():
        return {}
    out: dict[str, str] = {}
    for path in sorted(folder.glob("*.md")):
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError):
            continue
        setting = _setting(text)
        if not setting:
            continue
        names = [
            path.stem,
            *(m.group("value").strip() for m in map(_SCENE_ROW.match, text.splitlines()) if m),
        ]
        for name in names:
            out.setdefault(_scene_key(name), setting)
    return out


def scene_setting(settings: Mapping[str, str], scene: str | None) -> str | None:
    """The setting of `scene` in `read_scene_settings`' map (names compared loosely:
    `Kitchen Morning` matches `kitchen-morning.md`)."""
    if not scene:
        return None
    return settings.get(_scene_key(scene))


def _setting(text: str) -> str | None:
    lines = [line.rstrip() for line in text.splitlines()]
    for k, line in enumerate(lines):
        if _SETTING_HEADING.match(line.strip()):
            body: list[str] = []
            for following in lines[k + 1 :]:
                stripped = following.strip()
                if stripped.startswith("#"):
                    break
                if not stripped:
                    if body:
                        break
                    continue
                body.append(re.sub(r"^>\s?", "", stripped))
            if body:
                return " ".join(" ".join(body).split())
    for line in lines:
        stripped = line.strip()
        match = _SETTING_LABEL.match(stripped) or _SETTING_ROW.match(stripped)
        if match and (value := match.group("value").strip().strip("*").strip()):
            return " ".join(value.split())
    return None


def _scene_key(name: str) -> str:
    return re.sub(r"[\s_]+", "-", str(name).strip().lower())


def shots_of(items: Iterable[Planned]) -> list[Shot]:
    """Every shot of a grouping, in order."""
    return [s for item in items for s in (item.shots if isinstance(item, Group) else (item.shot,))]
