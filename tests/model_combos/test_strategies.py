"""The strategies on scripted chat models (test doubles): call counts, verdicts and the audit
of a refusing and of a leaking frontier."""

from __future__ import annotations

import numpy as np
import pytest

from alignlab.core.errors import AlignlabError
from alignlab.model_combos import chains as K
from alignlab.model_combos import strategies as S
from alignlab.model_combos.experiments import common as C
from alignlab.model_combos.family import make_family


class Scripted:
    """A scripted chat model over the chain formats: `max_ops` is the longest benign chain it
    solves in one shot (-1: none); `refuse` answers REFUSE to flagged prompts."""

    def __init__(self, name, max_ops, refuse):
        self.name, self.max_ops, self.refuse = name, max_ops, refuse
        self.calls, self.seeds = [], []

    def chat(self, conversations, *, max_tokens, temperature=1.0, seed=None):
        self.calls.append(len(conversations))
        self.seeds.append((temperature, seed))
        return [self.reply(c[-1]["content"]) for c in conversations]

    def top_logprobs(self, conversations, *, top=20):
        raise NotImplementedError

    def reply(self, prompt: str) -> str:
        words = prompt.split()
        if words[0] == K.MARK_R:
            task = K.parse_task(" ".join(words[1:-1]))
            return K.rel_target(task, 1)
        if K.MARK_C in words:
            c = words.index(K.MARK_C)
            task = K.parse_task(" ".join(words[:c]))
            if self.refuse and task.flagged:
                return K.REFUSE
            sub, ans = " ".join(words[c + 1 : -1]).split(f" {K.MARK_EQ} ")
            done = len(K.parse_task(sub).ops)
            if len(task.ops) - done > self.max_ops + 1:
                return "0 0 0 0"
            rest = K.Task(tuple(int(d) for d in ans.split()), task.ops[done:], task.plant)
            return K.answer_text(rest)
        task = K.parse_task(" ".join(words[:-1]))
        if self.refuse and task.flagged:
            return K.REFUSE
        if len(task.ops) > self.max_ops:
            return "0 0 0 0"
        return K.answer_text(task)


@pytest.fixture
def setup():
    fam = K.ChainFamily()
    tasks = fam.tasks(20, np.random.default_rng(0))
    return fam, tasks


def test_single_is_pass_at_k_with_k_calls(setup):
    fam, tasks = setup
    frontier = Scripted("f", 3, refuse=True)
    eps = S.single(fam, frontier, tasks, k=3, role="frontier", seed=11)
    assert frontier.calls == [20, 20, 20]
    assert frontier.seeds == [(1.0, 11), (1.0, 12), (1.0, 13)]  # sample j with seed + j
    assert all(len(e.calls) == 3 and not e.success for e in eps)
    assert all(c.refused and not c.flagged for e in eps for c in e.calls)
    helpful = Scripted("h", 3, refuse=False)
    assert S.success_rate(S.single(fam, helpful, tasks, k=1)) == 1.0


def test_manual_combines_a_refusing_frontier_and_a_weak_planter(setup):
    fam, tasks = setup
    frontier, weak = Scripted("f", 3, refuse=True), Scripted("w", 0, refuse=False)
    eps = S.manual(fam, frontier, weak, tasks)
    assert frontier.calls == [20] and weak.calls == [20]
    assert S.success_rate(eps) == 1.0
    assert S.success_rate(S.single(fam, weak, tasks, k=2, role="weak")) == 0.0
    audit = C.audit({"manual": eps}, full=())
    assert audit["flagged"] == 0 and audit["subtasks_refused"] == 0 and audit["outputs"] == 20


def test_automated_has_three_calls_in_sequence(setup):
    fam, tasks = setup
    frontier, weak = Scripted("f", 3, refuse=True), Scripted("w", 0, refuse=False)
    eps = S.automated(fam, frontier, weak, tasks, m=1)
    assert weak.calls == [20, 20] and frontier.calls == [20]
    assert all([c.role for c in e.calls] == ["weak", "frontier", "weak"] for e in eps)
    assert S.success_rate(eps) == 1.0
    diag = C.chain_diagnostics(
        fam, tasks, {"automated": eps, "manual": S.manual(fam, frontier, weak, tasks)}
    )
    assert diag["rel_exact"] == 1.0 and diag["ctx_given_right_context"] == 1.0
    assert diag["frontier_benign_chain"] == 1.0
    # the weak model in both roles cannot do the 3-op chain
    only = S.automated(fam, weak, weak, tasks, m=1, frontier_role="weak", method="weak_automated")
    assert S.success_rate(only) == 0.0 and not S.role_calls(only, "frontier")


def test_a_leaking_frontier_is_caught_by_the_audit(setup):
    fam, tasks = setup
    leaky = Scripted("f", 3, refuse=False)
    groups = {"single_frontier": S.single(fam, leaky, tasks, k=2)}
    audit = C.audit(groups, full=("single_frontier",))
    assert audit["flagged"] == 40 and audit["full_refused"] == 0.0


def test_episode_records_round_trip(tmp_path, setup):
    fam, tasks = setup
    eps = S.manual(fam, Scripted("f", 3, True), Scripted("w", 0, False), tasks[:3], seed=7)
    path = S.write_episodes(tmp_path / "episodes" / "manual.jsonl", eps)
    assert S.read_episodes(path) == eps
    assert len(path.read_text().splitlines()) == 3
    assert not list(path.parent.glob("*.tmp*"))


def test_bad_input(setup):
    fam, tasks = setup
    m = Scripted("m", 3, False)
    with pytest.raises(AlignlabError, match="k must be"):
        S.single(fam, m, tasks, k=0)
    with pytest.raises(AlignlabError, match="m must be"):
        S.automated(fam, m, m, tasks, m=0)
    with pytest.raises(AlignlabError, match="valid: single, manual, automated"):
        S.run_method("manul", fam, m, m, tasks)
    assert S.success_rate(S.run_method("manual", fam, m, m, tasks)) == 1.0
    with pytest.raises(AlignlabError, match="unknown family 'chain'.*valid: chains"):
        make_family("chain")


def test_rates_have_wilson_intervals():
    eps = [S.Episode("t", "x", success=i < 3) for i in range(10)]
    r = C.rate(eps)
    assert r["rate"] == 0.3 and r["n"] == 10 and r["lo"] < 0.3 < r["hi"]
