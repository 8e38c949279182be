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
