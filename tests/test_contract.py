"""The run contract, checked for every registered experiment (wip included) and for the
example system of docs/core.md: a new system inherits these tests with no code of its own.

- the smoke preset completes, every claim is measured, and the plots are written;
- the same seed gives a byte-identical results.json;
- a run killed right after its first checkpoint (or, for experiments that never checkpoint,
  just before its results are written) resumes to the same results.json and metric lines,
  and a unit or stage with a checkpoint of its own continues from it;
- a bad override is one error naming the key, and nothing is written;
- all three presets validate, and every config field carries a help line.
"""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path

import pytest

from alignlab.core import config as cfglib
from alignlab.core import experiment as registry
from alignlab.core.checkpoint import SimulatedCrash, crash_after_checkpoint
from alignlab.core.config import PRESETS
from alignlab.core.errors import AlignlabError, MissingDependency
from alignlab.core.run import RunSpec, execute, is_timing, run_status

DOCS = Path(__file__).resolve().parents[1] / "docs" / "core.md"
EXAMPLE_MARK = "<!-- the example system: tests/test_contract.py runs this block -->"


def example_source() -> str:
    """The example system's code, as docs/core.md shows it."""
    text = DOCS.read_text(encoding="utf-8")
    after = text.split(EXAMPLE_MARK, 1)[1]
    return re.search(r"```python\n(.*?)```", after, re.S).group(1)


EXAMPLE = re.search(r'name="([^"]+)"', example_source()).group(1)
NAMES = [e.name for e in registry.experiments() if e.system in registry.SYSTEMS] + [EXAMPLE]


@pytest.fixture
def experiment(request):
    """The experiment under test; the docs example is registered for the test's duration."""
    name = request.param
    if name != EXAMPLE:
        exp = registry.get(name)
        if exp.study:  # a study keeps finished units in the cache: each test gets its own
            cache = request.getfixturevalue("tmp_path") / "study-cache"
            request.getfixturevalue("monkeypatch").setenv("ALIGNLAB_CACHE", str(cache))
        if exp.preflight is not None:
            try:  # an absent optional interpreter or endpoint: a reported skip naming the fix
                exp.preflight(exp.presets["smoke"])
            except MissingDependency as e:
                pytest.skip(f"{name}: {e}")
        yield exp
        return
    module = types.ModuleType("alignlab_docs_example")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(example_source(), str(DOCS), "exec"), module.__dict__)  # registers it
    try:
        yield registry.get(name)
    finally:
        registry.unregister(name)
        del sys.modules[module.__name__]


def spec(tmp_path, name, folder="run", **kw) -> RunSpec:
    return RunSpec(name, preset="smoke", out=str(tmp_path / folder), quiet=True, threads=1, **kw)


def metric_lines(run_dir: Path) -> list[dict]:
    """metrics.jsonl without timings, in a fixed order (parallel units finish in any order)."""
    path = run_dir / "metrics.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    rows = [{k: v for k, v in r.items() if not is_timing(k)} for r in rows]
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True))


def unit_and_stage_checkpoints(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("units/*/checkpoint")) + sorted(run_dir.glob("stages/*/checkpoint"))


pytestmark = pytest.mark.parametrize("experiment", NAMES, indirect=True)


def test_smoke_completes_with_every_claim_measured_and_plots(tmp_path, experiment):
    out = execute(spec(tmp_path, experiment.name))
    assert run_status(out.dir) == "complete"
    assert len(out.claims) == len(experiment.claims) > 0
    unmeasured = [c["id"] for c in out.claims if c["measured"] is None]
    assert not unmeasured, [c.get("detail") for c in out.claims]
    if experiment.plots is not None:
        assert list((out.dir / "plots").glob("*.png"))
    assert not (out.dir / "units").exists()  # finished units leave no checkpoint behind


def test_same_seed_gives_byte_identical_results(tmp_path, experiment):
    a = execute(spec(tmp_path, experiment.name, "a"))
    b = execute(spec(tmp_path, experiment.name, "b"))
    assert (a.dir / "results.json").read_bytes() == (b.dir / "results.json").read_bytes()


def test_killed_run_resumes_to_the_same_results_and_metric_lines(tmp_path, experiment):
    reference = execute(spec(tmp_path, experiment.name, "reference"))
    killed = spec(tmp_path, experiment.name, "killed")
    with crash_after_checkpoint(1), pytest.raises((SimulatedCrash, AlignlabError)) as info:
        execute(killed)
    if isinstance(info.value, AlignlabError):  # a unit's worker crashed: it says so
        assert "SimulatedCrash" in str(info.value)
    d = Path(killed.out)
    assert run_status(d) == "failed"
    own = unit_and_stage_checkpoints(d)
    resumed = execute(spec(tmp_path, experiment.name, "killed", resume=True))
    assert (d / "results.json").read_bytes() == (reference.dir / "results.json").read_bytes()
    assert resumed.claims == reference.claims
    assert metric_lines(d) == metric_lines(reference.dir)
    log = (d / "log.txt").read_text()
    assert "resuming from step" in log or "restarting (no checkpoint)" in log
    if any(p.parent.parent.name == "units" for p in own):  # a unit was killed mid-way
        assert "resuming from its checkpoint at step" in log


def test_bad_override_is_one_error_naming_the_key_and_writes_nothing(tmp_path, experiment):
    with pytest.raises(AlignlabError, match="Unknown config key 'no_such_key'"):
        execute(spec(tmp_path, experiment.name, overrides=("no_such_key=1",)))
    key = next(r["key"] for r in _leaves(experiment) if r["type"] not in ("str", "any"))
    with pytest.raises(AlignlabError, match=rf"--set {re.escape(key)}=.*: expected"):
        execute(spec(tmp_path, experiment.name, overrides=(f"{key}={{bogus: 1}}",)))
    bounded = _out_of_range(experiment.preset("smoke"))
    if bounded is not None:  # a value the type admits but the field's constraint does not
        key, bad = bounded
        with pytest.raises(AlignlabError, match=rf"Invalid config: {re.escape(key)} must be"):
            execute(spec(tmp_path, experiment.name, overrides=(f"{key}={bad}",)))
    assert not (tmp_path / "run").exists()


def _leaves(experiment) -> list[dict]:
    return [r for r in cfglib.describe({"smoke": experiment.preset("smoke")}) if not r["group"]]


def _out_of_range(cfg) -> tuple[str, object] | None:
    """The first field with a lower bound, and a value below it (None: no such field)."""
    for row in cfglib.describe({"smoke": cfg}):
        if row["group"] or not row["constraint"]:
            continue
        rule = _rule(cfg, row["key"])
        value = row["values"]["smoke"]
        if rule.ge is not None or rule.gt is not None:
            low = rule.ge if rule.ge is not None else rule.gt
            below = low - 1 if rule.ge is not None else low
            if isinstance(value, list):
                return row["key"], [below]
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return row["key"], type(value)(below)
    return None


def _rule(cfg, key: str):
    import dataclasses

    *groups, leaf = key.split(".")
    for g in groups:
        cfg = getattr(cfg, g)
    return next(f for f in dataclasses.fields(cfg) if f.name == leaf).metadata["rule"]


def test_every_preset_validates_and_every_field_has_help(experiment):
    for preset in PRESETS:
        cfglib.validate(experiment.preset(preset))
    rows = cfglib.describe({p: experiment.preset(p) for p in PRESETS})
    assert rows and all(row["help"] for row in rows), [r["key"] for r in rows if not r["help"]]
