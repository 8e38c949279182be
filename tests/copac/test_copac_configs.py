"""Bad input to the CopAC experiments: one error naming the problem, nothing written."""

from __future__ import annotations

import importlib.util

import pytest

import alignlab.copac.experiments  # noqa: F401  (registers the experiments)
from alignlab.copac.experiments.common import at_points, schedule
from alignlab.core.errors import AlignlabError
from alignlab.core.run import RunSpec, execute


def run(tmp_path, name, *overrides):
    spec = RunSpec(
        name,
        preset="smoke",
        out=str(tmp_path / "run"),
        quiet=True,
        threads=1,
        overrides=tuple(overrides),
    )
    return execute(spec)


@pytest.mark.parametrize(
    "name, override, message",
    [
        ("copac.reacher", "patient.world=CartPole-v1", "one of Pendulum-v1, Reacher-v5"),
        ("copac.reacher", "p=1.5", r"p must be in \[0, 1\], got 1.5"),
        ("copac.lesions", "lesions=[0.5, -0.1]", r"lesions must be .*in \[0, 1\]"),
        ("copac.reacher", "patient.stim_dim=33", r"patient.stim_dim must be in \[1, 32\]"),
        ("copac.reacher", "patient.copac.disc_act=1001", r"1001\^2 = 1,002,001 stimulations"),
        ("copac.reacher", "patient.budget=0", r"patient.budget must be >= 1"),
        ("copac.reacher", "methods=[copac, ppo]", "one of copac, copac_noq, random_f"),
        ("copac.reacher", "methods=[sac]", "must include 'copac'"),
        ("copac.rnn_brain", "patient.brain=sac", "must be 'michaels'"),
        ("copac.rnn_brain", "methods=[copac, sac, true_f]", "true_f needs a stateless brain"),
    ],
)
def test_bad_config_is_one_error_and_writes_nothing(tmp_path, name, override, message):
    with pytest.raises(AlignlabError, match=message):
        run(tmp_path, name, override)
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(
    importlib.util.find_spec("myosuite") is not None, reason="checks the error without MyoSuite"
)
def test_missing_myosuite_is_named_before_anything_is_written(tmp_path):
    with pytest.raises(AlignlabError, match=r"needs MyoSuite: pip install 'alignlab\[myo\]'"):
        run(tmp_path, "copac.reacher", "patient.world=myoHandReachFixed-v0")
    assert not (tmp_path / "run").exists()


def test_schedule_and_budget_points():
    s = schedule(200)
    assert s[:21] == list(range(21)) and 25 in s and 50 in s and 60 in s and s[-1] == 200
    assert 21 not in s and 55 not in s
    assert schedule(7) == list(range(8))
    assert at_points(10) == [8, 9, 10] and at_points(1) == [1]
