"""DR-MDPs: alignment with changing and influenceable reward functions.

Implements Carroll, Foote, Siththaranjan, Russell, Dragan, "AI Alignment with Changing and
Influenceable Reward Functions", ICML 2024 (arXiv 2405.17713): Dynamic Reward MDPs
(Definition 1), the eight alignment objectives, influence and influence incentives
(Definitions 6-7), unambiguous desirability and Pareto optimality (Definitions 9-10), the five
example DR-MDPs, Table 4, the horizon effect (section 3.1) and a larger recommender DR-MDP.

- model.py       DRMDP (exact Fractions + sparse float64), builders, random_drmdp
- objectives.py  the objectives, influence, UD and Pareto optimality, in exact arithmetic
- exact.py       reference solver: enumeration of deterministic (s, theta, t)-policies
- dp.py          backward induction on (s, theta), vectorised with numpy; policy evaluation
- examples.py    Conspiracy, Writer's Curse, Clickbait, Personal Trainer, Dehydration
- table4.py      the paper's Table 4 as data, compute_table4, explain_mismatches
- horizon.py     Conspiracy's H >= 3 threshold; incentive fraction vs horizon on random models
- recommender.py a recommender whose users' preferences drift toward what they are shown
"""

from .dp import DPSolution, evaluate_policy, influence_incentive, solve_dp, state_marginals
from .exact import ExactSolution, ExactSolver, solve_exact
from .examples import EXAMPLES, clickbait, conspiracy, dehydration, personal_trainer, writers_curse
from .horizon import conspiracy_threshold, incentive_fraction_by_horizon, random_influence_drmdp
from .model import DRMDP, Labelling, random_drmdp
from .objectives import OBJECTIVES, influences, trajectory_distribution
from .recommender import recommender_drmdp, recommender_study
from .table4 import DEFAULT_READINGS, PAPER_TABLE4, compute_table4, explain_mismatches

__all__ = [
    "DRMDP",
    "DEFAULT_READINGS",
    "DPSolution",
    "EXAMPLES",
    "ExactSolution",
    "ExactSolver",
    "Labelling",
    "OBJECTIVES",
    "PAPER_TABLE4",
    "clickbait",
    "compute_table4",
    "conspiracy",
    "conspiracy_threshold",
    "dehydration",
    "evaluate_policy",
    "explain_mismatches",
    "incentive_fraction_by_horizon",
    "influence_incentive",
    "influences",
    "personal_trainer",
    "random_drmdp",
    "random_influence_drmdp",
    "recommender_drmdp",
    "recommender_study",
    "solve_dp",
    "solve_exact",
    "state_marginals",
    "trajectory_distribution",
    "writers_curse",
]
