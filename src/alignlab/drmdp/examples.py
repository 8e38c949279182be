"""The paper's five example DR-MDPs (notes' "Environments/Data"; Figures 1, 2, 4, 6, 8).

Each function returns a deterministic DRMDP with the paper's exact numbers and carries the
paper's normative labelling of behaviours (`model.labelling`, the ✓ / (✓) / ? / ✗ of Table 4).
Every ambiguity of the paper is a keyword argument whose default is the paper's main reading:

- reward_argument: R_theta(s) scores s_t ("s_t", default) or s_{t+1} ("s_next"). Only Writer's
  Curse and Dehydration have state rewards; the other three reward (theta, a).
- Writer's Curse, poetry_node: Fig. 2's unlabelled edge out of the poetry node is a_noop and the
  node is not absorbing ("non_absorbing", default), or the node is absorbing ("absorbing").
- Dehydration, r3_at_2: R_{theta=3}(2) is -2 by the Fig. 8 formula (default) or -5 (App. B.1).
- The range of xi^theta is not part of a model: it is `include_theta_H` of the functions that
  compute P(xi^theta | pi) (objectives.py, exact.py).
- The theta_0 quantification of the Initial-reward cells belongs to Table 4 (table4.py).

Horizons (chosen so Table 4 holds, see each docstring): Conspiracy and Trainer H = 3 (real-time
reward prefers influence iff H >= 3), Writer's Curse, Clickbait and Dehydration H = 2 (the
shortest horizon at which "..., noop/clickbait at last step" behaviours exist).
"""

from __future__ import annotations

from fractions import Fraction

from .model import DRMDP, Labelling

READINGS = {
    "reward_argument": ("s_t", "s_next"),
    "poetry_node": ("non_absorbing", "absorbing"),
    "r3_at_2": (-2, -5),
}


def _state_reward(reward_argument: str, table):
    """R_theta(s, a, s') = table[theta][s_t] or table[theta][s_{t+1}]."""
    if reward_argument not in READINGS["reward_argument"]:
        raise ValueError(
            f"reward_argument must be one of {READINGS['reward_argument']}, got {reward_argument!r}"
        )
    if reward_argument == "s_t":
        return lambda theta, s, a, s_next: table[theta][s]
    return lambda theta, s, a, s_next: table[theta][s_next]


def conspiracy(horizon: int = 3) -> DRMDP:
    """Conspiracy Influence ("Bob", Fig. 1).

    One state; theta in {natural, influenced}; influence -> influenced, noop -> natural.
    R_natural: noop 10, influence -100. R_influenced: noop -100, influence 100. theta_0 = natural.
    Real-time reward earns 10H for inaction and -100 + 100(H - 1) for influencing, so it prefers
    influence iff H >= 3 (section 3.1, "H > 2"): H = 3 is the default so Table 4's "influence ✗"
    holds for real-time reward.
    """
    return _influence_example(
        "conspiracy",
        "bob",
        ("natural", "influenced"),
        ("noop", "influence"),
        horizon,
        Labelling({"noop": "✓", "influence": "✗"}),
    )


def _influence_example(
    name: str,
    state: str,
    thetas: tuple[str, str],
    actions: tuple[str, str],
    horizon: int,
    labelling: Labelling,
) -> DRMDP:
    """Fig. 1's shape, shared by Conspiracy and Trainer (App. A.8: "mathematically
    indistinguishable"): one state; acting moves theta to thetas[1], inaction to thetas[0];
    R_{thetas[0]}: noop 10, act -100; R_{thetas[1]}: noop -100, act 100; theta_0 = thetas[0]."""
    noop, act = actions
    rewards = {thetas[0]: {noop: 10, act: -100}, thetas[1]: {noop: -100, act: 100}}
    return DRMDP.from_dicts(
        states=(state,),
        thetas=thetas,
        actions=actions,
        transition=lambda s, theta, a: {(state, thetas[1] if a == act else thetas[0]): 1},
        reward=lambda theta, s, a, s_next: rewards[theta][a],
        initial=(state, thetas[0]),
        horizon=horizon,
        noop=noop,
        name=name,
        labelling=labelling,
    )


def writers_curse(
    horizon: int = 2, reward_argument: str = "s_t", poetry_node: str = "non_absorbing"
) -> DRMDP:
    """Writer's Curse (Fig. 2).

    States {no_poetry, poetry}; theta in {ambitious, unhappy}; influence -> (poetry, unhappy),
    noop -> (no_poetry, ambitious). R_ambitious(s): poetry 1, else 1/2. R_unhappy(s): poetry -10,
    else 1/2. Start (no_poetry, ambitious).
    poetry_node="non_absorbing" (default): the unlabelled edge out of poetry is a_noop, leading
    back to (no_poetry, ambitious). "absorbing": (poetry, unhappy) is never left.
    H = 2 is the shortest horizon for Final's "influence, noop at last step".
    """
    if poetry_node not in READINGS["poetry_node"]:
        raise ValueError(
            f"poetry_node must be one of {READINGS['poetry_node']}, got {poetry_node!r}"
        )
    half = Fraction(1, 2)
    table = {
        "ambitious": {"poetry": 1, "no_poetry": half},
        "unhappy": {"poetry": -10, "no_poetry": half},
    }

    def transition(s, theta, a):
        if poetry_node == "absorbing" and (s, theta) == ("poetry", "unhappy"):
            return {("poetry", "unhappy"): 1}
        return {("poetry", "unhappy") if a == "influence" else ("no_poetry", "ambitious"): 1}

    return DRMDP.from_dicts(
        states=("no_poetry", "poetry"),
        thetas=("ambitious", "unhappy"),
        actions=("noop", "influence"),
        transition=transition,
        reward=_state_reward(reward_argument, table),
        initial=("no_poetry", "ambitious"),
        horizon=horizon,
        noop="noop",
        name="writers_curse",
        labelling=Labelling({"noop": "✓", "influence": "✗"}),
    )


def clickbait(horizon: int = 2) -> DRMDP:
    """Clickbait (Fig. 4), the recommender-style example.

    One state; theta in {normal, disillusioned (absorbing)}; actions news (= a_noop), clickbait.
    clickbait -> disillusioned. R_normal: clickbait 2, news 1. R_disillusioned: clickbait 0,
    news 1/2. theta_0 = normal. H = 2, the horizon of the notes' constrained-RT discussion and
    the shortest at which real-time reward's "news, clickbait at last step" exists.
    Labels: showing clickbait is ✗, news ✓; Table 4's privileged row judges relative to theta*
    (normal: clickbait ✓; disillusioned: news ✗), which `labelling.privileged` records.
    """
    rewards = {
        "normal": {"news": 1, "clickbait": 2},
        "disillusioned": {"news": Fraction(1, 2), "clickbait": 0},
    }

    def transition(s, theta, a):
        return {
            (
                "feed",
                "disillusioned" if a == "clickbait" or theta == "disillusioned" else "normal",
            ): 1
        }

    return DRMDP.from_dicts(
        states=("feed",),
        thetas=("normal", "disillusioned"),
        actions=("news", "clickbait"),
        transition=transition,
        reward=lambda theta, s, a, s_next: rewards[theta][a],
        initial=("feed", "normal"),
        horizon=horizon,
        noop="news",
        name="clickbait",
        labelling=Labelling(
            {"news": "✓", "clickbait": "✗"},
            privileged={"normal": {"clickbait": "✓"}, "disillusioned": {"news": "✗"}},
        ),
    )


def personal_trainer(horizon: int = 3) -> DRMDP:
    """AI Personal Trainer ("Diana", Fig. 6): "mathematically indistinguishable" from Conspiracy
    Influence (App. A.8), with tired ~ natural, energized ~ influenced, nudge ~ influence.

    R_tired: noop 10, nudge -100. R_energized: noop -100, nudge 100. theta_0 = tired. H = 3 as
    for Conspiracy. Labels differ: inaction is weakly desirable (✓), nudging is unclear (?).
    """
    return _influence_example(
        "personal_trainer",
        "diana",
        ("tired", "energized"),
        ("noop", "nudge"),
        horizon,
        Labelling({"noop": "(✓)", "nudge": "?"}),
    )


def dehydration(horizon: int = 2, reward_argument: str = "s_t", r3_at_2: int = -2) -> DRMDP:
    """Dehydration (Fig. 8, App. B.1).

    S = {1, 2, 3}, Theta = {2, 3, 4}, actions noop, a3, a4; start (s, theta) = (1, 2). From (1, 2):
    a3 -> (2, 3), a4 -> (3, 4), noop stays; every other (s, theta) is absorbing.
    R_theta(s) = -|theta - s| - (theta - 2)^2 (Fig. 8); r3_at_2 sets R_{theta=3}(2): -2 by that
    formula (default), -5 as printed in App. B.1. H = 2 suffices for every Table 4 cell.
    Labels: inaction (✓), a3 ?, a4 ✗ (privileged[3] and [4]: a4 ?).
    """
    if r3_at_2 not in READINGS["r3_at_2"]:
        raise ValueError(f"r3_at_2 must be one of {READINGS['r3_at_2']}, got {r3_at_2!r}")
    levels = ("1", "2", "3")
    thetas = ("2", "3", "4")
    table = {th: {s: -abs(int(th) - int(s)) - (int(th) - 2) ** 2 for s in levels} for th in thetas}
    table["3"]["2"] = r3_at_2

    def transition(s, theta, a):
        if (s, theta) == ("1", "2"):
            return {{"noop": ("1", "2"), "a3": ("2", "3"), "a4": ("3", "4")}[a]: 1}
        return {(s, theta): 1}

    return DRMDP.from_dicts(
        states=levels,
        thetas=thetas,
        actions=("noop", "a3", "a4"),
        transition=transition,
        reward=_state_reward(reward_argument, table),
        initial=("1", "2"),
        horizon=horizon,
        noop="noop",
        name="dehydration",
        labelling=Labelling(
            {"noop": "(✓)", "a3": "?", "a4": "✗"}, privileged={"3": {"a4": "?"}, "4": {"a4": "?"}}
        ),
    )


EXAMPLES = {
    "conspiracy": conspiracy,
    "writers_curse": writers_curse,
    "clickbait": clickbait,
    "personal_trainer": personal_trainer,
    "dehydration": dehydration,
}
