"""core.stats, core.seeding and core.cache."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
from scipy import stats as sps

from alignlab.core import cache, seeding
from alignlab.core.stats import mean_ci95, seed_summary, welch_diff_ci95


def test_mean_ci95_is_the_student_t_interval_and_nan_for_one_seed():
    x = [1.0, 2.0, 4.0, 7.0]
    m, h = mean_ci95(x)
    lo, hi = sps.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=sps.sem(x))
    assert m == pytest.approx(np.mean(x)) and h == pytest.approx((hi - lo) / 2)
    assert mean_ci95([3.0])[0] == 3.0 and math.isnan(mean_ci95([3.0])[1])
    with pytest.raises(ValueError):
        mean_ci95([])
    assert seed_summary([1, 3]) == {"values": [1.0, 3.0], "mean": 2.0, "ci95": mean_ci95([1, 3])[1]}


def test_welch_interval_matches_scipy():
    a, b = [5.0, 6.0, 7.5, 6.2], [3.0, 4.5, 2.0]
    d, h = welch_diff_ci95(a, b)
    res = sps.ttest_ind(a, b, equal_var=False)
    lo, hi = res.confidence_interval(0.95)
    assert d == pytest.approx(np.mean(a) - np.mean(b)) and h == pytest.approx((hi - lo) / 2)
    assert math.isnan(welch_diff_ci95([1.0], [2.0, 3.0])[1])
    assert welch_diff_ci95([1.0, 1.0], [2.0, 2.0]) == (-1.0, 0.0)


def test_substreams_are_named_integers_as_is_and_names_by_crc32():
    assert seeding.entropy(7, 3, "cmd2", 1) == [7, 3, zlib.crc32(b"cmd2"), 1]
    a = seeding.generator(0, "eval", 1).random(3)
    assert np.array_equal(a, seeding.generator(0, "eval", 1).random(3))
    assert not np.array_equal(a, seeding.generator(0, "eval", 2).random(3))
    assert not np.array_equal(a, seeding.generator(1, "eval", 1).random(3))
    ss = np.random.SeedSequence([5, 2])
    assert seeding.int_seed(5, 2) == int(ss.generate_state(1)[0])
    with pytest.raises(ValueError, match="non-negative"):
        seeding.entropy(0, -1)


def test_cached_folder_builds_once_in_a_temp_folder_and_reuses(tmp_path):
    calls = []

    def build(folder):
        calls.append(folder)
        (folder / "weights.bin").write_bytes(b"abc")

    key = cache.content_key({"model": 1, "seed": 0})
    assert key == cache.content_key({"seed": 0, "model": 1}) and len(key) == 16
    folder, built = cache.cached_folder("things", key, build, root=tmp_path)
    assert built and folder == tmp_path / "things" / key and cache.is_complete(folder)
    assert calls[0] != folder and not calls[0].exists()  # built elsewhere, then renamed
    again, built = cache.cached_folder("things", key, build, root=tmp_path)
    assert again == folder and not built and len(calls) == 1

    def crash(folder):
        (folder / "half").write_bytes(b"x")
        raise RuntimeError("killed while building")

    with pytest.raises(RuntimeError):
        cache.cached_folder("things", "other", crash, root=tmp_path)
    assert sorted(p.name for p in (tmp_path / "things").iterdir()) == [key]  # nothing partial


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ALIGNLAB_CACHE", str(tmp_path / "c"))
    assert cache.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("ALIGNLAB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache.cache_dir() == tmp_path / "x" / "alignlab"
