"""The evaluation benchmark runs end to end at a small size and agrees with choix."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_quick(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "t2i_eval_bench", ROOT / "benchmarks" / "t2i_eval.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "bench.json"
    res = mod.main(["--quick", "--no-sampler", "--out", str(out)])
    assert json.loads(out.read_text())["workload"]["ratings"] == 15 * 200
    assert res["max_abs_delta_elo_vs_choix_ilsr_pairwise"] <= 0.01
    assert res["max_abs_delta_elo_vs_choix_dense"] <= 0.01
    assert res["speedup_vs_choix_ilsr_pairwise"] > 1
    assert res["machine"]["peak_rss_mb"] < 3000
