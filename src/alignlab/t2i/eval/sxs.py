"""Side-by-side (SxS) human-evaluation studies, as in Imagen 3 (Imagen Team 2024, Sec. 3.1).

One *study* is one model pair on one question (aspect) and one prompt set, with 2500 ratings
(the report's number) spread uniformly over the set's prompts. Models are anonymous and their
sides are shuffled per rating; raters may answer "tie" (the explicit indifference option);
each rater gives about 2 % of a study's ratings, and takes part in at most 10 % of the studies
of a round robin (the report's figures for its rater pool). A full evaluation is a round robin:
every model pair x aspect x prompt set.

Model-agnostic: a design is a list of `Rating` rows without choices; `run_study` fills them in
with any vectorised callable `rate_fn(rows) -> choices` (simulated raters, or a replay of
human ratings). Ratings are stored as JSON lines (`write_ratings` / `read_ratings`), so every
Elo score can be recomputed from the file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np

from alignlab.core.io import atomic_write_text

ASPECTS = ("overall", "alignment", "appeal", "detailed")
"""Sec. 3.1's side-by-side questions: overall preference, prompt-image alignment, visual
appeal (prompt hidden) and detailed alignment (against a reference image, DOCCI)."""

CHOICES = ("left", "right", "tie")
"""A rater's answer: the image shown on the left, the one on the right, or indifference."""

N_RATINGS = 2500
"""Ratings per study in the report (Sec. 3.1)."""

MAX_RATER_SHARE = 0.02
"""Largest share of one study's ratings that one rater gives (Sec. 3.1: about 2 %)."""

MAX_STUDY_SHARE = 0.10
"""Largest share of a round robin's studies that one rater takes part in (Sec. 3.1: 10 %)."""

FIELDS = ("study", "set", "aspect", "prompt_id", "model_a", "model_b", "choice", "rater")
_STR_FIELDS = ("study", "set", "aspect", "model_a", "model_b", "rater")


def _check_aspect(aspect: object) -> str:
    if aspect not in ASPECTS:
        raise ValueError(f"unknown aspect {aspect!r}; valid aspects: {', '.join(ASPECTS)}")
    return aspect  # type: ignore[return-value]


def _check_choice(choice: object, allow_none: bool = True) -> None:
    if choice is None and allow_none:
        return
    if choice not in CHOICES:
        raise ValueError(f"unknown choice {choice!r}; valid choices: {', '.join(CHOICES)}")


@dataclass(frozen=True)
class Rating:
    """One side-by-side judgement (or, with `choice=None`, one row of a study design).

    `model_a` was shown on the left and `model_b` on the right; `choice` is "left", "right"
    or "tie". `prompt_id` identifies the prompt within its `set`, so that bootstrap resamples
    can be clustered by prompt.
    """

    study: str
    set: str
    aspect: str
    prompt_id: int | str
    model_a: str
    model_b: str
    choice: str | None = None
    rater: str = ""

    def __post_init__(self) -> None:
        _check_aspect(self.aspect)
        _check_choice(self.choice)
        if self.model_a == self.model_b:
            raise ValueError(f"a rating compares two different models, got {self.model_a!r} twice")

    @property
    def left(self) -> str:
        return self.model_a

    @property
    def right(self) -> str:
        return self.model_b

    @property
    def winner(self) -> str | None:
        """The preferred model (None for a tie or an unrated row)."""
        return {"left": self.model_a, "right": self.model_b}.get(self.choice or "")

    @property
    def loser(self) -> str | None:
        return {"left": self.model_b, "right": self.model_a}.get(self.choice or "")

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in FIELDS}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Rating:
        """A rating from a JSON object; every problem is one ValueError naming the field."""
        if not isinstance(d, Mapping):
            raise ValueError(f"expected a JSON object, got {type(d).__name__}")
        missing = [k for k in FIELDS if k not in d]
        if missing:
            raise ValueError(
                f"missing field(s) {', '.join(missing)}; a rating has the fields {', '.join(FIELDS)}"
            )
        extra = sorted(set(d) - set(FIELDS))
        if extra:
            raise ValueError(
                f"unknown field(s) {', '.join(extra)}; a rating has the fields {', '.join(FIELDS)}"
            )
        for k in _STR_FIELDS:
            if not isinstance(d[k], str):
                raise ValueError(f"field {k!r} must be a string, got {d[k]!r}")
        pid = d["prompt_id"]
        if isinstance(pid, bool) or not isinstance(pid, (int, str)):
            raise ValueError(f"field 'prompt_id' must be an integer or a string, got {pid!r}")
        if d["choice"] is None:
            raise ValueError(
                f"field 'choice' is missing a value; valid choices: {', '.join(CHOICES)}"
            )
        return cls(**{k: d[k] for k in FIELDS})


def study_name(aspect: str, set_name: str, model_a: str, model_b: str) -> str:
    """The name of one study: `aspect/set/model_a~model_b` (model order as designed)."""
    return f"{aspect}/{set_name}/{model_a}~{model_b}"


def raters_needed(n_ratings: int, max_share: float = MAX_RATER_SHARE) -> int:
    """The fewest raters for which nobody gives more than `max_share` of `n_ratings`.

    A rater may give at most max(1, floor(max_share * n_ratings)) ratings (2500 ratings: 50
    each, so 50 raters)."""
    cap = max(1, math.floor(max_share * n_ratings + 1e-9))
    return math.ceil(n_ratings / cap)


def _balanced_prompts(n_prompts: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Prompt indices, each used floor(n/P) or floor(n/P) + 1 times, in a random order."""
    reps = np.full(n_prompts, n // n_prompts, dtype=np.int64)
    extra = n % n_prompts
    if extra:
        reps[rng.choice(n_prompts, size=extra, replace=False)] += 1
    return rng.permutation(np.repeat(np.arange(n_prompts), reps))


def design_study(
    model_a: str,
    model_b: str,
    prompt_ids: Sequence[int | str],
    n_ratings: int = N_RATINGS,
    rng: np.random.Generator | None = None,
    n_raters: int | None = None,
    *,
    aspect: str = "overall",
    set: str = "",
    study: str | None = None,
    raters: Sequence[str] | None = None,
    shuffle_sides: bool = True,
) -> list[Rating]:
    """The rows (choice None) of one study: `n_ratings` comparisons of two models (Sec. 3.1).

    - Prompts: uniform and balanced: each prompt is rated floor(n/P) times or once more (the
      extra ones drawn at random), in a random order.
    - Sides: each row shows the two models in a random order (`shuffle_sides=False` always puts
      `model_a` on the left; only useful to show what shuffling protects against).
    - Raters: `n_raters` (default: the fewest for which each gives <= 2 % of the study, see
      `raters_needed`), each given floor(n/R) or one more rows at random. Their names are
      `raters` (a pool to take the first `n_raters` from) or `"{study}#r{k}"`.
    """
    if rng is None:
        raise ValueError("design_study needs rng: a numpy Generator (np.random.default_rng(seed))")
    _check_aspect(aspect)
    if model_a == model_b:
        raise ValueError(f"a study compares two different models, got {model_a!r} twice")
    prompt_ids = list(prompt_ids)
    if not prompt_ids:
        raise ValueError("empty prompt set: a study needs at least one prompt id")
    if len(set_of := {*prompt_ids}) != len(prompt_ids):
        raise ValueError(f"prompt ids must be distinct ({len(prompt_ids) - len(set_of)} repeated)")
    if isinstance(n_ratings, bool) or not isinstance(n_ratings, (int, np.integer)) or n_ratings < 1:
        raise ValueError(f"n_ratings must be a positive integer, got {n_ratings!r}")
    n = int(n_ratings)
    needed = raters_needed(n)
    if n_raters is None:
        n_raters = needed
    elif n_raters < needed:
        cap = max(1, math.floor(MAX_RATER_SHARE * n + 1e-9))
        raise ValueError(
            f"n_raters={n_raters} is too few: each rater may give at most {cap} of {n} ratings "
            f"(2 %), so a study needs at least {needed} raters"
        )
    n_raters = min(int(n_raters), n)
    study = study if study is not None else study_name(aspect, set, model_a, model_b)
    if raters is None:
        names = [f"{study}#r{k}" for k in range(n_raters)]
    else:
        if len(raters) < n_raters:
            raise ValueError(f"rater pool of {len(raters)} is smaller than n_raters={n_raters}")
        names = list(raters[:n_raters])
    which = _balanced_prompts(len(prompt_ids), n, rng)
    flip = rng.random(n) < 0.5 if shuffle_sides else np.zeros(n, dtype=bool)
    who = rng.permutation(n) % n_raters
    return [
        Rating(
            study=study,
            set=set,
            aspect=aspect,
            prompt_id=prompt_ids[int(p)],
            model_a=model_b if f else model_a,
            model_b=model_a if f else model_b,
            choice=None,
            rater=names[int(r)],
        )
        for p, f, r in zip(which, flip, who)
    ]


def design_round_robin(
    models: Sequence[str],
    aspects: Sequence[str] = ASPECTS,
    sets: Mapping[str, Sequence[int | str]] | None = None,
    n_ratings: int = N_RATINGS,
    rng: np.random.Generator | None = None,
    n_raters: int | None = None,
    *,
    shuffle_sides: bool = True,
    max_study_share: float = MAX_STUDY_SHARE,
) -> list[Rating]:
    """Every model pair x aspect x prompt set, one `design_study` each (Sec. 3.1's Elo needs a
    full round robin). `sets` maps a prompt-set name to its prompt ids.

    Raters come from one shared pool, assigned cyclically over a shuffled pool so that each
    rater takes part in at most max(1, floor(10 % of the studies)) studies and gives at most
    2 % of each study.
    """
    if rng is None:
        raise ValueError("design_round_robin needs rng: a numpy Generator")
    models = list(models)
    if len(models) < 2 or len(set(models)) != len(models):
        raise ValueError(f"a round robin needs at least two distinct models, got {models}")
    aspects = [_check_aspect(a) for a in aspects]
    if not aspects:
        raise ValueError(f"no aspects given; valid aspects: {', '.join(ASPECTS)}")
    if not sets:
        raise ValueError("no prompt sets given: pass sets={name: prompt_ids}")
    for name, ids in sets.items():
        if len(ids) == 0:
            raise ValueError(f"empty prompt set {name!r}")
    pairs = list(combinations(models, 2))
    n_studies = len(pairs) * len(aspects) * len(sets)
    per_study = n_raters if n_raters is not None else raters_needed(n_ratings)
    max_studies = max(1, math.floor(max_study_share * n_studies + 1e-9))
    pool_size = max(per_study, math.ceil(n_studies * per_study / max_studies))
    pool = [f"rater{k:05d}" for k in rng.permutation(pool_size)]
    rows: list[Rating] = []
    s = 0
    for aspect in aspects:
        for set_name, ids in sets.items():
            for a, b in pairs:
                start = s * per_study
                names = [pool[(start + k) % pool_size] for k in range(per_study)]
                rows += design_study(
                    a,
                    b,
                    ids,
                    n_ratings,
                    rng,
                    per_study,
                    aspect=aspect,
                    set=set_name,
                    raters=names,
                    shuffle_sides=shuffle_sides,
                )
                s += 1
    return rows


design_studies = design_round_robin  # the name used in the package's interface notes


def run_study(
    design: Sequence[Rating], rate_fn: Callable[[list[Rating]], Sequence[Any]]
) -> list[Rating]:
    """Fill in the choices of a design with `rate_fn(rows) -> choices` (one call, vectorised).

    `rate_fn` returns one choice per row: "left" / "right" / "tie", or the integers 0 / 1 / 2
    for them (an array). Any callable works: simulated raters looking at two models' images,
    or a lookup into collected human ratings.
    """
    rows = list(design)
    if not rows:
        raise ValueError("empty design: nothing to rate")
    out = rate_fn(rows)
    choices = list(np.asarray(out).tolist()) if isinstance(out, np.ndarray) else list(out)
    if len(choices) != len(rows):
        raise ValueError(f"rate_fn returned {len(choices)} choices for {len(rows)} rows")
    filled = []
    for i, (row, c) in enumerate(zip(rows, choices)):
        if isinstance(c, (int, np.integer)) and not isinstance(c, bool) and 0 <= c < len(CHOICES):
            c = CHOICES[int(c)]
        if c not in CHOICES:
            raise ValueError(
                f"rate_fn's choice {i} is {c!r}; valid choices: {', '.join(CHOICES)} (or 0, 1, 2)"
            )
        filled.append(dataclasses.replace(row, choice=c))
    return filled


def write_ratings(path: str | os.PathLike, ratings: Sequence[Rating]) -> None:
    """Ratings as JSON lines, one object per rating with the keys `FIELDS`, written atomically."""
    lines = []
    for i, r in enumerate(ratings):
        if not isinstance(r, Rating):
            raise ValueError(f"item {i} is a {type(r).__name__}, not a Rating")
        if r.choice is None:
            raise ValueError(f"rating {i} ({r.study}) has no choice: run the study first")
        lines.append(json.dumps(r.to_dict(), ensure_ascii=False))
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def read_ratings(path: str | os.PathLike) -> list[Rating]:
    """Ratings from a JSON-lines file (blank lines skipped). A bad line raises one ValueError
    naming the file, the line number and the problem (unknown aspects and choices list the
    valid ones)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}, line {lineno}: not valid JSON ({e.msg})") from None
            try:
                out.append(Rating.from_dict(d))
            except (ValueError, TypeError) as e:
                raise ValueError(f"{path}, line {lineno}: {e}") from None
    return out


def rater_shares(ratings: Sequence[Rating]) -> dict[str, float]:
    """Per study, the largest share of its ratings that one rater gave (<= 0.02 by design)."""
    by_study: dict[str, dict[str, int]] = {}
    for r in ratings:
        d = by_study.setdefault(r.study, {})
        d[r.rater] = d.get(r.rater, 0) + 1
    return {s: max(d.values()) / sum(d.values()) for s, d in by_study.items()}
