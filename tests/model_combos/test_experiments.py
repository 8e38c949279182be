"""The experiments' bad input: one error, nothing written (the contract tests run the smoke
presets, same-seed determinism and resume)."""

from __future__ import annotations

import pytest

from alignlab.core.config import ConfigError
from alignlab.core.errors import AlignlabError
from alignlab.core.run import RunSpec, execute

ENV = [
    f"{p}_{w}"
    for p in ("ALIGNLAB_FRONTIER", "ALIGNLAB_WEAK", "OPENAI")
    for w in ("MODEL", "BASE_URL", "API_KEY")
]


def run(tmp_path, name, preset="smoke", *overrides):
    out = tmp_path / "run"
    spec = RunSpec(name, preset=preset, out=str(out), quiet=True, overrides=list(overrides))
    return out, spec


@pytest.mark.parametrize(
    ("name", "override", "match"),
    [
        ("model_combos.mini", "zoo.chain.m=3", "m"),
        ("model_combos.mini", "k=0", "k"),
        ("model_combos.mini", "frontier=d512L9", "frontier"),
        ("model_combos.mini", "zoo.frontiers=['d100L2']", "d<width>L<layers>|multiple of 16"),
        ("model_combos.llm", "families=['poems']", "families"),
        ("model_combos.llm", "endpoints=grpc", "endpoints"),
        ("model_combos.mini", "n_tasks=100000", "held out"),
        ("model_combos.scaling", "zoo.chain.heldout=0.00001", "held out"),
        ("model_combos.scaling", "zoo.weaks=['d48L2','d32L1']", "smallest to the largest"),
    ],
)
def test_bad_config_is_one_error_and_nothing_is_written(tmp_path, name, override, match):
    out, spec = run(tmp_path, name, "smoke", override)
    with pytest.raises((ConfigError, AlignlabError), match=match):
        execute(spec)
    assert not out.exists()


def test_unset_endpoint_variables_are_named_before_any_write(tmp_path, monkeypatch):
    for var in ENV:
        monkeypatch.delenv(var, raising=False)
    out, spec = run(tmp_path, "model_combos.llm", "quick")
    with pytest.raises(AlignlabError, match="ALIGNLAB_FRONTIER_MODEL.*ALIGNLAB_WEAK_MODEL"):
        execute(spec)  # both roles named in one error
    assert not out.exists()
    monkeypatch.setenv("ALIGNLAB_FRONTIER_MODEL", "m")
    monkeypatch.setenv("ALIGNLAB_FRONTIER_BASE_URL", "http://127.0.0.1:9/v1")
    with pytest.raises(AlignlabError, match="ALIGNLAB_WEAK_MODEL"):
        execute(spec)
    assert not out.exists()


def test_an_unreachable_endpoint_fails_at_preflight_naming_url_and_model(tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for var in ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OPENAI_MODEL", "llama-3-8b")
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{port}/v1")
    out, spec = run(tmp_path, "model_combos.llm", "quick", "n_tasks=1")
    with pytest.raises(AlignlabError, match=rf"llama-3-8b.*127\.0\.0\.1:{port}"):
        execute(spec)
    assert not out.exists()


def test_a_malformed_problem_file_names_its_line(tmp_path):
    bad = tmp_path / "problems.jsonl"
    bad.write_text('{"name": "f"}\nnot json\n', encoding="utf-8")
    out, spec = run(tmp_path, "model_combos.llm", "quick", f"canary_problems={bad}")
    with pytest.raises(AlignlabError, match="canary_problems.*line 1: missing key"):
        execute(spec)
    assert not out.exists()


def test_more_canary_tasks_than_the_problem_file_holds(tmp_path):
    out, spec = run(tmp_path, "model_combos.llm", "quick", "n_tasks=91")
    with pytest.raises(AlignlabError, match="n_tasks.*90 tasks"):
        execute(spec)
    assert not out.exists()
