"""Imagen 3's evaluation suite (Imagen Team 2024, Secs. 3-4, App. C.1), model-agnostic.

Callables and arrays in, numbers out: nothing here knows how images were made or judged.

- `sxs`: side-by-side study designs (every pair x aspect x prompt set, 2500 ratings uniform over
  prompts, shuffled sides, an indifference option, <= 2 % of a study per rater), running them
  with any rater callable, ratings as JSON lines.
- `elo`: Bradley-Terry MLE on the Elo scale, ties as half wins; clustered, vectorised
  bootstrap CIs; win-rate matrices.
- `validation`: metric vs rater verdicts per model pair (Wilcoxon / binomial), agreement %.
- `features`: Fréchet distance in any feature space, CMMD.
- `measures`: counting accuracy, homogeneous-output share, violation / false-refusal rates,
  an output classifier's threshold, a red-team hill climb.
- `artifacts`: galleries (uint8 safetensors) and per-prompt scores.
"""

from .artifacts import load_gallery, load_scores, save_gallery, save_scores
from .elo import (
    ELO_MEAN,
    ELO_SCALE,
    EloCI,
    bootstrap_ci,
    bootstrap_elo,
    bradley_terry,
    cluster_wins,
    elo_from_wins,
    fit_theta_batch,
    resample_counts,
    win_rate_matrix,
    wins_matrix,
)
from .features import cmmd, frechet_distance, gaussian_stats
from .measures import (
    RedTeamResult,
    classifier_tradeoff,
    counting_accuracy,
    false_refusal_rate,
    homogeneous_share,
    red_team,
    violation_rate,
)
from .sxs import (
    ASPECTS,
    CHOICES,
    Rating,
    design_round_robin,
    design_studies,
    design_study,
    read_ratings,
    run_study,
    write_ratings,
)
from .validation import (
    VERDICTS,
    agreement,
    agreement_where_concur,
    metric_verdict,
    metric_verdicts,
    rater_verdict,
    rater_verdicts,
)

__all__ = [
    "ASPECTS",
    "CHOICES",
    "ELO_MEAN",
    "ELO_SCALE",
    "VERDICTS",
    "EloCI",
    "Rating",
    "RedTeamResult",
    "agreement",
    "agreement_where_concur",
    "bootstrap_ci",
    "bootstrap_elo",
    "bradley_terry",
    "classifier_tradeoff",
    "cluster_wins",
    "cmmd",
    "counting_accuracy",
    "design_round_robin",
    "design_studies",
    "design_study",
    "elo_from_wins",
    "false_refusal_rate",
    "fit_theta_batch",
    "frechet_distance",
    "gaussian_stats",
    "homogeneous_share",
    "load_gallery",
    "load_scores",
    "metric_verdict",
    "metric_verdicts",
    "rater_verdict",
    "rater_verdicts",
    "read_ratings",
    "red_team",
    "resample_counts",
    "run_study",
    "save_gallery",
    "save_scores",
    "violation_rate",
    "win_rate_matrix",
    "wins_matrix",
    "write_ratings",
]
