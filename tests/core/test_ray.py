import pytest
import ray  # noqa: F401  (the [ray] extra, installed by `make test`: a missing Ray fails here)

from alignlab.core.sweep import sweep


@pytest.mark.ray
def test_ray_backend_matches_local_backend(tmp_path, toy):
    kw = dict(preset="smoke", show_progress=False, workers=2)
    local = sweep("toy.regression", [0, 1], ["lr=0.1,0.05"], out=tmp_path / "l", **kw)
    ray_ = sweep("toy.regression", [0, 1], ["lr=0.1,0.05"], out=tmp_path / "r", backend="ray", **kw)
    assert [o.results for o in ray_.outcomes] == [o.results for o in local.outcomes]
    assert (tmp_path / "r" / "aggregate.json").exists()
    # re-running on Ray reuses every finished run
    again = sweep(
        "toy.regression", [0, 1], ["lr=0.1,0.05"], out=tmp_path / "r", backend="ray", **kw
    )
    assert all(o.skipped for o in again.outcomes)


@pytest.mark.ray
def test_reproduce_over_seeds_on_ray_matches_the_local_pool(tmp_path, toy, monkeypatch):
    import json

    from alignlab.core import experiment as registry
    from alignlab.core.reproduce import plan, reproduce

    monkeypatch.setattr(registry, "_REGISTRY", {"toy.seeded": toy.SEEDED})
    monkeypatch.setattr(registry, "load_systems", lambda *a, **k: None)
    seeds = [0, 1, 2]
    for backend in ("local", "ray"):
        out = tmp_path / backend
        done = reproduce(plan(None, "smoke", seeds, out), "smoke", seeds, out, backend=backend,
                         workers=2)  # fmt: skip
        assert not done.problems and len(done.runs) == 3
    claims = {b: json.loads((tmp_path / b / "claims.json").read_text()) for b in ("local", "ray")}
    for c in (*claims["local"], *claims["ray"]):
        for s in c["seeds"]:
            s.pop("run")
    assert claims["ray"] == claims["local"]
    assert claims["ray"][0]["hold_rate"] == "2/3 seeds"
