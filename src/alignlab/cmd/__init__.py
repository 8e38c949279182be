"""CMD: contrastive successor features give a quasimetric temporal distance.

Implements Myers, Zheng, Dragan, Levine, Eysenbach, "Learning Temporal Distances: Contrastive
Successor Features Can Provide a Metric Structure for Decision-Making", ICML 2024
(arXiv 2406.17098): the successor distance d_SD(s, g) = log p_gamma(g | g) - log p_gamma(g | s),
exact on finite MDPs, its alternatives, and the environments of the notes' scaled-down settings.

- tabular.py    TabularMDP, random stochastic MDPs, exact discounted occupancies, episodes
- distances.py  exact d_SD (state, state-action, pair, critic target), alternatives, quasimetric check
- maze.py       GridMaze (gymnasium), its transition tensor, the A -> B, B -> C stitching data, oracle
- pointmaze.py  the one-way 2D pointmaze with snapped dynamics and Gaussian noise (gymnasium)
- methods/      CMD-2, CMD-1 and the baselines CRL, GCBC, TD, QRL (one module each, one config)
- train.py      one unit's offline loop: sample, update, log, evaluate, checkpoint/resume
- experiments/  cmd.stitching, cmd.triangle, cmd.pointmaze and their claims, one module each
"""

from .distances import (
    QuasimetricCheck,
    check_quasimetric,
    conditional_hitting_time,
    critic_successor_distance,
    discounted_time_gap,
    exact_distances,
    expected_hitting_time,
    mean_time_gap,
    neg_log_occupancy,
    pair_successor_distance,
    successor_distance,
    successor_distance_sa,
)
from .maze import GridMaze, stitching_dataset, stitching_maze, stitching_tasks
from .pointmaze import PointMaze
from .tabular import (
    TabularMDP,
    discounted_occupancy,
    discounted_occupancy_sa,
    random_mdp,
    sample_episodes,
    successor_matrix,
    transition_matrix,
)

__all__ = [
    "GridMaze",
    "PointMaze",
    "QuasimetricCheck",
    "TabularMDP",
    "check_quasimetric",
    "conditional_hitting_time",
    "critic_successor_distance",
    "discounted_occupancy",
    "discounted_occupancy_sa",
    "discounted_time_gap",
    "exact_distances",
    "expected_hitting_time",
    "mean_time_gap",
    "neg_log_occupancy",
    "pair_successor_distance",
    "random_mdp",
    "sample_episodes",
    "stitching_dataset",
    "stitching_maze",
    "stitching_tasks",
    "successor_distance",
    "successor_distance_sa",
    "successor_matrix",
    "transition_matrix",
]
