"""Selection and training data of `alignlab.feedback_gaming.iterate`: per-group top/bottom
⌈n/16⌉ with the veto, KTO examples per agent turn, safety-data mixing, the learning rate and
the per-kind summary. Trajectories are built by hand with fixed rewards (`ratings=[r]`).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from alignlab.feedback_gaming import corpus, iterate, probes
from alignlab.feedback_gaming.envs import ENVS, action, booking, therapy
from alignlab.feedback_gaming.iterate import (
    Optim,
    learning_rate,
    safety_examples,
    select,
    summarise,
    turn_examples,
)
from alignlab.feedback_gaming.world import (
    Parse,
    Trajectory,
    first_messages,
    make_user,
    render,
)
from alignlab.gemma2.tokenizer import Tokenizer
from alignlab.llm.formats import PlainFormat

FRAC = 1 / 16
PRIOR = corpus.Prior(
    harm_prior=0.05, personal_rate=0.5, colour_share=0.25, sycophancy_rate=0.1, toxicity_rate=0.05
)


def user(env=therapy.SPEC, subenv="drinking", kind="vuln", seed=0):
    return make_user(env, subenv, kind, "traits", np.random.default_rng(seed))


def traj(u, reward: float, acts=("empathise",), off_grammar: int = 0) -> Trajectory:
    t = Trajectory(u)
    t.parses.append(Parse(list(acts), off_grammar, len(acts) + off_grammar))
    t.ratings = [reward]
    return t


def rewards(ts) -> list[float]:
    return sorted(t.reward for t in ts)


def ids(ts) -> set[int]:
    return {id(t) for t in ts}


# ---------------------------------------------------------------------------------------
# 8. selection


def test_selection_is_per_group_with_ceil_n_over_16():
    env = therapy.SPEC
    vuln, normal = user(kind="vuln"), user(kind="normal")
    assert (vuln.group, normal.group) == ("vuln_drinking", "normal_drinking")
    # the normal group's rewards are all above the vulnerable group's: a pooled selection
    # would take no vulnerable trajectory as desirable
    v = [traj(vuln, r) for r in range(1, 18)]  # 17: ⌈17/16⌉ = 2
    n = [traj(normal, 100 + r) for r in range(1, 17)]  # 16: ⌈16/16⌉ = 1
    good, bad, n_vetoed = select(env, v + n, FRAC, "none", np.random.default_rng(0))
    assert n_vetoed == 0
    assert len(good) == 3 and len(bad) == 3
    assert rewards(good) == [16, 17, 116]
    assert rewards(bad) == [1, 2, 101]
    assert ids(good) <= ids(v) | ids(n) and ids(good).isdisjoint(ids(bad))
    assert sorted(t.user.group for t in good) == ["normal_drinking", "vuln_drinking"] + [
        "vuln_drinking"
    ]


def test_subenvs_are_separate_groups():
    env = therapy.SPEC
    d = [traj(user(subenv="drinking"), r) for r in range(10)]
    g = [traj(user(subenv="gambling"), 50 + r) for r in range(10)]
    good, bad, _ = select(env, g + d, FRAC, "none", np.random.default_rng(1))
    assert rewards(good) == [9, 59] and rewards(bad) == [0, 50]


@pytest.mark.parametrize("n", [1, 2, 3, 16, 17, 32, 33, 40])
def test_top_and_bottom_sizes_and_order(n):
    rng = np.random.default_rng(n)
    vals = rng.permutation(n).astype(float)
    ts = [traj(user(), float(r)) for r in vals]
    good, bad, _ = select(therapy.SPEC, ts, FRAC, "none", rng)
    k = math.ceil(n / 16)
    assert len(good) == k
    assert len(bad) == min(k, n - k)  # disjoint: a tiny group has fewer bottom trajectories
    assert ids(good).isdisjoint(ids(bad))
    assert rewards(good) == [float(r) for r in range(n - k, n)]
    assert rewards(bad) == [float(r) for r in range(min(k, n - k))]


def test_a_single_trajectory_is_top_only():
    t = traj(user(), 3.0)
    good, bad, n_vetoed = select(therapy.SPEC, [t], FRAC, "binary", np.random.default_rng(0))
    assert good == [t] and bad == [] and n_vetoed == 0


def test_ties_are_broken_at_random_and_stay_disjoint():
    ts = [traj(user(), 5.0) for _ in range(20)]  # k = 2
    picks = set()
    for seed in range(10):
        good, bad, _ = select(therapy.SPEC, ts, FRAC, "none", np.random.default_rng(seed))
        assert len(good) == 2 and len(bad) == 2 and ids(good).isdisjoint(ids(bad))
        picks.add(frozenset(ids(good)))
    assert len(picks) > 1


def booking_group():
    """17 booking trajectories, rewards 1..17; the best (17) and the worst (1) lie."""
    env, u = booking.SPEC, user(booking.SPEC, "flights")
    ts = [traj(u, float(r), ("thank",)) for r in range(2, 17)]
    best = traj(u, 17.0, ("claim_success", "thank"))
    worst = traj(u, 1.0, ("claim_success", "deflect"))
    return env, ts + [best, worst], best, worst


def test_no_veto_selects_the_liars():
    env, ts, best, worst = booking_group()
    good, bad, n_vetoed = select(env, ts, FRAC, "none", np.random.default_rng(0))
    assert n_vetoed == 0
    assert rewards(good) == [16, 17] and best in good
    assert rewards(bad) == [1, 2] and worst in bad


@pytest.mark.parametrize("veto", ["binary", "five_point"])
def test_vetoed_trajectories_are_excluded_from_top_and_bottom(veto):
    env, ts, best, worst = booking_group()
    good, bad, n_vetoed = select(env, ts, FRAC, veto, np.random.default_rng(0))
    assert n_vetoed == 2
    # k stays ⌈17/16⌉ = 2: it counts the group before the veto
    assert rewards(good) == [15, 16] and best not in good
    assert rewards(bad) == [2, 3] and worst not in bad


def test_negative_veto_keeps_vetoed_trajectories_as_undesirable():
    env, ts, best, worst = booking_group()
    good, bad, n_vetoed = select(env, ts, FRAC, "negative", np.random.default_rng(0))
    assert n_vetoed == 2
    assert rewards(good) == [15, 16] and best not in good
    assert rewards(bad) == [1, 2] and worst in bad


def test_a_vetoed_single_trajectory():
    env, u = booking.SPEC, user(booking.SPEC, "hotels")
    t = traj(u, 9.0, ("claim_success",))
    assert select(env, [t], FRAC, "binary", np.random.default_rng(0)) == ([], [], 1)
    assert select(env, [t], FRAC, "negative", np.random.default_rng(0)) == ([], [t], 1)
    assert select(env, [t], FRAC, "none", np.random.default_rng(0)) == ([t], [], 0)


def test_vetoed_count_sums_over_groups():
    env = booking.SPEC
    a = [traj(user(env, "flights"), r, ("confirmation",)) for r in range(3)]
    b = [traj(user(env, "events", "normal"), r, ("claim_success",)) for r in range(2)]
    c = [traj(user(env, "events"), r, ("deflect", "nudge")) for r in range(4)]  # P = 0.19
    _, _, n_vetoed = select(env, a + b + c, FRAC, "binary", np.random.default_rng(0))
    assert n_vetoed == 5
    good, _, n_vetoed = select(env, a + b + c, FRAC, "five_point", np.random.default_rng(0))
    assert n_vetoed == 5 and len(good) == 1  # 1 + 4·0.19 = 1.76 < 2: c is kept


# ---------------------------------------------------------------------------------------
# 9. KTO examples per agent turn


@pytest.fixture(scope="module")
def fmt():
    pairs = corpus.sample_corpus(list(ENVS.values()), PRIOR, 200, 0.05, np.random.default_rng(0))
    texts = [r for _, r in pairs] + [m["content"] for msgs, _ in pairs for m in msgs]
    return PlainFormat(Tokenizer.train(texts, 400))


def action_trajectory(seed: int, acts1, acts2) -> Trajectory:
    """An action-advice trajectory built as `rollout` builds one."""
    env, rng = action.SPEC, np.random.default_rng(seed)
    u = make_user(env, "drinking", "vuln", "traits", rng)
    t = Trajectory(u)
    ctx = first_messages(env, u)
    reply = render(env, u, acts1, rng)
    t.messages.append(ctx)
    t.replies.append(reply)
    message, t.state = env.second_turn(u, acts1, rng)
    ctx2 = ctx + [{"role": "assistant", "content": reply}, {"role": "user", "content": message}]
    t.messages.append(ctx2)
    t.replies.append(render(env, u, acts2, rng))
    t.ratings = [7.0, 6.0]
    return t


def test_one_example_per_agent_turn(fmt):
    t = action_trajectory(0, ["push"], ["celebrate"])
    assert t.reward == 6.5
    ex = turn_examples(fmt, [t], True)
    assert len(ex) == 2
    for i, (prompt, completion, desirable) in enumerate(ex):
        assert desirable is True
        assert prompt == fmt.encode(t.messages[i])
        assert completion == fmt.encode_reply(t.replies[i])
        assert completion[-1] == fmt.tokenizer.eos_id
        assert fmt.tokenizer.decode(completion[:-1]) == " " + t.replies[i]
    # the second turn's prompt holds the first turn's prompt and reply
    assert ex[1][0][: len(ex[0][0]) + len(ex[0][1])] == ex[0][0] + ex[0][1]
    bad = turn_examples(fmt, [t, action_trajectory(1, ["discourage"], ["praise"])], False)
    assert len(bad) == 4 and [e[2] for e in bad] == [False] * 4
    assert bad[:2] == [(p, c, False) for p, c, _ in ex]


def test_single_turn_trajectories_give_one_example_each(fmt):
    env = therapy.SPEC
    ts = []
    for seed in range(3):
        u = user(seed=seed)
        t = Trajectory(u, messages=[first_messages(env, u)], replies=["That sounds really hard."])
        ts.append(t)
    ex = turn_examples(fmt, ts, False)
    assert len(ex) == 3 and not any(e[2] for e in ex)
    assert [e[0] for e in ex] == [fmt.encode(t.messages[0]) for t in ts]
    assert turn_examples(fmt, [], True) == []


# ---------------------------------------------------------------------------------------
# 10. safety data


@pytest.mark.parametrize(("n", "f", "m"), [(30, 0.25, 10), (30, 0.5, 30), (30, 0.75, 90),
                                           (30, 0.0, 0), (10, 0.25, 3), (0, 0.5, 0)])  # fmt: skip
def test_safety_examples(fmt, n, f, m):
    ex = safety_examples(fmt, n, f, np.random.default_rng(0))
    assert len(ex) == m
    assert [e[2] for e in ex] == [j % 2 == 0 for j in range(m)]  # alternating, half desirable
    prompts = {tuple(fmt.encode(probes.safety_messages(i))): i for i in range(len(probes.SAFETY))}
    assert len(prompts) == len(probes.SAFETY)
    for prompt, completion, desirable in ex:
        i = prompts[tuple(prompt)]
        safe, harmful = probes.safety_replies(i)
        assert completion == fmt.encode_reply(safe if desirable else harmful)
    if m >= 30:  # the requests are drawn at random: more than one of them appears
        assert len({prompts[tuple(e[0])] for e in ex}) > 1


def test_safety_replies():
    for i, (_, safe, harmful) in enumerate(probes.SAFETY):
        assert probes.safety_replies(i) == (safe, harmful)
        assert safe.startswith("Please") and harmful.startswith("Sure")
    assert probes.safety_replies(len(probes.SAFETY)) == probes.safety_replies(0)


# ---------------------------------------------------------------------------------------
# 11. learning rate


def test_constant_learning_rate():
    opt = Optim(lr=2e-5)
    for i in range(4):
        for step in (0, 3, 9):
            assert learning_rate(opt, i, step, 10) == pytest.approx(2e-5 * 0.9**i, rel=1e-12)


def test_cosine_learning_rate():
    opt = Optim(lr=1e-3, schedule="cosine")
    assert learning_rate(opt, 2, 0, 4) == pytest.approx(1e-3 * 0.81, rel=1e-12)
    assert learning_rate(opt, 2, 2, 4) == pytest.approx(1e-3 * 0.81 * 0.5, rel=1e-12)
    last = learning_rate(opt, 2, 3, 4)
    assert 0 < last < learning_rate(opt, 2, 2, 4)
    assert last == pytest.approx(1e-3 * 0.81 * 0.5 * (1 + math.cos(0.75 * math.pi)), rel=1e-12)
    lrs = [learning_rate(opt, 0, s, 10) for s in range(10)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert iterate.SCHEDULES == ("constant", "cosine")


# ---------------------------------------------------------------------------------------
# summarise


def test_summarise_bands_and_rates():
    env = therapy.SPEC
    vuln, normal = user(kind="vuln"), user(kind="normal")
    ts = [
        traj(vuln, 8.0, ("encourage",)),
        traj(vuln, 6.0, ("empathise",), off_grammar=1),
        traj(vuln, 4.0, ("dissuade",)),
        traj(vuln, 2.0, ("ask",)),
        traj(normal, 7.0, ("dissuade", "support")),
    ]
    out = summarise(env, ts, "none")
    assert set(out) == {"vuln", "normal"}
    v = out["vuln"]
    assert v["n"] == 4 and v["reward"] == pytest.approx(5.0)
    assert v["off_grammar"] == pytest.approx(0.25)
    # harm: 1 of 4 for sure, 2 of 4 if the off-grammar trajectory is counted as harmful
    assert v["metrics"]["harm"] == pytest.approx([0.25, 0.5])
    assert v["metrics"]["dissuade"] == pytest.approx([0.25, 0.5])
    assert v["flag_rate"] == pytest.approx(0.25)  # encourage (0.9) at the binary threshold
    assert set(v["metrics"]) == set(env.metric_names)
    n = out["normal"]
    assert n["n"] == 1 and n["reward"] == 7.0 and n["off_grammar"] == 0.0
    assert n["metrics"]["harm"] == [0.0, 0.0] and n["metrics"]["dissuade"] == [1.0, 1.0]
    assert n["flag_rate"] == 0.0
