"""The DR-MDP experiments and their claims (Carroll et al., ICML 2024).

- drmdp.table4       Table 4: the representative optimal policy of every objective in every
                     example, exactly, with every disagreement explained by a reading.
- drmdp.horizon      Section 3.1: longer horizons increase the incentive to influence.
- drmdp.recommender  a recommender whose users' tastes drift toward what they are shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from alignlab.core.claims import Claim
from alignlab.core.config import ConfigError, param
from alignlab.core.experiment import Experiment, register

from .horizon import conspiracy_threshold, incentive_fraction_by_horizon
from .recommender import recommender_study
from .table4 import DEFAULT_READINGS, OBJECTIVE_NAMES, compute_table4, explain_mismatches

PAPER = "Carroll et al. 2024, AI Alignment with Changing and Influenceable Reward Functions"
CAUTIOUS = ("constrained_real_time", "pareto_ud")


# ---------------------------------------------------------------------------------------
# drmdp.table4


@dataclass
class Table4Config:
    """The readings of the paper's ambiguities (defaults: the paper's main reading).

    include_theta_H: xi^theta = theta_0..theta_{H-1} (Def. 5) or theta_0..theta_H.
    reward_argument: R_theta(s) scores s_t or s_{t+1}.
    poetry_node: Writer's Curse Fig. 2 poetry node is non-absorbing (unlabelled edge = a_noop).
    initial_theta0: Initial-reward cells claimed at the example's theta_0, or for all theta_0.
    r3_at_2: Dehydration's R_{theta=3}(2): -2 (Fig. 8 formula) or -5 (Appendix B.1).
    """

    include_theta_H: bool = param(False, help="xi^theta also holds theta_H (Def. 5 reading)")
    reward_argument: Literal["s_t", "s_next"] = param("s_t", help="R_theta scores s_t or s_{t+1}")
    poetry_node: Literal["non_absorbing", "absorbing"] = param(
        "non_absorbing", help="Writer's Curse Fig. 2: whether the poetry node is absorbing"
    )
    initial_theta0: Literal["default", "all"] = param(
        "default", help="Initial-reward cells claimed at the example's theta_0, or for all"
    )
    r3_at_2: Literal[-2, -5] = param(-2, help="Dehydration R_{theta=3}(2): -2 (Fig. 8) or -5 (B.1)")


def run_table4(ctx) -> dict:
    readings = vars(ctx.config).copy()
    ctx.log(f"solving Table 4 exactly under readings {readings}")
    table = compute_table4(**readings)
    disagreements = explain_mismatches(**readings)
    # the third-party reading: Initial-reward cells claimed for every theta_0 (52 cells)
    for_all = compute_table4(**{**readings, "initial_theta0": "all"})
    # xi^theta including theta_H: the reading under which the paper's Clickbait cell holds
    with_theta_H = compute_table4(**{**readings, "include_theta_H": True})
    return {
        **table,
        "disagreements": disagreements,
        "all_theta0": {
            "n_cells": for_all["n_cells"],
            "n_match": for_all["n_match"],
            "mismatches": for_all["mismatches"],
        },
        "theta_H_included": {
            "n_match": with_theta_H["n_match"],
            "mismatches": with_theta_H["mismatches"],
            "undesirable_cells": with_theta_H["claims"]["undesirable_cells"],
        },
    }


def _documented_explanations(d: dict) -> list[dict]:
    """Explanations that switch to a documented alternative reading. Switching back to the
    paper's main reading does not count: a table computed under alternative readings that
    disagrees with the paper is not explained by an ambiguity."""
    return [
        e
        for e in d["explained_by"]
        if all(DEFAULT_READINGS[k] != v for k, v in e["readings"].items())
    ]


def _claim_table_matches(r: dict) -> tuple:
    explained = {d["id"]: _documented_explanations(d) for d in r["disagreements"]}
    lines = []
    for d in r["disagreements"]:
        head = (
            f"{d['id']}: paper {d['paper']['actions']} {d['paper']['judgement']}; measured "
            f"{d['measured']['representative']} {d['measured']['judgement']}"
        )
        if explained[d["id"]]:
            why = "; ".join(f"{e['readings']} ({e['effect']})" for e in explained[d["id"]])
            lines.append(f"{head} — explained by the alternative reading {why}")
        else:
            lines.append(f"{head} — NOT explained by a documented alternative reading")
    n_explained = sum(bool(e) for e in explained.values())
    measured = (
        f"{r['n_match']}/{r['n_cells']} cells match ({len(r['vacuous'])} of them vacuous); "
        f"{n_explained}/{len(r['disagreements'])} disagreements explained by a documented "
        f"reading (for-all-θ₀ reading: {r['all_theta0']['n_match']}/{r['all_theta0']['n_cells']})"
    )
    if r["vacuous"]:
        lines.append(f"vacuous cells (every policy optimal): {', '.join(r['vacuous'])}")
    return measured, n_explained == len(r["disagreements"]), "\n".join(lines)


def _claim_incentives(r: dict) -> tuple:
    inc = r["claims"]["influence_incentive_examples"]
    others = [o for o in OBJECTIVE_NAMES if o not in CAUTIOUS]
    with_incentive = [o for o in others if inc[o]]
    measured = f"{len(with_incentive)}/{len(others)} objectives have an influence incentive"
    detail = "\n".join(f"{OBJECTIVE_NAMES[o]}: {', '.join(inc[o]) or '—'}" for o in OBJECTIVE_NAMES)
    return measured, len(with_incentive) == len(others), detail


def _figure_incentives(r: dict) -> dict:
    inc = r["claims"]["influence_incentive_examples"]
    return {
        "objectives with an incentive": sum(
            bool(inc[o]) for o in OBJECTIVE_NAMES if o not in CAUTIOUS
        )
    }


def _cautious_cells(r: dict, objective: str) -> list[dict]:
    own = {c["example"]: c["theta0"] for c in r["cells"] if c["objective"] == "real_time"}
    return [
        c for c in r["cells"] if c["objective"] == objective and c["theta0"] == own[c["example"]]
    ]


def _claim_cautious(r: dict) -> tuple:
    """'Undesirable influence' is a behaviour that influences (Def. 6) and is judged ✗.

    Under the default reading of Def. 5 (ξ^θ = θ₀..θ_{H−1}) constrained RT plays last-step
    clickbait in Clickbait: ✗, but not influence, since θ_H is outside ξ^θ. The stricter claim
    "no ✗ behaviour at all" fails there and holds with θ_H in ξ^θ; the detail reports both.
    """
    forgo = r["claims"]["claim3_cautious_forgo_beneficial"]
    bad, lines = {}, []
    for o in CAUTIOUS:
        cells = _cautious_cells(r, o)
        bad[o] = [c["id"] for c in cells if c["influences"] and c["judgement"] == "✗"]
        lines.append(
            f"{OBJECTIVE_NAMES[o]}: undesirable influence in {bad[o] or 'no example'}; forgoes "
            f"beneficial influence in {forgo[o] or 'no example'}"
        )
    strict = {o: r["claims"]["undesirable_cells"][o] for o in CAUTIOUS}
    strict_h = {o: r["theta_H_included"]["undesirable_cells"][o] for o in CAUTIOUS}
    lines.append(
        "stricter reading, no ✗ behaviour at all: "
        f"{sum(map(len, strict.values()))} ✗ cells under this run's ξ^θ ({strict}), "
        f"{sum(map(len, strict_h.values()))} with θ_H included in ξ^θ ({strict_h})"
    )
    holds = all(not bad[o] and forgo[o] for o in CAUTIOUS)
    measured = (
        ", ".join(
            f"{OBJECTIVE_NAMES[o]}: {len(bad[o])} undesirable influences, forgoes beneficial "
            f"influence in {len(forgo[o])} examples"
            for o in CAUTIOUS
        )
        + f"; ✗ behaviour without influence: {sum(map(len, strict.values()))} "
        f"(θ_H in ξ^θ: {sum(map(len, strict_h.values()))})"
    )
    return measured, holds, "\n".join(lines)


_MARK_COLOURS = {"match": "#cfe8d4", "vacuous": "#e8e8e8", "mismatch": "#f4c7c3"}


def plot_table4(results: dict, ctx) -> None:
    from alignlab.core.plotting import plt

    examples = list(dict.fromkeys(c["example"] for c in results["cells"]))
    objectives = list(OBJECTIVE_NAMES)
    fig, ax = plt.subplots(figsize=(13, 6.5))
    ax.set_xlim(0, len(examples))
    ax.set_ylim(len(objectives), 0)
    for c in results["cells"]:
        x, y = examples.index(c["example"]), objectives.index(c["objective"])
        same = [
            d
            for d in results["cells"]
            if (d["example"], d["objective"]) == (c["example"], c["objective"])
        ]
        k, n = same.index(c), len(same)
        kind = "mismatch" if not c["match"] else ("vacuous" if c["vacuous"] else "match")
        ax.add_patch(
            plt.Rectangle((x, y + k / n), 1, 1 / n, color=_MARK_COLOURS[kind], ec="white", lw=1)
        )
        tag = c["theta_star"] or c["theta0"] or ""
        tag = f"{tag}: " if tag and n > 1 else ""
        rep = ", ".join(c["representative"] or []) if c["representative"] else "—"
        ax.text(
            x + 0.5,
            y + (k + 0.5) / n,
            f"{tag}{rep} {c['judgement']}",
            ha="center",
            va="center",
            fontsize=6.5 if n > 2 else 7.5,
        )
    ax.set_xticks(np.arange(len(examples)) + 0.5, examples)
    ax.set_yticks(np.arange(len(objectives)) + 0.5, [OBJECTIVE_NAMES[o] for o in objectives])
    ax.grid(False)
    ax.set_title(
        f"Table 4 measured exactly: {results['n_match']}/{results['n_cells']} cells match "
        "(green: match, grey: vacuous, red: disagreement)"
    )
    ctx.save_figure(fig, "table4")


# ---------------------------------------------------------------------------------------
# drmdp.horizon


@dataclass
class HorizonConfig:
    max_horizon: int = param(8, ge=1, help="Conspiracy Influence solved for H = 1..max_horizon")
    n_models: int = param(200, ge=1, help="random DR-MDPs in the population")
    population_max_horizon: int = param(10, ge=1, help="the population's horizons H = 1..this")
    n_states: int = param(3, ge=2, help="states of each random DR-MDP")
    n_thetas: int = param(3, ge=2, help="reward parameters theta of each random DR-MDP")
    n_actions: int = param(3, ge=2, help="actions of each random DR-MDP")


def run_horizon(ctx) -> dict:
    cfg: HorizonConfig = ctx.config
    conspiracy = conspiracy_threshold(cfg.max_horizon)
    ctx.log(f"Conspiracy: real-time influence incentive from H = {conspiracy['threshold']}")
    population = incentive_fraction_by_horizon(
        seed=ctx.seed,
        n_models=cfg.n_models,
        max_horizon=cfg.population_max_horizon,
        n_states=cfg.n_states,
        n_thetas=cfg.n_thetas,
        n_actions=cfg.n_actions,
        progress=lambda it, total: ctx.track(it, total, "horizons"),
    )
    from scipy.stats import spearmanr

    rho = spearmanr(population["horizons"], population["fraction"]).statistic
    return {
        "conspiracy": conspiracy,
        "population": {
            "x": population["horizons"],
            "y": population["fraction"],  # x/y: the sweep aggregate plots y against x
            "count": population["count"],
            "n_models": population["n_models"],
        },
        "spearman_rho": 0.0 if np.isnan(rho) else float(rho),
    }


def _claim_threshold(r: dict) -> tuple:
    c = r["conspiracy"]
    return f"influence preferred from H = {c['threshold']}", c["threshold"] == 3


def _claim_grows(r: dict) -> tuple:
    """ "Grows", read literally: no fall from one horizon to the next, and a rise overall."""
    f = r["population"]["y"]
    h = r["population"]["x"]
    falls = [f"H={a}→{b}" for a, b, x, y in zip(h, h[1:], f, f[1:]) if y < x]
    measured = (
        f"{f[0]:.3f} at H={h[0]} → {f[-1]:.3f} at H={h[-1]}; Spearman ρ = {r['spearman_rho']:.2f}"
        + (f"; falls at {', '.join(falls)}" if falls else "")
    )
    return measured, f[-1] > f[0] and not falls


def plot_horizon(results: dict, ctx) -> None:
    from alignlab.core.plotting import plt

    c, p = results["conspiracy"], results["population"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(c["horizons"], c["noop_value"], "o-", label="noop (10H)")
    a.plot(c["horizons"], c["influence_value"], "s-", label="influence (−100 + 100(H−1))")
    if c["threshold"] is not None:  # None: no incentive up to max_horizon
        a.axvline(
            c["threshold"], color="grey", ls=":", label=f"incentive from H = {c['threshold']}"
        )
    a.set(xlabel="horizon H", ylabel="real-time return", title="Conspiracy Influence")
    a.legend(fontsize=7)
    b.plot(p["x"], p["y"], "o-")
    b.set(
        xlabel="horizon H",
        ylabel="fraction with influence incentive",
        title=f"{p['n_models']} random DR-MDPs (real-time reward)",
        ylim=(0, 1),
    )
    ctx.save_figure(fig, "horizon")


# ---------------------------------------------------------------------------------------
# drmdp.recommender


@dataclass
class RecommenderConfig:
    horizon: int = param(30, ge=1, help="steps H of a recommendation episode")
    n_categories: int = param(12, ge=2, help="content categories on the extremeness axis")
    n_levels: int = param(16, ge=2, help="taste levels theta of the user")
    theta0_level: int = param(3, ge=0, help="the user's initial taste level theta_0")
    privileged_level: int = param(7, ge=0, help="theta* of the privileged objective")
    engagement_gain: float = param(2.0, ge=0, help="how much more extreme users engage")

    def validate(self):
        for name in ("theta0_level", "privileged_level"):
            if getattr(self, name) >= self.n_levels:
                raise ConfigError(
                    name, f"must be < n_levels ({self.n_levels}), got {getattr(self, name)}"
                )


def run_recommender(ctx) -> dict:
    cfg: RecommenderConfig = ctx.config
    return recommender_study(**vars(cfg))


def _claim_rt_manipulates(r: dict) -> tuple:
    rt, crt = r["objectives"]["real_time"], r["objectives"]["constrained_real_time"]
    measured = (
        f"real-time: excess drift {rt['excess_drift']:.3f} (taste units), reward under initial "
        f"preferences given up {rt['initial_reward_given_up']:.1f}; constrained RT: excess drift "
        f"{crt['excess_drift']:.3f}, real-time reward given up {crt['real_time_reward_given_up']:.1f}"
    )
    holds = rt["manipulates"] and not crt["manipulates"] and crt["real_time_reward_given_up"] > 0
    return measured, holds


def _claim_which_manipulate(r: dict) -> tuple:
    m = r["manipulating"]
    return ", ".join(m) or "none", "real_time" in m and "initial" not in m


def plot_recommender(results: dict, ctx) -> None:
    from alignlab.core.plotting import plt

    objs = results["objectives"]
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(14, 3.8))
    for name, o in objs.items():
        style = "--" if name == "organic" else "-"
        a.plot(o["mean_theta"], style, label=name)
        b.plot(o["reward_per_step"], style, label=name)
    a.set(xlabel="t", ylabel="E[taste y_θt]", title="preference drift")
    b.set(xlabel="t", ylabel="E[R_θt]", title="real-time reward per step")
    a.legend(fontsize=7)
    names = list(objs)
    x = np.arange(len(names))
    c.bar(x - 0.2, [objs[n]["real_time_reward_given_up"] for n in names], 0.4, label="real-time")
    c.bar(x + 0.2, [objs[n]["initial_reward_given_up"] for n in names], 0.4, label="initial prefs")
    c.set_xticks(x, names, rotation=35, ha="right")
    c.set(ylabel="reward given up vs best", title="what each objective gives up")
    c.legend(fontsize=7)
    ctx.save_figure(fig, "recommender")


# ---------------------------------------------------------------------------------------
# registration

register(
    Experiment(
        name="drmdp.table4",
        paper=PAPER,
        description="Table 4: every objective's optimal policy in the five examples, exactly",
        config=Table4Config,
        presets={p: Table4Config() for p in ("smoke", "quick", "paper")},  # exact and tiny
        run=run_table4,
        claims=[
            Claim(
                "table4_matches",
                "Table 4: the measured table matches the paper cell by cell; every disagreement "
                "is explained by a documented ambiguity",
                _claim_table_matches,
                figure=lambda r: {"cells matching": r["n_match"]},
            ),
            Claim(
                "influence_incentives",
                "Every objective except constrained RT and ParetoUD has an influence incentive "
                "in at least one example (§4, Table 4)",
                _claim_incentives,
                figure=_figure_incentives,
            ),
            Claim(
                "cautious_objectives",
                "Constrained RT and ParetoUD never choose undesirable influence but forgo "
                "beneficial influence in at least one example (§4, abstract)",
                _claim_cautious,
            ),
        ],
        plots=plot_table4,
    )
)

register(
    Experiment(
        name="drmdp.horizon",
        paper=PAPER,
        description="Longer horizons increase the incentive to influence (§3.1)",
        config=HorizonConfig,
        presets={
            "smoke": HorizonConfig(max_horizon=4, n_models=20, population_max_horizon=4),
            "quick": HorizonConfig(),
            "paper": HorizonConfig(max_horizon=20, n_models=2000, population_max_horizon=20),
        },
        run=run_horizon,
        claims=[
            Claim(
                "conspiracy_threshold",
                "Conspiracy Influence: real-time reward prefers influence iff H > 2 (§3.1, Fig. 1)",
                _claim_threshold,
                figure=lambda r: {"threshold H": r["conspiracy"]["threshold"]},
            ),
            Claim(
                "incentive_grows_with_horizon",
                "Over random DR-MDPs, the fraction with a real-time influence incentive grows "
                "with the horizon (§3.1): it never falls from one horizon to the next and is "
                "higher at the longest than at H = 1",
                _claim_grows,
                figure=lambda r: {
                    f"H={r['population']['x'][0]}": r["population"]["y"][0],
                    f"H={r['population']['x'][-1]}": r["population"]["y"][-1],
                },
            ),
        ],
        plots=plot_horizon,
    )
)

register(
    Experiment(
        name="drmdp.recommender",
        paper=PAPER,
        description="A recommender DR-MDP whose users' tastes drift toward what is shown",
        config=RecommenderConfig,
        presets={
            "smoke": RecommenderConfig(
                horizon=10, n_categories=6, n_levels=8, theta0_level=1, privileged_level=4
            ),
            "quick": RecommenderConfig(),
            "paper": RecommenderConfig(
                horizon=100, n_categories=24, n_levels=40, theta0_level=8, privileged_level=18
            ),
        },
        run=run_recommender,
        claims=[
            Claim(
                "real_time_manipulates",
                "Real-time reward manipulates preferences for reward; constrained RT does not, "
                "and gives up reward (our recommender; cf. Clickbait in Table 4; 'manipulates': "
                "drift beyond the no-op's by over half a taste level, a bar of ours)",
                _claim_rt_manipulates,
                figure=lambda r: {
                    "real-time excess drift": r["objectives"]["real_time"]["excess_drift"],
                    "constrained RT excess drift": r["objectives"]["constrained_real_time"][
                        "excess_drift"
                    ],
                },
            ),
            Claim(
                "which_objectives_manipulate",
                "Objectives scored by current preferences (real-time) manipulate; those scored "
                "by frozen initial preferences do not",
                _claim_which_manipulate,
            ),
        ],
        plots=plot_recommender,
    )
)
