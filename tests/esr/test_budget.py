"""The budget study (`alignlab.esr.experiments.budget`, esr.budget) and the training option it
adds (`LoopConfig.warmup_updates`, `warmup_repr_updates`):

- a representation-only warm-up takes no critic and no dual step in its epochs (spies), keeps
  the critic's weights and the precision at their initial values until it ends, and takes
  warmup_epochs × warmup_repr_updates contrastive steps (then repr_updates an epoch); the
  default ("all") ignores warmup_repr_updates;
- the study's derived configs, contrastive-step counts and unit keys;
- its "current" 1× unit is esr.gridworld's ESR unit exactly, its random unit the random one;
- a second run takes every unit from the cache and gives the same results and metric lines,
  and a slice run's units are reused by a larger run;
- a unit killed mid-training (with nothing cached) resumes from its own checkpoint.
"""

from __future__ import annotations

import json

import esr_tiny
import pytest
import torch
from esr_tiny import tiny_agent, tiny_make

from alignlab.core import config as cfglib
from alignlab.core.checkpoint import Checkpointer, SimulatedCrash, crash_after_checkpoint
from alignlab.core.errors import AlignlabError
from alignlab.core.experiment import get
from alignlab.core.run import RunSpec, execute, is_timing, run_status
from alignlab.core.units import unit_folder
from alignlab.esr import train as train_mod
from alignlab.esr.agent import AgentConfig, ESRRepresentation, QLearner
from alignlab.esr.experiments import budget
from alignlab.esr.train import LoopConfig, ReplayBuffer, train_assistant


def tiny_loop(**kw):
    """esr_tiny's loop with one more epoch, warm-up epoch and dual step."""
    return esr_tiny.tiny_loop(**{**dict(epochs=4, warmup_epochs=2, dual_updates=2), **kw})


# ---- 1. the representation-only warm-up -------------------------------------------------------


def spy(monkeypatch, method: str, loop: LoopConfig):
    """Train with spies: per epoch (split at each rollout) the kinds of update steps, and at
    each rollout the learner's precision and whether its critic still has its initial weights."""
    epochs: list[dict] = []
    orig = {
        "update": ESRRepresentation.update,
        "q": QLearner.q_update,
        "dual": QLearner.dual_update,
        "rollout": train_mod.rollout,
        "robot": train_mod.LearnedRobot,
    }
    seen: dict = {}

    class Robot(orig["robot"]):
        def __init__(self, learner):
            super().__init__(learner)
            seen["learner"] = learner  # built before any update: the initial weights
            seen["init"] = {k: v.clone() for k, v in learner.state_dict().items()}

    def count(kind, fn):
        def wrapped(self, *a, **kw):
            epochs[-1]["steps"].append(kind)
            return fn(self, *a, **kw)

        return wrapped

    def rollout_(*a, **kw):
        learner = seen["learner"]
        same = all(torch.equal(v, seen["init"][k]) for k, v in learner.state_dict().items())
        epochs.append({"steps": [], "precision": learner.precision.item(), "initial": same})
        return orig["rollout"](*a, **kw)

    monkeypatch.setattr(ESRRepresentation, "update", count("repr", orig["update"]))
    monkeypatch.setattr(QLearner, "q_update", count("q", orig["q"]))
    monkeypatch.setattr(QLearner, "dual_update", count("dual", orig["dual"]))
    monkeypatch.setattr(train_mod, "rollout", rollout_)
    monkeypatch.setattr(train_mod, "LearnedRobot", Robot)
    train_assistant(method, tiny_make, tiny_agent(), loop, seed=(0, "budget"))
    return epochs


@pytest.mark.parametrize("schedule", ["interleaved", "paper"])
def test_representation_warmup_takes_only_contrastive_steps(monkeypatch, schedule):
    loop = tiny_loop(warmup_updates="representation", warmup_repr_updates=7, schedule=schedule)
    epochs = spy(monkeypatch, "esr", loop)
    assert len(epochs) == loop.epochs
    init = AgentConfig().precision_init
    for e in epochs[: loop.warmup_epochs]:
        assert e["steps"] == ["repr"] * 7  # no critic step, no dual step
    # the warm-up's end: the critic untouched and the precision at its initial value
    after = epochs[loop.warmup_epochs]
    assert after["initial"] and after["precision"] == init
    for e in epochs[loop.warmup_epochs :]:
        assert sorted(e["steps"]) == sorted(["repr"] * 3 + ["q"] * 2 + ["dual"] * 2)
    steps = sum(e["steps"].count("repr") for e in epochs)
    assert steps == loop.warmup_epochs * 7 + (loop.epochs - loop.warmup_epochs) * 3
    assert steps == budget.contrastive_steps(loop)
    # 0: repr_updates per warm-up epoch
    loop0 = tiny_loop(warmup_updates="representation")
    assert budget.contrastive_steps(loop0) == loop0.epochs * loop0.repr_updates


def test_default_warmup_updates_everything_and_ignores_warmup_repr_updates(monkeypatch):
    loop = tiny_loop()
    assert loop.warmup_updates == "all" and loop.warmup_repr_updates == 0  # the defaults
    epochs = spy(monkeypatch, "esr", loop)
    for e in epochs:
        assert e["steps"] == ["repr", "q", "repr", "q", "repr", "dual", "dual"]
    assert not epochs[loop.warmup_epochs]["initial"]  # the critic learned during the warm-up
    monkeypatch.undo()
    a = train_assistant("esr", tiny_make, tiny_agent(), loop, seed=0)
    b = train_assistant("esr", tiny_make, tiny_agent(), tiny_loop(warmup_repr_updates=7), seed=0)
    wa, wb = a["learner"].state_dict(), b["learner"].state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa) and a["diag_curve"] == b["diag_curve"]


def test_ave_takes_no_update_in_a_representation_warmup(monkeypatch):
    loop = tiny_loop(warmup_updates="representation", warmup_repr_updates=7)
    epochs = spy(monkeypatch, "ave", loop)
    assert all(e["steps"] == [] for e in epochs[: loop.warmup_epochs])
    assert epochs[loop.warmup_epochs]["initial"]


def test_warmup_updates_is_checked():
    with pytest.raises(AlignlabError, match="warmup_updates must be one of"):
        cfglib.validate(LoopConfig(warmup_updates="critic"))
    with pytest.raises(AlignlabError, match="warmup_repr_updates must be >= 0"):
        cfglib.validate(LoopConfig(warmup_repr_updates=-1))


# ---- 2. the study's configs and units ----------------------------------------------------------


def test_unit_configs_contrastive_steps_and_keys_of_the_quick_preset():
    cfg = budget.BudgetConfig()
    base = cfg.base
    assert (base.loop.epochs, base.loop.warmup_epochs, base.loop.repr_updates) == (200, 40, 16)
    cur = budget.unit_config(cfg, "current", 2, 4)
    assert cur.loop.epochs == 800 and cur.loop.warmup_epochs == 40
    assert cur.agent == base.agent and cur.loop == cfglib.apply_overrides(base.loop, ["epochs=800"])
    assert budget.unit_config(cfg, "lr1e-4", 2, 1).agent.repr_lr == 1e-4
    assert budget.unit_config(cfg, "conv", 5, 1).agent.torso == "conv"
    first = budget.unit_config(cfg, "repr_first", 2, 1).loop
    assert (first.warmup_updates, first.warmup_repr_updates) == ("representation", 150)
    assert budget.contrastive_steps(budget.unit_config(cfg, "current", 2, 1).loop) == 3200
    assert budget.contrastive_steps(cur.loop) == 12_800
    assert budget.contrastive_steps(first) == 40 * 150 + 160 * 16  # 6,000 in the warm-up
    keys = budget.unit_keys(cfg)
    assert len(keys) == len(set(keys)) == 2 * 4 * (5 + 5 + 3 + 2) + 2 * 5
    assert "esr-lr1e-4-b5-x8-s1" in keys and "random-b2-s4" in keys
    assert keys[0].startswith("esr-conv-") and "-x8-" in keys[0]  # the costliest first
    assert budget.parse_key("esr-lr1e-4-b5-x8-s1") == ("lr1e-4", 5, 8, 1)
    assert budget.parse_key("random-b2-s4") == (None, 2, 1, 4)


def test_the_conv_variant_runs_its_own_seed_counts_capped_by_the_others():
    quick = budget.BudgetConfig(conv_seeds_per_budget=(3, 3, 2, 1))
    assert budget.seeds_at(quick, "conv") == {1: 3, 2: 3, 4: 2, 8: 1}
    assert budget.seeds_at(quick, "current") == {1: 5, 2: 5, 4: 3, 8: 2}
    keys = budget.unit_keys(quick)
    conv = [k for k in keys if k.startswith("esr-conv-b2-")]
    assert sorted(conv) == sorted(
        [f"esr-conv-b2-x{m}-s{s}" for m, n in ((1, 3), (2, 3), (4, 2), (8, 1)) for s in range(n)]
    )
    assert len(keys) == 2 * 3 * (5 + 5 + 3 + 2) + 2 * (3 + 3 + 2 + 1) + 2 * 5
    # a cap above seeds_per_budget is no more than seeds_per_budget; empty: no cap
    wide = budget.BudgetConfig(seeds_per_budget=(2, 2, 1, 1), conv_seeds_per_budget=(9, 1, 9, 9))
    assert budget.seeds_at(wide, "conv") == {1: 2, 2: 1, 4: 1, 8: 1}
    assert budget.seeds_at(budget.BudgetConfig(), "conv") == {1: 5, 2: 5, 4: 3, 8: 2}
    assert get("esr.budget").presets["quick"].conv_seeds_per_budget == (3, 3, 2, 1)


def test_seeds_per_budget_must_match_budgets():
    with pytest.raises(AlignlabError, match="seeds_per_budget must give one seed count per"):
        cfglib.validate(budget.BudgetConfig(budgets=(1, 2), seeds_per_budget=(1,)))
    with pytest.raises(AlignlabError, match="conv_seeds_per_budget must give one seed count"):
        cfglib.validate(
            budget.BudgetConfig(budgets=(1, 2), seeds_per_budget=(1, 1), conv_seeds_per_budget=(1,))
        )
    cfglib.validate(budget.BudgetConfig(budgets=(1, 2), seeds_per_budget=(1, 1)))  # no cap: fine
    # the quick preset's cap matters only when conv runs: a slice without it needs no new cap
    quick = get("esr.budget").presets["quick"]
    cfglib.validate(cfglib.apply_overrides(quick, ["variants=[current]", "budgets=[1]",
                                                   "seeds_per_budget=[2]"]))  # fmt: skip


def spec(tmp_path, experiment, name, overrides=(), **kw):
    return RunSpec(experiment, preset="smoke", out=str(tmp_path / name), quiet=True, threads=1,
                   overrides=tuple(overrides), **kw)  # fmt: skip


def metric_lines(run_dir):
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [{k: v for k, v in r.items() if not is_timing(k)} for r in rows]
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True))


SLICE = ("variants=[current]", "budgets=[1]", "seeds_per_budget=[1]")


def test_current_1x_unit_is_the_gridworld_unit(tmp_path):
    ours = execute(spec(tmp_path, "esr.budget", "budget", SLICE, workers=1))
    grid = execute(
        spec(tmp_path, "esr.gridworld", "grid", ("obstacles=[2]", "n_seeds=1",
                                                 "methods=[esr,random]"), workers=1)
    )  # fmt: skip
    r = json.loads((ours.dir / "results.json").read_text())
    g = json.loads((grid.dir / "results.json").read_text())["per"]
    unit = r["units"]["esr-current-b2-x1-s0"]
    assert unit["return"] == g["esr"]["2"]["return"]["values"][0]
    assert unit["crushed"] == g["esr"]["2"]["crushed"]["values"][0]
    assert unit["diag_curve"] == g["esr"]["2"]["diag_curves"][0]
    assert r["units"]["random-b2-s0"]["return"] == g["random"]["2"]["return"]["values"][0]


def test_units_come_from_the_cache_and_a_slice_is_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNLAB_CACHE", str(tmp_path / "cache"))
    trained = []  # one entry per epoch trained, in any unit
    add_rollout = ReplayBuffer.add_rollout
    monkeypatch.setattr(
        ReplayBuffer, "add_rollout", lambda self, ep: (trained.append(1), add_rollout(self, ep))
    )
    part = execute(spec(tmp_path, "esr.budget", "slice", SLICE, workers=1))
    assert run_status(part.dir) == "complete" and trained
    trained.clear()
    full = execute(spec(tmp_path, "esr.budget", "full", workers=1))
    # the smoke grid: current and repr_first at 1× and 2× (3 and 6 epochs); current 1× cached
    assert len(trained) == 3 + 6 + 6
    assert "[unit esr-current-b2-x1-s0] taken from the cache" in (full.dir / "log.txt").read_text()
    a = json.loads((part.dir / "results.json").read_text())["units"]
    b = json.loads((full.dir / "results.json").read_text())["units"]
    assert a["esr-current-b2-x1-s0"] == b["esr-current-b2-x1-s0"]
    trained.clear()
    again = execute(spec(tmp_path, "esr.budget", "again", workers=1))
    assert trained == []  # every unit from the cache
    assert (again.dir / "results.json").read_bytes() == (full.dir / "results.json").read_bytes()
    assert metric_lines(again.dir) == metric_lines(full.dir)
    assert again.claims == full.claims
    assert list((again.dir / "plots").glob("*.png"))


def test_a_unit_killed_mid_training_resumes_from_its_own_checkpoint(tmp_path, monkeypatch):
    overrides = ("variants=[repr_first]", "budgets=[1]", "seeds_per_budget=[1]",
                 "base.loop.epochs=5")  # fmt: skip
    key = "esr-repr_first-b2-x1-s0"
    kw = dict(overrides=overrides, workers=1)  # in order, in this process
    trained = []
    add_rollout = ReplayBuffer.add_rollout
    monkeypatch.setattr(
        ReplayBuffer, "add_rollout", lambda self, ep: (trained.append(1), add_rollout(self, ep))
    )
    monkeypatch.setenv("ALIGNLAB_CACHE", str(tmp_path / "cache-reference"))
    reference = execute(spec(tmp_path, "esr.budget", "reference", **kw))
    assert len(trained) == 5
    monkeypatch.setenv("ALIGNLAB_CACHE", str(tmp_path / "cache-killed"))  # nothing cached
    with crash_after_checkpoint(1), pytest.raises(SimulatedCrash):
        execute(spec(tmp_path, "esr.budget", "killed", **kw))
    killed = tmp_path / "killed"
    assert run_status(killed) == "failed"
    assert Checkpointer(unit_folder(killed, key)).last_step() == 2  # checkpoint_every 2
    trained.clear()
    execute(spec(tmp_path, "esr.budget", "killed", resume=True, **kw))
    assert len(trained) == 3  # epochs 3 to 5 only
    assert (killed / "results.json").read_bytes() == (reference.dir / "results.json").read_bytes()
    assert metric_lines(killed) == metric_lines(reference.dir)
    assert (
        f"[unit {key}] resuming from its checkpoint at step 2" in (killed / "log.txt").read_text()
    )


# ---- 3. the claim --------------------------------------------------------------------------


def _results(diffs: dict[int, float], variants=("current",)) -> dict:
    cells = {str(m): {"seeds": 2, "esr_minus_random": {"mean": d, "ci95": 1.0}}
             for m, d in diffs.items()}  # fmt: skip
    return {"variants": list(variants), "obstacles": [2, 5], "budgets": list(diffs),
            "per": {v: {"2": cells} for v in variants}}  # fmt: skip


def test_budget_effect_claim_on_hand_made_results():
    text, ok = budget.claim_budget_effect(_results({1: -5.0, 2: 0.0, 8: 3.0}))
    assert ok and "-5.0 ± 1.0 at 1×" in text and "+3.0 ± 1.0 at 8×" in text
    assert not budget.claim_budget_effect(_results({1: 2.0, 8: -1.0}))[1]
    text, ok = budget.claim_budget_effect(_results({1: 2.0}))
    assert not ok and "only one budget" in text
    assert budget.figure_budget_effect(_results({1: -5.0, 8: 3.0})) == {"x1": -5.0, "x8": 3.0}
    # without "current", the first variant
    assert budget.claim_budget_effect(_results({1: 0.0, 4: 1.0}, ("conv",)))[1]
