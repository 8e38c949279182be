"""Validating automatic metrics against raters, as in Imagen 3 App. C.1 (Imagen Team 2024).

For every model pair (the report uses 30: 15 pairs x 2 prompt sets), both the metric and the
raters give a verdict: model a better, model b better, or a tie.

- **Metric verdict:** a two-sided Wilcoxon signed-rank test (scipy's defaults: zero
  differences dropped, exact or normal-approximation p-value as scipy chooses) on the per-prompt
  score differences a - b. If p < 0.05, the winner is given by the sign of the median
  difference (of the mean when the median is 0); otherwise a tie.
- **Rater verdict:** a two-sided binomial test of a's wins against b's wins, ties dropped
  (p < 0.05), else a tie.
- **Agreement:** the % of pairs where the metric's verdict equals the raters' (the report:
  CLIPScore 43.3 %, VQAScore 80 %, Gecko 73.3 %), and, for two metrics, the agreement with the
  raters on the pairs where the two metrics concur, with the share of such pairs (the report:
  Gecko and VQAScore agree about 72 % of the time and then match the raters 94.4 %).

Verdicts are "a", "b" or "tie" for a pair key (a, b); any hashable key works (e.g.
(set, a, b)), as long as the dictionaries compared share their keys.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Iterable, Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np
from scipy import stats

from .sxs import Rating

VERDICTS = ("a", "b", "tie")
ALPHA = 0.05


def metric_verdict(
    scores_a: Sequence[float], scores_b: Sequence[float], alpha: float = ALPHA
) -> str:
    """'a', 'b' or 'tie' from a two-sided Wilcoxon signed-rank test on per-prompt differences."""
    a = np.asarray(scores_a, dtype=np.float64)
    b = np.asarray(scores_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(
            f"per-prompt scores must be 1-D and paired (same prompts), got {a.shape} and {b.shape}"
        )
    if a.size == 0:
        raise ValueError("no per-prompt scores")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("per-prompt scores must be finite")
    d = a - b
    if not np.any(d != 0):
        return "tie"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = float(stats.wilcoxon(d).pvalue)
    if not p < alpha:
        return "tie"
    direction = np.median(d) or np.mean(d)
    return "a" if direction > 0 else "b" if direction < 0 else "tie"


def rater_verdict(wins_a: int, wins_b: int, alpha: float = ALPHA) -> str:
    """'a', 'b' or 'tie' from a two-sided binomial test of a's wins against b's (ties dropped)."""
    wins_a, wins_b = int(wins_a), int(wins_b)
    if wins_a < 0 or wins_b < 0:
        raise ValueError("win counts must be >= 0")
    if wins_a + wins_b == 0:
        return "tie"
    p = stats.binomtest(wins_a, wins_a + wins_b, 0.5).pvalue
    if not p < alpha:
        return "tie"
    return "a" if wins_a > wins_b else "b" if wins_b > wins_a else "tie"


def metric_verdicts(
    scores: Mapping[str, Sequence[float]],
    pairs: Iterable[tuple[str, str]] | None = None,
    alpha: float = ALPHA,
) -> dict[tuple[str, str], str]:
    """Verdict per model pair from per-prompt scores {model: scores on the same prompts}."""
    pairs = list(pairs) if pairs is not None else list(combinations(scores, 2))
    out = {}
    for a, b in pairs:
        for m in (a, b):
            if m not in scores:
                raise ValueError(f"no scores for model {m!r}; scored: {', '.join(scores)}")
        out[(a, b)] = metric_verdict(scores[a], scores[b], alpha)
    return out


def pair_wins(ratings: Iterable[Rating]) -> dict[tuple[str, str], tuple[int, int, int]]:
    """{(a, b): (wins of a, wins of b, ties)} per unordered pair (a, b in first-seen order)."""
    out: dict[tuple[str, str], list[int]] = {}
    for r in ratings:
        key = (
            (r.model_a, r.model_b) if (r.model_b, r.model_a) not in out else (r.model_b, r.model_a)
        )
        c = out.setdefault(key, [0, 0, 0])
        if r.choice == "tie":
            c[2] += 1
        elif r.winner == key[0]:
            c[0] += 1
        elif r.winner == key[1]:
            c[1] += 1
        else:
            raise ValueError(f"rating of {r.study} has no choice: run the study first")
    return {k: (v[0], v[1], v[2]) for k, v in out.items()}


def rater_verdicts(
    ratings: Iterable[Rating],
    pairs: Iterable[tuple[str, str]] | None = None,
    alpha: float = ALPHA,
) -> dict[tuple[str, str], str]:
    """Raters' verdict per model pair from one study's (or any group's) ratings."""
    counts = pair_wins(ratings)
    if pairs is None:
        pairs = list(counts)
    out = {}
    for a, b in pairs:
        if (a, b) in counts:
            wa, wb, _ = counts[(a, b)]
        elif (b, a) in counts:
            wb, wa, _ = counts[(b, a)]
        else:
            raise ValueError(f"no ratings compare {a!r} and {b!r}")
        out[(a, b)] = rater_verdict(wa, wb, alpha)
    return out


def _flip(v: str) -> str:
    return {"a": "b", "b": "a"}.get(v, v)


def _aligned(x: Mapping[Hashable, str], ref: Mapping[Hashable, str]) -> dict[Hashable, str]:
    """x re-keyed to ref's keys; a 2-tuple key (b, a) in x counts as (a, b) with the verdict
    flipped. Missing pairs are one ValueError."""
    out, missing = {}, []
    for k in ref:
        if k in x:
            out[k] = x[k]
        elif isinstance(k, tuple) and len(k) == 2 and (k[1], k[0]) in x:
            out[k] = _flip(x[(k[1], k[0])])
        else:
            missing.append(k)
    if missing:
        raise ValueError(f"verdicts missing for {len(missing)} pair(s), e.g. {missing[:3]}")
    for k, v in [*out.items(), *ref.items()]:
        if v not in VERDICTS:
            raise ValueError(f"verdict {v!r} for {k}; valid verdicts: {', '.join(VERDICTS)}")
    return out


def agreement(metric: Mapping[Hashable, str], raters: Mapping[Hashable, str]) -> float:
    """% of pairs where the metric's verdict equals the raters' (ties count as verdicts)."""
    if not raters:
        raise ValueError("no rater verdicts")
    m = _aligned(metric, raters)
    return 100.0 * float(np.mean([m[k] == raters[k] for k in raters]))


def agreement_where_concur(
    verdicts_a: Mapping[Hashable, str],
    verdicts_b: Mapping[Hashable, str],
    raters: Mapping[Hashable, str],
) -> dict[str, Any]:
    """Agreement with the raters on the pairs where metrics a and b give the same verdict.

    Returns {"agreement": % (NaN if they never concur), "concur_share": % of pairs where they
    concur, "n_concur": int, "n_pairs": int}."""
    if not raters:
        raise ValueError("no rater verdicts")
    a = _aligned(verdicts_a, raters)
    b = _aligned(verdicts_b, raters)
    keys = [k for k in raters if a[k] == b[k]]
    agree = 100.0 * float(np.mean([a[k] == raters[k] for k in keys])) if keys else float("nan")
    return {
        "agreement": agree,
        "concur_share": 100.0 * len(keys) / len(raters),
        "n_concur": len(keys),
        "n_pairs": len(raters),
    }
