"""The CMD experiments and their claims (Myers et al., ICML 2024).

- cmd.stitching  grid maze, data only A -> B and B -> C: success on held-out A -> C tasks of
                 CMD-2, CMD-1, CRL, GCBC, TD and QRL over seeds (notes, "Scaled-down settings").
- cmd.triangle   random stochastic MDPs: the exact d_SD is a quasimetric and the alternatives are
                 not; a learned CMD-2 distance tracks the exact one and its head never violates
                 the triangle inequality.
- cmd.pointmaze  the one-way vortex pointmaze from random walks: success vs gradient steps.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

from alignlab.core.claims import Claim
from alignlab.core.experiment import Experiment, register
from alignlab.rl import EpisodeDataset

from .distances import (
    check_quasimetric,
    critic_successor_distance,
    exact_distances,
    mean_time_gap,
    pair_successor_distance,
)
from .maze import stitching_dataset, stitching_maze, stitching_tasks
from .methods import METHODS, ActionSpec, MethodConfig
from .pointmaze import PointMaze, featurize
from .tabular import discounted_occupancy_sa, random_mdp, sample_episodes
from .train import LoopConfig, Unit, train_units

PAPER = "Myers et al. 2024, Learning Temporal Distances (CMD), ICML 2024"
ALL_METHODS = tuple(METHODS)
LABELS = {"cmd2": "CMD-2", "cmd1": "CMD-1", "crl": "CRL", "gcbc": "GCBC", "td": "TD", "qrl": "QRL"}


def mean_ci95(values) -> tuple[float, float]:
    """Mean and half-width of the 95% Student-t CI across seeds (0 for one seed)."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return float(x.mean()), 0.0
    return float(x.mean()), float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / len(x) ** 0.5)


def _episodes(episodes, spec: ActionSpec) -> EpisodeDataset:
    """Dataset with actions in the networks' encoding (one-hot for discrete actions)."""
    return EpisodeDataset.from_episodes(
        [{"obs": e["obs"], "action": spec.encode(e["actions"])} for e in episodes]
    )


def _summarise(units_out: dict, methods, seeds) -> dict:
    per = {}
    for m in methods:
        finals = [units_out[Unit(m, s).key]["final_success"] for s in seeds]
        mean, half = mean_ci95(finals)
        per[m] = {
            "success": finals,
            "mean": mean,
            "ci95": half,
            "curves": [units_out[Unit(m, s).key]["curve"] for s in seeds],
            "losses": [units_out[Unit(m, s).key]["losses"] for s in seeds],
        }
    return per


def _set_threads(n: int) -> None:
    torch.set_num_threads(max(1, n))


def epsilon_greedy(act, n_actions: int, epsilon: float, rng: np.random.Generator):
    """Evaluation policy shared by every method: the method's greedy action, replaced with
    probability `epsilon` by a uniform action (discrete action indices).

    Why: value-based methods separate actions by little (one grid step is about
    log(1/gamma) ~ 0.2 nats at gamma 0.8), so a greedy policy with a single wrong cell loops
    between two cells for ever; a little exploration breaks such loops. It applies to all
    methods alike (GCBC included) with one fixed epsilon, so it favours none.
    """
    if epsilon <= 0:
        return act

    def policy(obs, goal):
        a = np.asarray(act(obs, goal)).copy()
        explore = rng.random(len(a)) < epsilon
        a[explore] = rng.integers(n_actions, size=int(explore.sum()))
        return a

    return policy


# ---------------------------------------------------------------------------------------
# cmd.stitching


@dataclass
class StitchingConfig:
    methods: tuple[str, ...] = ALL_METHODS
    # 4 seeds: the claim compares 95% t-CIs, whose half-width is 4.30 sd / sqrt(3) at 3 seeds
    # but 3.18 sd / 2 at 4
    n_seeds: int = 4
    obs_mode: str = "onehot"  # grid cells as one-hot vectors ("xy" for coordinates)
    slip: float = 0.0
    n_per_leg: int = 200  # walkers per leg (A -> B, B -> C)
    epsilon: float = 0.2  # walkers' random-move probability
    n_eval_tasks: int = 200
    max_steps: int = 100
    act_epsilon: float = 0.1  # evaluation: epsilon-greedy for every method (epsilon_greedy)
    threads: int = 1
    # shared by all methods. goal_current: goals from the k >= 0 occupancy, the one for which
    # d_SD is a quasimetric and the CMD-2 target f(g, a_g, g) - f(s, a, g) is >= 0 on
    # positives. bc_coef: the behaviour prior added to every method's action scores (Method.act)
    method: MethodConfig = field(
        default_factory=lambda: MethodConfig(gamma=0.8, lr=1e-3, goal_current=True, bc_coef=0.3)
    )
    # CMD-2 plateaus by ~1000 steps; CMD-1 still moves between 0.7 and 0.95 up to 2000
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(steps=2000, eval_every=500))

    def validate(self):
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; valid: {', '.join(METHODS)}")
        if not 0 <= self.act_epsilon <= 1:
            raise ValueError(f"act_epsilon must lie in [0, 1], got {self.act_epsilon}")
        if self.n_seeds < 1:
            raise ValueError("n_seeds must be >= 1")


def run_stitching(ctx) -> dict:
    cfg: StitchingConfig = ctx.config
    _set_threads(cfg.threads)
    maze = stitching_maze(slip=cfg.slip, obs_mode=cfg.obs_mode)
    spec = ActionSpec.discrete_actions(maze.action_space.n)
    seeds = list(range(cfg.n_seeds))
    datasets = {}

    def data(unit: Unit) -> EpisodeDataset:  # one dataset per seed, shared by the methods
        if unit.seed not in datasets:
            eps = stitching_dataset(
                maze, ctx.seed * 1000 + unit.seed, n_per_leg=cfg.n_per_leg, epsilon=cfg.epsilon
            )
            datasets[unit.seed] = _episodes(eps, spec)
        return datasets[unit.seed]

    def evaluate(method, rng) -> float:
        tasks = stitching_tasks(maze, rng, cfg.n_eval_tasks)
        policy = epsilon_greedy(method.act, spec.candidates.shape[0], cfg.act_epsilon, rng)
        return maze.evaluate(policy, tasks, rng, cfg.max_steps)

    units = [Unit(m, s) for m in cfg.methods for s in seeds]
    out = train_units(ctx, units, data, spec, cfg.method, cfg.loop, evaluate)
    oracle_rng = np.random.default_rng(ctx.seed)
    oracle = maze.evaluate(
        maze.oracle_policy(), stitching_tasks(maze, oracle_rng, cfg.n_eval_tasks), oracle_rng
    )
    return {"methods": _summarise(out, cfg.methods, seeds), "oracle_success": oracle}


def _fmt(r: dict, m: str) -> str:
    x = r["methods"][m]
    return f"{LABELS[m]} {x['mean']:.2f} ± {x['ci95']:.2f}"


def _beats(r: dict, winners, losers) -> tuple:
    """Every winner's CI lies above every loser's CI (Student-t 95%, across seeds)."""
    ms = r["methods"]
    present = [m for m in (*winners, *losers) if m in ms]
    holds = all(
        ms[w]["mean"] - ms[w]["ci95"] > ms[lo]["mean"] + ms[lo]["ci95"]
        for w in winners
        if w in ms
        for lo in losers
        if lo in ms
    ) and all(m in ms for m in (*winners, *losers))
    return "; ".join(_fmt(r, m) for m in present), holds


def plot_success(results: dict, ctx, name: str, title: str) -> None:
    from alignlab.core.plotting import plt

    ms = results["methods"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    names = list(ms)
    a.bar(
        range(len(names)),
        [ms[m]["mean"] for m in names],
        yerr=[ms[m]["ci95"] for m in names],
        capsize=4,
        color=["C0" if m.startswith("cmd") else "C7" for m in names],
    )
    a.set_xticks(range(len(names)), [LABELS[m] for m in names])
    a.set(ylabel="success rate", ylim=(0, 1.05), title=f"{title}: final success (95% CI)")
    for i, m in enumerate(names):
        curves = np.array(ms[m]["curves"], dtype=float)  # (seeds, evals, 2)
        mean = curves[:, :, 1].mean(0)
        b.plot(curves[0, :, 0], mean, "o-", color=f"C{i}", label=LABELS[m])
        if len(curves) > 1:
            b.fill_between(
                curves[0, :, 0],
                curves[:, :, 1].min(0),
                curves[:, :, 1].max(0),
                color=f"C{i}",
                alpha=0.15,
            )
    b.set(xlabel="gradient steps", ylabel="success rate", ylim=(0, 1.05), title="success vs steps")
    b.legend(fontsize=7)
    ctx.save_figure(fig, name)


# ---------------------------------------------------------------------------------------
# cmd.triangle


@dataclass
class TriangleConfig:
    n_mdps: int = 100  # random stochastic MDPs in the population
    n_states: int = 8
    n_actions: int = 3
    branching: int = 3
    gamma: float = 0.9
    gap_episodes: int = 40  # episodes per MDP for the data-estimated mean time gap
    gap_length: int = 100
    # the learned CMD-2 distance on one small MDP (one-hot observations)
    learn_states: int = 8
    learn_actions: int = 2
    learn_episodes: int = 400
    learn_length: int = 100
    ablation: bool = True  # also train the unconstrained MLP-distance head
    # its batch: the MLP head scores all B x B pairs with an MLP, the slow part of the run
    ablation_batch: int = 64
    threads: int = 1
    method: MethodConfig = field(
        default_factory=lambda: MethodConfig(gamma=0.9, goal_current=True, lr=1e-3)
    )
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(steps=3000))

    def validate(self):
        if self.n_mdps < 1 or self.n_states < 2:
            raise ValueError("need n_mdps >= 1 and n_states >= 2")
        if not self.method.goal_current:
            raise ValueError(
                "method.goal_current must be True: the learned distance is compared with the "
                "exact d_SD of the k >= 0 occupancy, the one that is a quasimetric"
            )


PROPERTIES = ("negative", "diagonal", "triangle")


def _violations(D: np.ndarray) -> dict:
    c = check_quasimetric(D, tol=1e-7)
    return {
        "negative": c.n_negative,
        "diagonal": c.n_diagonal,
        "triangle": c.n_triangle,
        "frac_triangle": c.frac_triangle,
        "ok": c.ok,
    }


def population_study(cfg: TriangleConfig, seed: int) -> dict:
    """Violation counts of every candidate distance over a population of random MDPs."""
    rng = np.random.default_rng(seed)
    per: dict[str, list[dict]] = {}
    for _ in range(cfg.n_mdps):
        mdp = random_mdp(rng, cfg.n_states, cfg.n_actions, cfg.branching)
        cands = exact_distances(mdp, cfg.gamma)
        eps = sample_episodes(mdp, rng, cfg.gap_episodes, cfg.gap_length, one_hot=False)
        cands["mean_time_gap"] = mean_time_gap(eps, cfg.n_states, first_visit=True)
        cands["mean_time_gap_all"] = mean_time_gap(eps, cfg.n_states, first_visit=False)
        for name, D in cands.items():
            per.setdefault(name, []).append(_violations(D))
    out = {}
    for name, rows in per.items():
        out[name] = {
            "mdps_violating": {p: int(sum(r[p] > 0 for r in rows)) for p in PROPERTIES},
            "violations": {p: int(sum(r[p] for r in rows)) for p in PROPERTIES},
            "mean_frac_triangle": float(np.mean([r["frac_triangle"] for r in rows])),
            "mdps_ok": int(sum(r["ok"] for r in rows)),
        }
    return out


def learned_distance_study(ctx, cfg: TriangleConfig) -> dict:
    """Train CMD-2 on episodes of one small MDP and compare d_theta with the exact d_SD."""
    from scipy.stats import spearmanr

    rng = np.random.default_rng([ctx.seed, 7])
    S, A = cfg.learn_states, cfg.learn_actions
    mdp = random_mdp(rng, S, A, min(cfg.branching, S))
    spec = ActionSpec.discrete_actions(A)
    data = _episodes(sample_episodes(mdp, rng, cfg.learn_episodes, cfg.learn_length), spec)
    # every state-action pair x = (s, a) as the networks see it: [one-hot s, one-hot a]
    sa = np.concatenate(
        [
            np.repeat(np.eye(S, dtype=np.float32), A, 0),
            np.tile(np.eye(A, dtype=np.float32), (S, 1)),
        ],
        1,
    )
    target = critic_successor_distance(discounted_occupancy_sa(mdp, cfg.gamma)).reshape(
        S * A, S * A
    )
    pair = pair_successor_distance(mdp, cfg.gamma).reshape(S * A, S * A)
    state = np.repeat(np.arange(S), A)
    other = state[:, None] != state[None, :]  # s != g: where the comparisons are defined

    def finish(method) -> dict:
        with torch.no_grad():  # embeddings in float32, the head's arithmetic in float64
            z = method.qd.sa_encoder(torch.as_tensor(sa)).double()
            D = method.qd.head.double().pairwise(z, z).numpy()
            method.qd.head.float()
        rhos = [
            spearmanr(D[other[:, j], j], target[other[:, j], j]).statistic for j in range(S * A)
        ]
        return {
            "per_goal_spearman": float(np.nanmean(rhos)),
            "overall_spearman_target": float(spearmanr(D[other], target[other]).statistic),
            "overall_spearman_pair_dsd": float(spearmanr(D[other], pair[other]).statistic),
            "quasimetric_check": _violations(D),
            "n_pairs": S * A,
        }

    # unit seed 0: the MRN head; unit seed 1: the unconstrained MLP-distance ablation
    units = [Unit("cmd2", 0)] + ([Unit("cmd2", 1)] if cfg.ablation else [])
    mrn = cfg.method
    ablation = dataclasses.replace(cfg.method, head="mlp", batch_size=cfg.ablation_batch)
    out = train_units(
        ctx, units, data, spec, lambda u: mrn if u.seed == 0 else ablation, cfg.loop, finish=finish
    )
    return {"quasimetric": out["cmd2/seed0"], "ablation": out.get("cmd2/seed1")}


def run_triangle(ctx) -> dict:
    cfg: TriangleConfig = ctx.config
    _set_threads(cfg.threads)
    population = population_study(cfg, ctx.seed)
    learned = learned_distance_study(ctx, cfg)
    return {"population": population, "learned": learned, "n_mdps": cfg.n_mdps}


NOT_QUASIMETRICS = ("neg_log_occupancy", "successor_distance_strict", "mean_time_gap")


def _claim_exact_dsd(r: dict) -> tuple:
    d = r["population"]["successor_distance"]
    v = d["violations"]
    measured = (
        f"{d['mdps_ok']}/{r['n_mdps']} MDPs with no violation "
        f"(negative {v['negative']}, diagonal {v['diagonal']}, triangle {v['triangle']})"
    )
    return measured, d["mdps_ok"] == r["n_mdps"]


def _claim_alternatives(r: dict) -> tuple:
    lines, bad = [], []
    for name, d in r["population"].items():
        m = d["mdps_violating"]
        lines.append(
            f"{name}: MDPs violating non-negativity {m['negative']}, d(s,s)=0 {m['diagonal']}, "
            f"triangle {m['triangle']} of {r['n_mdps']} (mean share of triples violating "
            f"{d['mean_frac_triangle']:.4f})"
        )
        if name in NOT_QUASIMETRICS and d["mdps_ok"] < r["n_mdps"]:
            bad.append(name)
    measured = ", ".join(
        f"{n}: {r['n_mdps'] - r['population'][n]['mdps_ok']}/{r['n_mdps']} MDPs violate"
        for n in NOT_QUASIMETRICS
    )
    return measured, len(bad) == len(NOT_QUASIMETRICS), "\n".join(lines)


def _claim_learned_rho(r: dict) -> tuple:
    q = r["learned"]["quasimetric"]
    measured = (
        f"per-goal Spearman ρ = {q['per_goal_spearman']:.3f} (overall vs critic target "
        f"{q['overall_spearman_target']:.3f}, vs pair d_SD {q['overall_spearman_pair_dsd']:.3f})"
    )
    return measured, q["per_goal_spearman"] >= 0.8


def _claim_learned_triangle(r: dict) -> tuple:
    q = r["learned"]["quasimetric"]["quasimetric_check"]
    a = r["learned"].get("ablation")
    measured = f"MRN head: {q['triangle']} triangle violations over all triples of (s, a) pairs"
    if a:
        measured += f"; MLP-distance ablation: {a['quasimetric_check']['triangle']}"
    return measured, q["triangle"] == 0 and q["negative"] == 0 and q["diagonal"] == 0


def plot_triangle(results: dict, ctx) -> None:
    from alignlab.core.plotting import plt

    pop = results["population"]
    names = list(pop)
    fig, ax = plt.subplots(figsize=(10, 3.8))
    x = np.arange(len(names))
    for k, p in enumerate(PROPERTIES):
        ax.bar(x + (k - 1) * 0.27, [pop[n]["mdps_violating"][p] for n in names], 0.27, label=p)
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=7)
    ax.set(ylabel=f"MDPs violating (of {results['n_mdps']})", title="quasimetric properties")
    ax.legend(fontsize=7)
    ctx.save_figure(fig, "triangle")


# ---------------------------------------------------------------------------------------
# cmd.pointmaze


@dataclass
class PointmazeConfig:
    methods: tuple[str, ...] = ALL_METHODS
    n_seeds: int = 2
    n_trajectories: int = 1000
    n_directions: int = 16  # the candidate action set: unit directions
    n_eval_episodes: int = 200
    max_steps: int = 100
    features: bool = True  # the notebook's tanh position features (pointmaze.featurize)
    threads: int = 1
    # the notebook's shared settings: gamma 0.8, Adam 1e-3, 64 x 3 swish MLPs, a learned actor
    # with BC coefficient 0.01 (GCBC is its own policy)
    method: MethodConfig = field(
        default_factory=lambda: MethodConfig(
            gamma=0.8,
            lr=1e-3,
            hidden=(64, 64, 64),
            activation="swish",
            goal_current=True,
            actor=True,
        )
    )
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(steps=3000, eval_every=500))

    def validate(self):
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; valid: {', '.join(METHODS)}")


def run_pointmaze(ctx) -> dict:
    cfg: PointmazeConfig = ctx.config
    _set_threads(cfg.threads)
    env = PointMaze()
    spec = ActionSpec.directions(cfg.n_directions)
    seeds = list(range(cfg.n_seeds))
    datasets = {}

    def data(unit: Unit) -> EpisodeDataset:
        if unit.seed not in datasets:
            rng = np.random.default_rng([ctx.seed, unit.seed, 11])
            eps = env.random_walk_dataset(rng, cfg.n_trajectories)
            if cfg.features:
                eps = [{**e, "obs": featurize(e["obs"])} for e in eps]
            datasets[unit.seed] = _episodes(eps, spec)
        return datasets[unit.seed]

    def evaluate(method, rng) -> float:
        act = method.act
        if cfg.features:
            act = lambda obs, goal: method.act(featurize(obs), featurize(goal))  # noqa: E731
        return env.evaluate(act, cfg.n_eval_episodes, rng, cfg.max_steps)

    units = [Unit(m, s) for m in cfg.methods for s in seeds]
    out = train_units(ctx, units, data, spec, cfg.method, cfg.loop, evaluate)
    oracle = env.evaluate(env.oracle_policy(), cfg.n_eval_episodes, np.random.default_rng(ctx.seed))
    return {"methods": _summarise(out, cfg.methods, seeds), "oracle_success": oracle}


def _claim_pointmaze(r: dict) -> tuple:
    ms = r["methods"]
    need = ("cmd2", "crl", "gcbc")
    if not all(m in ms for m in need):
        return "methods missing", False
    holds = ms["cmd2"]["mean"] > max(ms["crl"]["mean"], ms["gcbc"]["mean"])
    return "; ".join(_fmt(r, m) for m in ms), holds


# ---------------------------------------------------------------------------------------
# registration

_SMOKE_LOOP = LoopConfig(steps=20, log_every=10, eval_every=10, checkpoint_every=10)
_SMOKE_METHOD = MethodConfig(batch_size=32, hidden=(32,), repr_dim=16)

register(
    Experiment(
        name="cmd.stitching",
        paper=PAPER,
        description="Stitching: success on held-out A -> C tasks from A -> B, B -> C data",
        config=StitchingConfig,
        presets={
            "smoke": StitchingConfig(
                n_seeds=2, n_per_leg=20, n_eval_tasks=20, method=_SMOKE_METHOD, loop=_SMOKE_LOOP
            ),
            "quick": StitchingConfig(),
            "paper": StitchingConfig(
                n_seeds=5,
                method=dataclasses.replace(
                    StitchingConfig().method, hidden=(512, 512, 512, 512), repr_dim=64
                ),
                loop=LoopConfig(steps=100_000, eval_every=10_000, checkpoint_every=5000),
            ),
        },
        run=run_stitching,
        claims=[
            Claim(
                "cmd_stitches",
                "CMD (both variants) beats CRL and GCBC on stitching, outside the 95% CIs "
                "(notes: 'CMD and QRL should succeed, CRL and GCBC should degrade')",
                lambda r: _beats(r, ("cmd2", "cmd1"), ("crl", "gcbc")),
            ),
        ],
        plots=lambda r, ctx: plot_success(r, ctx, "stitching", "A → C"),
    )
)

register(
    Experiment(
        name="cmd.triangle",
        paper=PAPER,
        description="d_SD is a quasimetric under stochastic dynamics; alternatives are not",
        config=TriangleConfig,
        presets={
            "smoke": TriangleConfig(
                n_mdps=5,
                gap_episodes=5,
                learn_episodes=20,
                learn_length=30,
                method=dataclasses.replace(_SMOKE_METHOD, goal_current=True),
                loop=dataclasses.replace(_SMOKE_LOOP),
            ),
            "quick": TriangleConfig(),
            "paper": TriangleConfig(
                n_mdps=1000,
                n_states=12,
                learn_states=16,
                learn_actions=3,
                learn_episodes=2000,
                loop=LoopConfig(steps=50_000, checkpoint_every=5000),
            ),
        },
        run=run_triangle,
        claims=[
            Claim(
                "dsd_is_quasimetric",
                "The successor distance is non-negative, zero on the diagonal and satisfies the "
                "triangle inequality even with stochastic dynamics (abstract; notes, d_SD)",
                _claim_exact_dsd,
            ),
            Claim(
                "alternatives_fail",
                "Earlier temporal distances (−log p_γ, d_SD without the k = 0 term, the mean time "
                "gap between states in the data) violate these properties (abstract)",
                _claim_alternatives,
            ),
            Claim(
                "learned_tracks_exact",
                "The learned CMD-2 distance orders state-action pairs like the exact d_SD "
                "(per-goal Spearman ρ ≥ 0.8; notes, 'correlation with exact d_SD')",
                _claim_learned_rho,
            ),
            Claim(
                "learned_head_triangle",
                "The distilled quasimetric head never violates the triangle inequality "
                "(by construction; notes, 'Quasimetric architecture')",
                _claim_learned_triangle,
            ),
        ],
        plots=plot_triangle,
    )
)

register(
    Experiment(
        name="cmd.pointmaze",
        # issue 3, blocked: the claim does not hold at the CPU budget. With the learned actor
        # CMD-2 ends at 0.84 and CRL at 0.88 (0.915 vs 0.918 at 8000 steps, and no separation
        # on a map scaled to +-30 either); the notebook trains 500k steps (docs/cmd.md)
        wip=True,
        paper=PAPER,
        description="One-way vortex pointmaze from random walks: success vs gradient steps",
        config=PointmazeConfig,
        presets={
            "smoke": PointmazeConfig(
                n_seeds=1,
                n_trajectories=50,
                n_eval_episodes=10,
                max_steps=20,
                method=_SMOKE_METHOD,
                loop=_SMOKE_LOOP,
            ),
            "quick": PointmazeConfig(),
            "paper": PointmazeConfig(
                n_seeds=5,
                n_trajectories=2000,
                n_eval_episodes=1500,
                method=dataclasses.replace(
                    PointmazeConfig().method, hidden=(256, 256, 256), repr_dim=256
                ),
                loop=LoopConfig(steps=100_000, eval_every=5000, checkpoint_every=5000),
            ),
        },
        run=run_pointmaze,
        claims=[
            Claim(
                "cmd_beats_crl_gcbc",
                "CMD reaches a higher final success rate than CRL and GCBC on the pointmaze "
                "(notebook 'Pointmaze training curves')",
                _claim_pointmaze,
            )
        ],
        plots=lambda r, ctx: plot_success(r, ctx, "pointmaze", "pointmaze"),
    )
)
