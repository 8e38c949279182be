"""Meta-World button-press pools: run by the interpreter in ALIGNLAB_METAWORLD_PYTHON (`make
test` points it at .venv-mw); skipped, with the reason, where there is none."""

import sys

import numpy as np
import pytest

from alignlab.core.errors import AlignlabError
from alignlab.langfeedback import metaworld as mw
from alignlab.langfeedback import mw_rollouts

SMALL = mw.MetaWorldConfig(horizon=20)
# Meta-World's scripted policy as it is: no via point, full speed, no noise, always pressing
UNPERTURBED = mw.MetaWorldConfig(
    horizon=100, via_prob=0.0, press_prob=1.0, speed=(1.0, 1.0), noise=(0.0, 0.0)
)


@pytest.fixture
def need_mw():
    if not mw.available():
        pytest.skip(
            f"no Meta-World interpreter: set {mw.ENV_VAR} to the python of a venv with "
            "metaworld==3.1.1 (`make setup` makes .venv-mw)"
        )


@pytest.fixture(scope="module")
def small_pool():
    """n=6, T=20, seed 0, one worker, in the test run's cache (None without Meta-World)."""
    return mw.generate(6, 0, SMALL, workers=1) if mw.available() else None


def same(a: mw.MWPool, b: mw.MWPool) -> bool:
    return (
        np.array_equal(a.obs, b.obs)
        and np.array_equal(a.feats, b.feats)
        and np.array_equal(a.success, b.success)
        and a.params.keys() == b.params.keys()
        and all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    )


def test_defaults_match_the_script():
    assert mw.MetaWorldConfig().perturb() == {
        k: list(v) if isinstance(v, tuple) else v for k, v in mw_rollouts.DEFAULTS.items()
    }


def test_shapes_dtypes_and_features(need_mw, small_pool):
    p = small_pool
    assert p.obs.shape == (6, 20, mw.OBS_DIM) and p.obs.dtype == np.float32
    assert p.feats.shape == (6, 3) and p.feats.dtype == np.float64
    assert p.success.shape == (6,) and p.success.dtype == np.bool_
    assert all(v.shape == (6,) for v in p.params.values())
    assert p.versions["metaworld"] == "3.1.1" and p.versions["mujoco"].startswith("3.")
    assert p.dt == pytest.approx(0.0125)
    # the features, recomputed here from the returned observations
    o = p.obs.astype(np.float64)
    hand, button = o[..., 0:3], o[..., 4:7]
    speed = np.zeros(o.shape[:2])
    speed[:, 1:] = np.linalg.norm(hand[:, 1:] - hand[:, :-1], axis=-1) / p.dt
    expected = np.stack(
        [hand[..., 2].mean(1), speed.mean(1), np.linalg.norm(hand - button, axis=-1).mean(1)],
        axis=1,
    )
    np.testing.assert_allclose(p.feats, expected, rtol=1e-12, atol=1e-12)
    # the actions taken are stored after the observation, within Meta-World's bounds
    assert np.abs(p.obs[..., 39:]).max() <= 1.0 and np.all(p.obs[..., 42] == 0)
    assert len(np.unique(p.feats[:, 0])) == 6  # six different trajectories


def test_deterministic_and_independent_of_workers(need_mw, small_pool, tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNLAB_CACHE", str(tmp_path))  # a fresh cache: run again
    two = mw.generate(6, 0, mw.MetaWorldConfig(horizon=20), workers=2)
    assert same(small_pool, two)
    # trajectory i depends on (seed, i) alone: a smaller pool is a prefix; another seed differs
    head = mw.generate(2, 0, SMALL)
    assert np.array_equal(head.obs, two.obs[:2]) and np.array_equal(head.feats, two.feats[:2])
    assert not np.array_equal(mw.generate(2, 1, SMALL).obs, head.obs)


def test_unperturbed_policy_presses_the_button(need_mw):
    p = mw.generate(5, 0, UNPERTURBED)
    assert p.success.sum() >= 4, p.params["first_success_step"]
    pressed = p.params["first_success_step"][p.success]
    assert np.all((pressed > 0) & (pressed < 100))


def test_cache_returns_the_same_pool_without_running_anything(need_mw, small_pool, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("ran the rollouts again")

    monkeypatch.setattr(mw.subprocess, "run", fail)
    monkeypatch.setattr(mw_rollouts, "rollout", fail)
    assert same(mw.generate(6, 0, mw.MetaWorldConfig(horizon=20), workers=2), small_pool)


def test_failing_rollouts_raise_with_stderr_and_leave_nothing(need_mw, tmp_path, monkeypatch):
    if mw._in_process():
        pytest.skip("Meta-World runs in this process: no subprocess to fail")
    versions = dict(mw._resolve()[1])
    fake = tmp_path / "fake_rollouts.py"
    fake.write_text(
        "import json, sys\n"
        f"if '--versions' in sys.argv: print(json.dumps({versions!r})); sys.exit(0)\n"
        "sys.stderr.write('simulated crash in the rollouts\\n'); sys.exit(3)\n"
    )
    monkeypatch.setattr(mw, "SCRIPT", fake)
    cache = tmp_path / "cache"
    monkeypatch.setenv("ALIGNLAB_CACHE", str(cache))
    with pytest.raises(AlignlabError, match="simulated crash in the rollouts"):
        mw.generate(3, 7, SMALL)
    left = [p for p in cache.rglob("*") if p.is_file()] if cache.exists() else []
    assert left == []


def test_missing_interpreter_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "metaworld", None)  # hide an in-process metaworld
    monkeypatch.setenv(mw.ENV_VAR, str(tmp_path / "no-such-python"))
    monkeypatch.setenv("ALIGNLAB_CACHE", str(tmp_path / "cache"))
    assert not mw.available()
    for call in (mw.check_available, lambda: mw.generate(2, 0, SMALL)):
        with pytest.raises(AlignlabError) as e:
            call()
        msg = str(e.value)
        assert "metaworld==3.1.1" in msg and "make setup" in msg and mw.ENV_VAR in msg
        assert "no-such-python" in msg
    monkeypatch.delenv(mw.ENV_VAR)
    with pytest.raises(AlignlabError, match="is not set"):
        mw.check_available()
    assert not (tmp_path / "cache").exists()
