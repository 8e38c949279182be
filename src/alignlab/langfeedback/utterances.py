"""Comparative language feedback: 10 classes, the original's 30 templates, our paraphrases
(and the classes of two more feature sets: the richer world's and Meta-World's).

Yang et al. 2024 ("Trajectory Improvement and Reward Learning from Comparative Language
Feedback", CoRL 2024) label a trajectory pair (τ_a, τ_b) with an utterance saying how to turn
τ_a into τ_b along one feature: the feature's mean over time is greater or less in τ_b. So there
are 10 classes, each feature × ("greater", "less"), named here `"speed+"` and `"speed-"`
(`class_of("speed", +1)`; `parse_class("speed-") == ("speed", -1)`).

**Templates.** The official code (USC-Lira/language-preference-learning @120990d,
`data/utils.py`, `generate_synthetic_comparisons_commands`) builds 30 templates from adjective
lists: `"Move " + adj + "."` for speed and height, `"Move further/farther/more distant from the
bottle."` and `"Move closer/nearer/more nearby to the bottle."` (and the cube), and
`"Lift the cube better/more successfully/worse/not as well."` for `gt_reward`. `TEMPLATES` holds
them verbatim.

**Paraphrases.** The original adds about 21 GPT paraphrases per template
(`data/GPT_augmented_comps.json`); they carry no licence, so we write our own: per class 10 verb
phrases (`VERB_PHRASES`) × 10 sentence frames (`FRAMES`), 100 sentences per class, plus 2 more
verb phrases per class (`STRESS_VERB_PHRASES`) for the stress split.

**Splits.** As the original (`data/utils.py`: the first 80% of each template's paraphrases train,
the next 10% validate, the rest test), utterances are split 80/10/10 within each class, here after
a seeded shuffle; the templates all go to train. A paraphrase's verb phrase may then appear in
train with another frame: held-out *sentences*, as in the paper. The `"stress"` split holds the
sentences of the stress verb phrases only, never seen in train/val/test: unseen *wording*.

`build_splits(seed)` makes them; `UtteranceSplits.save`/`load` write and read them as JSON, and
`load` rejects a missing class, an empty split, a sentence in two places or an unknown split or
class with one `AlignlabError` naming it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alignlab.core.errors import AlignlabError, did_you_mean
from alignlab.core.io import atomic_write_json
from alignlab.langfeedback.world import EXTRA_FEATURES, FEATURES

#: The Meta-World features (the paper's `mw_feature_aspects`, `pref_learning/utils.py`): the
#: hand's height, its velocity and its distance to the button.
METAWORLD_FEATURES = ("height", "velocity", "distance")

#: Direction of a class: +1 the feature should be greater in the improved trajectory, -1 less.
DIRECTIONS = (1, -1)
_SIGN = {1: "+", -1: "-"}
_DIRECTION_NAMES = {"greater": 1, "less": -1, "+": 1, "-": -1}


def classes_of(features: tuple[str, ...]) -> tuple[str, ...]:
    """The classes of a feature tuple, in order: each feature, greater then less."""
    return tuple(f"{f}{_SIGN[d]}" for f in features for d in DIRECTIONS)


#: The 10 classes of the paper's five features, in order: each feature, greater then less.
CLASSES = classes_of(FEATURES)
#: Every feature with a vocabulary: the paper's five, the richer world's five more
#: (`world.EXTRA_FEATURES`) and Meta-World's three (`height` is shared).
KNOWN_FEATURES = tuple(dict.fromkeys(FEATURES + EXTRA_FEATURES + METAWORLD_FEATURES))
ALL_CLASSES = classes_of(KNOWN_FEATURES)

SPLITS = ("train", "val", "test", "stress")
#: Shares of the paraphrases of each class going to train / val / test.
FRACTIONS = (0.8, 0.1, 0.1)

FORMAT = "alignlab.langfeedback.utterances"
VERSION = 1


def _check(value: str, valid: tuple[str, ...], what: str, plural: str) -> str:
    if value not in valid:
        raise AlignlabError(
            f"Unknown {what} {value!r}; valid {plural}: {', '.join(valid)}."
            + did_you_mean(str(value), valid)
        )
    return value


def check_feature(feature: str) -> str:
    return _check(feature, KNOWN_FEATURES, "feature", "features")


def check_features(features) -> tuple[str, ...]:
    """A non-empty tuple of distinct known features, or one error naming the problem."""
    features = tuple(features)
    if not features:
        raise AlignlabError(f"No features given; valid features: {', '.join(KNOWN_FEATURES)}.")
    for f in features:
        check_feature(f)
    if len(set(features)) != len(features):
        raise AlignlabError(f"Features repeat in {features}.")
    return features


def check_class(name: str, classes: tuple[str, ...] = ALL_CLASSES) -> str:
    return _check(name, classes, "utterance class", "classes")


def check_split(name: str) -> str:
    return _check(name, SPLITS, "utterance split", "splits")


def class_of(feature: str, direction: int | str) -> str:
    """The class of an utterance asking for `feature` to be greater (`direction` +1 or
    "greater") or less (-1 or "less"), e.g. `class_of("speed", 1) == "speed+"`."""
    check_feature(feature)
    if isinstance(direction, str):
        d = _DIRECTION_NAMES.get(direction)
    elif isinstance(direction, (int, np.integer)) and not isinstance(direction, bool):
        d = int(direction) if int(direction) in DIRECTIONS else None
    else:
        d = None
    if d is None:
        raise AlignlabError(
            f"Unknown direction {direction!r}; valid directions: 1 or 'greater', -1 or 'less'."
        )
    return f"{feature}{_SIGN[d]}"


def parse_class(name: str) -> tuple[str, int]:
    """(feature, direction) of a class name: `parse_class("height-") == ("height", -1)`."""
    check_class(name)
    return name[:-1], (1 if name[-1] == "+" else -1)


# --- the original's 30 templates (data/utils.py) ------------------------------------------------

_ADJS = {  # greater_*_adjs / less_*_adjs of data/utils.py
    "gt_reward+": ("better", "more successfully"),
    "gt_reward-": ("worse", "not as well"),
    "speed+": ("faster", "quicker", "swifter", "at a higher speed"),
    "speed-": ("slower", "more moderate", "more sluggish", "at a lower speed"),
    "height+": ("higher", "taller", "at a greater height"),
    "height-": ("lower", "more down", "at a lesser height"),
    "distance+": ("further", "farther", "more distant"),
    "distance-": ("closer", "nearer", "more nearby"),
}


def _templates() -> dict[str, tuple[str, ...]]:
    out = {
        "gt_reward+": tuple(f"Lift the cube {a}." for a in _ADJS["gt_reward+"]),
        "gt_reward-": tuple(f"Lift the cube {a}." for a in _ADJS["gt_reward-"]),
    }
    for feature in ("speed", "height"):
        for s in "+-":
            out[feature + s] = tuple(f"Move {a}." for a in _ADJS[feature + s])
    for obj in ("bottle", "cube"):
        out[f"distance_to_{obj}+"] = tuple(f"Move {a} from the {obj}." for a in _ADJS["distance+"])
        out[f"distance_to_{obj}-"] = tuple(f"Move {a} to the {obj}." for a in _ADJS["distance-"])
    # ours, in the same style, for the features the original has no templates for
    out["velocity+"], out["velocity-"] = out["speed+"], out["speed-"]
    out["distance+"] = tuple(f"Move {a} from the button." for a in _ADJS["distance+"])
    out["distance-"] = tuple(f"Move {a} to the button." for a in _ADJS["distance-"])
    out.update(_EXTRA_TEMPLATES)
    return {c: out[c] for c in ALL_CLASSES}


_EXTRA_TEMPLATES = {
    "gripper_opening+": ("Keep the gripper more open.", "Open the gripper more."),
    "gripper_opening-": ("Keep the gripper more closed.", "Close the gripper more."),
    "max_height+": ("Peak at a greater height.", "Rise higher at the peak."),
    "max_height-": ("Peak at a lesser height.", "Rise less high at the peak."),
    "time_still+": ("Pause more.", "Stay still longer."),
    "time_still-": ("Pause less.", "Stay still less."),
    "time_near_bottle+": ("Spend more time near the bottle.",),
    "time_near_bottle-": ("Spend less time near the bottle.",),
    "final_distance_to_cube+": ("End further from the cube.", "Finish farther from the cube."),
    "final_distance_to_cube-": ("End closer to the cube.", "Finish nearer to the cube."),
}


#: Templates by class: the official code's 30 for the paper's 10 classes, and ours in the same
#: style for the other features' classes.
TEMPLATES: dict[str, tuple[str, ...]] = _templates()

# --- our paraphrases --------------------------------------------------------------------------

#: Sentence frames; each verb phrase is an imperative in the base form ("go faster").
FRAMES = (
    "{Vp}.",
    "Please {vp}.",
    "Could you {vp}?",
    "Try to {vp} next time.",
    "I'd like you to {vp}.",
    "You should {vp}.",
    "It would be better to {vp}.",
    "Next time, {vp}.",
    "Make sure to {vp}.",
    "Can you {vp} this time?",
)


def _away(obj: str) -> tuple[str, ...]:
    return (
        f"move away from the {obj}",
        f"stay farther away from the {obj}",
        f"keep your distance from the {obj}",
        f"give the {obj} a wider berth",
        f"steer clear of the {obj}",
        f"increase the distance to the {obj}",
        f"back away from the {obj}",
        f"keep further from the {obj}",
        f"avoid getting near the {obj}",
        f"put more space between you and the {obj}",
    )


def _toward(obj: str) -> tuple[str, ...]:
    return (
        f"move toward the {obj}",
        f"get closer to the {obj}",
        f"approach the {obj}",
        f"stay nearer to the {obj}",
        f"come closer to the {obj}",
        f"reduce the distance to the {obj}",
        f"keep close to the {obj}",
        f"go near the {obj}",
        f"head toward the {obj}",
        f"pass closer by the {obj}",
    )


#: 10 verb phrases per class: their sentences are split 80/10/10 into train/val/test.
VERB_PHRASES: dict[str, tuple[str, ...]] = {
    "gt_reward+": (
        "lift the cube more reliably",
        "do a better job of lifting the cube",
        "pick up the cube successfully",
        "get a firmer grip on the cube and lift it",
        "grasp the cube and raise it properly",
        "complete the lift of the cube",
        "succeed at picking up the cube",
        "hold the cube securely and lift it off the table",
        "improve how you lift the cube",
        "make the cube lift succeed",
    ),
    "gt_reward-": (
        "lift the cube less successfully",
        "do a worse job of lifting the cube",
        "fail to pick up the cube",
        "loosen your grip on the cube",
        "leave the cube on the table",
        "lift the cube less reliably",
        "let the cube slip from the gripper",
        "make the lift of the cube less successful",
        "avoid grasping the cube",
        "be sloppier when lifting the cube",
    ),
    "speed+": (
        "go faster",
        "speed up",
        "pick up the pace",
        "move more quickly",
        "hurry up",
        "increase your speed",
        "move with more speed",
        "be quicker",
        "move at a faster pace",
        "accelerate your movements",
    ),
    "speed-": (
        "slow down",
        "go slower",
        "move more slowly",
        "reduce your speed",
        "take it slower",
        "move at a gentler pace",
        "decrease your velocity",
        "move less quickly",
        "ease up on the speed",
        "cut your speed",
    ),
    "height+": (
        "go higher",
        "move up",
        "raise your arm",
        "stay higher above the table",
        "lift your hand higher",
        "gain more height",
        "increase your height",
        "keep the gripper higher",
        "travel at a higher altitude",
        "hover higher",
    ),
    "height-": (
        "go lower",
        "move down",
        "lower your arm",
        "stay lower over the table",
        "drop your hand lower",
        "lose some height",
        "decrease your height",
        "keep the gripper lower",
        "travel at a lower altitude",
        "hover lower",
    ),
    "distance_to_bottle+": _away("bottle"),
    "distance_to_bottle-": _toward("bottle"),
    "distance_to_cube+": _away("cube"),
    "distance_to_cube-": _toward("cube"),
    # the richer world's features (ours; `world.EXTRA_FEATURES`)
    "gripper_opening+": (
        "keep the gripper open longer",
        "open the gripper wider",
        "leave the fingers apart more",
        "hold the gripper open more of the time",
        "spend more time with the gripper open",
        "close the gripper less",
        "keep your fingers spread",
        "avoid clamping the gripper shut",
        "keep the claw open more",
        "open your hand more",
    ),
    "gripper_opening-": (
        "keep the gripper closed longer",
        "close the gripper sooner",
        "keep the fingers together more",
        "hold the gripper shut more of the time",
        "spend more time with the gripper closed",
        "open the gripper less",
        "keep your fingers clamped",
        "shut the gripper earlier",
        "keep the claw closed more",
        "close your hand more",
    ),
    "max_height+": (
        "reach a higher peak",
        "climb higher at some point",
        "get higher at the top of the motion",
        "rise to a greater maximum height",
        "go higher at your highest point",
        "peak higher",
        "reach further up at least once",
        "top out higher",
        "make your highest point higher",
        "lift up higher at the peak",
    ),
    "max_height-": (
        "reach a lower peak",
        "never climb as high",
        "stay lower at the top of the motion",
        "rise to a smaller maximum height",
        "go less high at your highest point",
        "peak lower",
        "never reach as far up",
        "top out lower",
        "make your highest point lower",
        "keep the peak of the motion lower",
    ),
    "time_still+": (
        "pause more often",
        "stand still for longer",
        "hold still more",
        "spend more time not moving",
        "wait in place longer",
        "stop and rest more",
        "linger in place more",
        "take longer pauses",
        "stay motionless longer",
        "halt for longer",
    ),
    "time_still-": (
        "pause less often",
        "stand still for less time",
        "keep moving",
        "spend less time not moving",
        "wait in place less",
        "stop less",
        "avoid lingering in place",
        "take shorter pauses",
        "never stay motionless for long",
        "keep in motion more",
    ),
    "time_near_bottle+": (
        "spend more time around the bottle",
        "linger near the bottle",
        "stay by the bottle longer",
        "hang around the bottle more",
        "spend longer close to the bottle",
        "keep near the bottle for more of the time",
        "remain beside the bottle longer",
        "spend more of the motion near the bottle",
        "dwell by the bottle",
        "stay in the bottle's vicinity longer",
    ),
    "time_near_bottle-": (
        "spend less time around the bottle",
        "pass by the bottle without lingering",
        "stay by the bottle for less time",
        "hang around the bottle less",
        "spend less time close to the bottle",
        "keep near the bottle for less of the time",
        "leave the bottle's side sooner",
        "spend less of the motion near the bottle",
        "avoid dwelling by the bottle",
        "stay in the bottle's vicinity briefly",
    ),
    "final_distance_to_cube+": (
        "end up further from the cube",
        "finish away from the cube",
        "stop farther from the cube",
        "end the motion far from the cube",
        "finish at a distance from the cube",
        "end with more space to the cube",
        "come to rest away from the cube",
        "wind up further from the cube",
        "finish the task far from the cube",
        "end more distant from the cube",
    ),
    "final_distance_to_cube-": (
        "end up closer to the cube",
        "finish by the cube",
        "stop nearer to the cube",
        "end the motion near the cube",
        "finish right at the cube",
        "end with less space to the cube",
        "come to rest next to the cube",
        "wind up closer to the cube",
        "finish the task near the cube",
        "end less distant from the cube",
    ),
}
# Meta-World's features (`METAWORLD_FEATURES`): its velocity is said like speed, its distance
# is to the button
VERB_PHRASES.update(
    {
        "velocity+": VERB_PHRASES["speed+"],
        "velocity-": VERB_PHRASES["speed-"],
        "distance+": _away("button"),
        "distance-": _toward("button"),
    }
)

#: 2 more verb phrases per class, whose sentences appear only in the stress split.
STRESS_VERB_PHRASES: dict[str, tuple[str, ...]] = {
    "gt_reward+": ("hoist the cube off the table", "nail the cube pickup"),
    "gt_reward-": ("drop the cube", "botch lifting the cube"),
    "speed+": ("get a move on", "step on it"),
    "speed-": ("dial back the speed", "move at a leisurely rate"),
    "height+": ("elevate the end effector", "rise up more"),
    "height-": ("bring the end effector down", "sink down more"),
    "distance_to_bottle+": ("keep out of the bottle's way", "retreat from the bottle"),
    "distance_to_bottle-": ("sidle up to the bottle", "draw near the bottle"),
    "distance_to_cube+": ("keep out of the cube's way", "retreat from the cube"),
    "distance_to_cube-": ("sidle up to the cube", "draw near the cube"),
    "gripper_opening+": ("let the jaws hang open", "spread the jaws wide"),
    "gripper_opening-": ("pinch the jaws together", "clench the gripper"),
    "max_height+": ("soar higher at the summit", "crest higher"),
    "max_height-": ("cap your altitude lower", "crest lower"),
    "time_still+": ("idle more", "freeze in place more"),
    "time_still-": ("idle less", "be on the go constantly"),
    "time_near_bottle+": ("loiter by the bottle", "keep the bottle company"),
    "time_near_bottle-": ("barely visit the bottle", "make your visit to the bottle brief"),
    "final_distance_to_cube+": ("park away from the cube", "settle far from the cube"),
    "final_distance_to_cube-": ("park beside the cube", "settle next to the cube"),
    "velocity+": ("get a move on", "step on it"),
    "velocity-": ("dial back the speed", "move at a leisurely rate"),
    "distance+": ("keep out of the button's way", "retreat from the button"),
    "distance-": ("sidle up to the button", "draw near the button"),
}


def render(frame: str, vp: str) -> str:
    """A frame filled with a verb phrase ("{Vp}" capitalises it)."""
    return frame.format(vp=vp, Vp=vp[:1].upper() + vp[1:])


def paraphrases(cls: str, stress: bool = False) -> list[str]:
    """Every frame × verb phrase sentence of a class (the stress verb phrases if `stress`),
    verb phrase by verb phrase."""
    vps = (STRESS_VERB_PHRASES if stress else VERB_PHRASES)[check_class(cls)]
    return [render(f, vp) for vp in vps for f in FRAMES]


def _norm(sentence: str) -> str:
    """The form two sentences are compared in: the encoder is uncased, so case and spacing
    do not make a new utterance."""
    return " ".join(sentence.lower().split())


# --- splits ------------------------------------------------------------------------------------


@dataclass
class UtteranceSplits:
    """`splits[split][class]`: the sentences of each class of `features` (the paper's five by
    default) in each of `SPLITS`."""

    splits: dict[str, dict[str, list[str]]]
    seed: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    features: tuple[str, ...] = FEATURES

    def __post_init__(self) -> None:
        self.features = check_features(self.features)
        validate(self.splits, self.features)

    @property
    def classes(self) -> tuple[str, ...]:
        return classes_of(self.features)

    def get(self, split: str, cls: str) -> list[str]:
        return self.splits[check_split(split)][check_class(cls, self.classes)]

    def sentences(self, split: str | None = None) -> list[str]:
        """All sentences of a split (of every split if None), class by class."""
        names = SPLITS if split is None else (check_split(split),)
        return [s for n in names for c in self.classes for s in self.splits[n][c]]

    def labelled(self, split: str) -> list[tuple[str, str]]:
        """(sentence, class) pairs of a split."""
        return [(s, c) for c in self.classes for s in self.splits[check_split(split)][c]]

    def counts(self) -> dict[str, int]:
        return {n: sum(len(v) for v in self.splits[n].values()) for n in SPLITS}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "seed": self.seed,
            "meta": self.meta,
            "features": list(self.features),
            "splits": {n: {c: list(self.splits[n][c]) for c in self.classes} for n in SPLITS},
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write as JSON, atomically."""
        path = Path(path)
        atomic_write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> UtteranceSplits:
        """Read a file written by `save` (or by hand), checked by `validate`."""
        path = Path(path)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise AlignlabError(f"Utterance file {path} does not exist.") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise AlignlabError(f"Utterance file {path} is not readable JSON: {e}") from None
        if not isinstance(data, dict) or not isinstance(data.get("splits"), dict):
            raise AlignlabError(
                f"Utterance file {path} must hold a JSON object with a 'splits' object "
                f"({{split: {{class: [sentences]}}}} for splits {', '.join(SPLITS)})."
            )
        seed = data.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise AlignlabError(f"Utterance file {path}: 'seed' must be an integer or null.")
        meta = data.get("meta") or {}
        features = data.get("features", list(FEATURES))
        if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
            raise AlignlabError(f"Utterance file {path}: 'features' must be a list of names.")
        try:
            return cls(
                data["splits"],
                seed=seed,
                meta=meta if isinstance(meta, dict) else {},
                features=tuple(features),
            )
        except AlignlabError as e:
            raise AlignlabError(f"Utterance file {path}: {e}") from None


def validate(splits: Any, features: tuple[str, ...] = FEATURES) -> None:
    """One `AlignlabError` for the first problem: an unknown or missing split, an unknown or
    missing class (of `features`), an empty split or class, a non-string or blank sentence,
    or a sentence in two places (compared uncased, as the encoder sees it)."""
    classes = classes_of(check_features(features))
    if not isinstance(splits, dict):
        raise AlignlabError(
            f"splits must be an object {{split: {{class: [sentences]}}}}, got {type(splits).__name__}."
        )
    for name in splits:
        check_split(name)
    for name in SPLITS:
        if name not in splits:
            raise AlignlabError(f"Split {name!r} is missing (needed: {', '.join(SPLITS)}).")
        by_class = splits[name]
        if not isinstance(by_class, dict):
            raise AlignlabError(f"Split {name!r} must be an object {{class: [sentences]}}.")
        for c in by_class:
            try:
                check_class(c, classes)
            except AlignlabError as e:
                raise AlignlabError(f"Split {name!r}: {e}") from None
        if not any(by_class.get(c) for c in classes):
            raise AlignlabError(f"Split {name!r} is empty.")
        for c in classes:
            if c not in by_class:
                raise AlignlabError(f"Split {name!r} is missing class {c!r}.")
            items = by_class[c]
            if not isinstance(items, list):
                raise AlignlabError(f"Split {name!r}, class {c!r}: expected a list of sentences.")
            if not items:
                raise AlignlabError(f"Split {name!r} has no sentences for class {c!r}.")
            for s in items:
                if not isinstance(s, str) or not s.strip():
                    raise AlignlabError(
                        f"Split {name!r}, class {c!r}: {s!r} is not a non-blank sentence."
                    )
    seen: dict[str, tuple[str, str]] = {}
    for name in SPLITS:
        for c in classes:
            for s in splits[name][c]:
                key = _norm(s)
                if key in seen:
                    n0, c0 = seen[key]
                    if n0 != name:
                        where = f"in two splits: {n0!r} ({c0}) and {name!r} ({c})"
                    elif c0 != c:
                        where = f"in two classes of split {name!r}: {c0!r} and {c!r}"
                    else:
                        where = f"twice in split {name!r}, class {c!r}"
                    raise AlignlabError(f"The sentence {s!r} appears {where}.")
                seen[key] = (name, c)


def build_splits(seed: int = 0, features: tuple[str, ...] = FEATURES) -> UtteranceSplits:
    """The templates and paraphrases of the classes of `features` (the paper's five by
    default) split 80/10/10 within each class by a seeded shuffle (templates to train), and the
    stress split. Each split's sentences keep their generation order; the same seed and
    features give the same splits (the i-th class of `features` is shuffled with (seed, i))."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise AlignlabError(f"seed must be a non-negative integer, got {seed!r}.")
    features = check_features(features)
    splits: dict[str, dict[str, list[str]]] = {n: {} for n in SPLITS}
    for i, c in enumerate(classes_of(features)):
        para = paraphrases(c)
        n = len(para)
        n_val = round(FRACTIONS[1] * n)
        n_test = round(FRACTIONS[2] * n)
        perm = np.random.default_rng([seed, i]).permutation(n)
        val = sorted(perm[:n_val].tolist())
        test = sorted(perm[n_val : n_val + n_test].tolist())
        train = sorted(perm[n_val + n_test :].tolist())
        splits["train"][c] = list(TEMPLATES[c]) + [para[j] for j in train]
        splits["val"][c] = [para[j] for j in val]
        splits["test"][c] = [para[j] for j in test]
        splits["stress"][c] = paraphrases(c, stress=True)
    return UtteranceSplits(splits, seed=seed, meta={"frames": len(FRAMES)}, features=features)
