"""The ESR experiments: a unit killed mid-training resumes from its own checkpoint, the claim
checks on hand-made results, the assisted episode and the Overcooked adapter the training loop
steps, and config errors naming their key. (The run contract every experiment meets, smoke
run, same seed, kill and resume at the first checkpoint, is tests/test_contract.py.)"""

import json

import numpy as np
import pytest

from alignlab.core.checkpoint import Checkpointer, SimulatedCrash, crash_after_checkpoint
from alignlab.core.errors import AlignlabError
from alignlab.core.run import RunSpec, execute, is_timing, run_status
from alignlab.core.units import unit_folder
from alignlab.esr.experiments import gridworld as grid
from alignlab.esr.experiments import overcooked as oc
from alignlab.esr.gridworld import VecGridWorld
from alignlab.esr.overcooked_human import AssistedOvercooked, ScriptedHuman
from alignlab.esr.train import GoalInferenceRobot, ReplayBuffer


def spec(tmp_path, experiment, name="run", **kw):
    return RunSpec(experiment, preset="smoke", out=str(tmp_path / name), quiet=True, **kw)


def metric_lines(run_dir):
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [{k: v for k, v in r.items() if not is_timing(k)} for r in rows]
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True))


KILLED = {  # experiment: (overrides, the unit that is killed: the first one trained)
    "esr.overcooked": (("loop.epochs=5",), "esr/cramped_room/seed0"),
    "esr.gridworld": (("obstacles=[2]", "n_seeds=1", "loop.epochs=5"), "esr/boxes2/seed0"),
}


@pytest.mark.parametrize("experiment", list(KILLED))
def test_a_unit_killed_mid_training_resumes_from_its_own_checkpoint(
    tmp_path, monkeypatch, experiment
):
    overrides, key = KILLED[experiment]
    kw = dict(overrides=overrides, threads=1, workers=1)  # in order, in this process
    trained = []  # one entry per epoch trained, in any unit
    add_rollout = ReplayBuffer.add_rollout
    monkeypatch.setattr(
        ReplayBuffer, "add_rollout", lambda self, ep: (trained.append(1), add_rollout(self, ep))
    )
    reference = execute(spec(tmp_path, experiment, "reference", **kw))
    epochs_in_full = len(trained)
    with crash_after_checkpoint(1), pytest.raises(SimulatedCrash):
        execute(spec(tmp_path, experiment, "killed", **kw))
    killed = tmp_path / "killed"
    assert run_status(killed) == "failed"
    # the unit's own checkpoint, mid-training (checkpoint_every 2 of 5 epochs)
    assert Checkpointer(unit_folder(killed, key)).last_step() == 2
    trained.clear()
    execute(spec(tmp_path, experiment, "killed", resume=True, **kw))
    assert len(trained) == epochs_in_full - 2  # the killed unit trained epochs 3 to 5 only
    assert run_status(killed) == "complete"
    assert (killed / "results.json").read_bytes() == (reference.dir / "results.json").read_bytes()
    assert metric_lines(killed) == metric_lines(reference.dir)  # no epoch logged twice
    log = (killed / "log.txt").read_text()
    assert f"[unit {key}] resuming from its checkpoint at step 2" in log
    assert not (killed / "units").exists()


# ---- claims on hand-made results ----------------------------------------------------------


def _grid_results(returns: dict) -> dict:
    """results with per-seed returns {method: {boxes: [..]}}."""
    ks = sorted(next(iter(returns.values())))
    per = {m: {str(k): {"return": {"values": v[k]}} for k in ks} for m, v in returns.items()}
    return {"obstacles": ks, "methods": list(returns), "per": per}


def test_gridworld_claims_on_hand_made_results():
    good = _grid_results(
        {
            "esr": {2: [30, 31, 29], 10: [20, 21, 19]},
            "ave": {2: [25, 26, 24], 10: [5, 6, 4]},
            "random": {2: [15, 16, 14], 10: [5, 6, 5]},
        }
    )
    assert grid.claim_beats_random(good)[1]
    assert grid.claim_margin_grows(good)[1]  # 5 -> 15
    assert grid.claim_ave_no_better(good)[1]
    bad = _grid_results(
        {
            "esr": {2: [30, 31, 29], 10: [5, 6, 4]},
            "ave": {2: [10, 11, 9], 10: [15, 16, 14]},
            "random": {2: [15, 16, 14], 10: [5, 6, 5]},
        }
    )
    assert not grid.claim_beats_random(bad)[1]  # ties random at 10 boxes
    assert not grid.claim_margin_grows(bad)[1]  # +20 -> -10
    assert not grid.claim_ave_no_better(bad)[1]  # AvE clearly above random at 10
    behind = _grid_results(  # the gap shrinks (-25 -> -3) but ESR never gets ahead of AvE
        {
            "esr": {2: [5, 6, 4], 10: [1, 2, 1]},
            "ave": {2: [30, 31, 29], 10: [4, 5, 4]},
            "random": {2: [15, 16, 14], 10: [3, 4, 3]},
        }
    )
    assert not grid.claim_margin_grows(behind)[1]


def test_one_seed_never_passes_a_claim_of_separation():
    one = _grid_results({"esr": {2: [30]}, "ave": {2: [1]}, "random": {2: [1]}})
    text, holds = grid.claim_beats_random(one)
    assert not holds and "nan" in text


def test_overcooked_claim_on_hand_made_results():
    def res(esr, rnd):
        per = {
            "esr": {"cramped_room": {"team": {"values": esr}}},
            "random": {"cramped_room": {"team": {"values": rnd}}},
        }
        return {"layouts": ["cramped_room"], "per": per}

    assert oc.claim_raises_team_reward(res([80, 82, 81], [70, 71, 72]))[1]
    assert not oc.claim_raises_team_reward(res([60, 62, 61], [70, 71, 72]))[1]


def test_margin_claim_does_not_depend_on_the_order_of_the_counts():
    r = _grid_results(
        {
            "esr": {2: [20, 21, 19], 10: [10, 11, 9]},
            "ave": {2: [25, 26, 24], 10: [2, 3, 1]},
            "random": {2: [15, 16, 14], 10: [3, 4, 3]},
        }
    )
    shuffled = {**r, "obstacles": [10, 2]}
    assert grid.claim_margin_grows(r)[1] and grid.claim_margin_grows(shuffled)[1]


# ---- the pictured episode, the Overcooked adapter -----------------------------------------


def test_recorded_episode_starts_trapped_and_prefers_one_that_reaches_the_goal():
    make = lambda n: VecGridWorld(n, 5, 2, 0.2, 50)  # noqa: E731
    states = grid.record_episode(make, GoalInferenceRobot(), np.random.default_rng(0))
    assert len(states) == 51 and states[0]["human"] in ([0, 0], [0, 4], [4, 0], [4, 4])
    assert states[-1]["human"] == states[-1]["goal"] and not states[-1]["dead"]
    picks = grid.story_frames(states)
    assert picks[0] == 0 and picks[-1] == 50 and len(picks) <= 12


def test_assisted_overcooked_steps_with_the_scripted_human():
    env = AssistedOvercooked("cramped_room", 4, 50, 0.0)
    rng = np.random.default_rng(0)
    env.reset(rng)
    greedy = ScriptedHuman("cramped_room", 0.0).greedy(env)
    assert np.array_equal(env.human_act(rng), greedy)  # epsilon 0: the greedy subtask policy


# ---- config errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "experiment, override, message",
    [
        ("esr.gridworld", "methods=[esr,bogus]", "methods must be non-empty, no repeats, one of"),
        ("esr.overcooked", "layouts=[kitchen]", "layouts must be non-empty, no repeats, one of"),
        ("esr.overcooked", "methods=[goal_inference]", "methods must be non-empty, no repeats"),
        ("esr.gridworld", "obstacles=[30]", "obstacles must each be <= size² − 2 = 23"),
        ("esr.gridworld", "obstacles=[2,2]", "obstacles must be non-empty, no repeats, >= 2"),
        ("esr.gridworld", "obstacles=[]", "obstacles must be non-empty"),
        ("esr.gridworld", "obstacles=[1]", "obstacles must be non-empty, no repeats, >= 2"),
        ("esr.gridworld", "eval_envs=0", "eval_envs must be >= 1, got 0"),
        ("esr.overcooked", "human_epsilon=1.5", "human_epsilon must be in [0, 1], got 1.5"),
        ("esr.gridworld", "loop.warmup_epochs=3", "loop.warmup_epochs must be < epochs (3)"),
        ("esr.gridworld", "loop.checkpoint_every=0", "loop.checkpoint_every must be >= 1"),
        ("esr.overcooked", "agent.gamma=1", "agent.gamma must be in (0, 1), got 1.0"),
    ],
)
def test_bad_configs_are_one_error_naming_the_dotted_key(tmp_path, experiment, override, message):
    with pytest.raises(AlignlabError) as info:
        execute(spec(tmp_path, experiment, overrides=(override,)))
    assert str(info.value).startswith(f"Invalid config: {message}"), str(info.value)
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_workers_is_an_execution_knob_not_a_config_key(tmp_path):
    with pytest.raises(AlignlabError, match="Unknown config key 'workers'"):
        execute(spec(tmp_path, "esr.gridworld", overrides=("workers=2",)))
