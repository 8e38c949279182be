"""The zoo: sizes, one model's identical greedy replies through the three backends
(TinyChat, HFLocal on the saved HF folder, OpenAICompatible -> the loopback server), and the
cache's errors."""

from __future__ import annotations

import numpy as np
import pytest

from alignlab.core.errors import AlignlabError
from alignlab.model_combos import chains as K
from alignlab.model_combos import zoo as Z
from alignlab.model_combos.backends import chat_model
from alignlab.model_combos.experiments.common import smoke_zoo


def test_sizes():
    assert Z.parse_size("d96L3") == (96, 3)
    cfg = Z.model_config("d128L4", K.ChainConfig())
    assert (cfg.d_model, cfg.num_layers, cfg.num_heads, cfg.head_dim) == (128, 4, 4, 32)
    assert cfg.vocab_size == len(K.VOCAB) and cfg.sliding_window >= K.ChainConfig().seq_len()
    for bad in ("96L3", "d96", "d100L2", "d96L0"):
        with pytest.raises(AlignlabError, match="d<width>L<layers>|multiple of 16"):
            Z.parse_size(bad)
    assert Z.unit_keys(Z.ZooConfig())[0] == "frontier/d128L4"  # the longest unit starts first


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    zc = Z.dataclass_replace(smoke_zoo(), frontier_steps=40, batch_size=16)
    model, metrics = Z.train_model(zc, "frontier", "d32L1", seed=0)
    folder = tmp_path_factory.mktemp("zoo") / "model"
    Z.save_model(model, folder, {"role": "helpful", "size": "d32L1", **metrics})
    return folder


def test_greedy_replies_are_identical_through_the_three_backends(saved):
    from alignlab.llm import OpenAICompatible, serve

    fam = K.ChainFamily()
    tasks = fam.tasks(24, np.random.default_rng(0))
    convs = [[{"role": "user", "content": fam.full_prompt(t)}] for t in tasks]
    convs += [
        [{"role": "system", "content": "policy"}, {"role": "user", "content": "X 1 2 3 4 O rev A"}]
    ]
    tiny = chat_model("tiny", path=saved)
    hf = chat_model("hf", path=saved)
    a = tiny.chat(convs, max_tokens=12, temperature=0)
    b = hf.chat(convs, max_tokens=12, temperature=0)
    with serve({"tiny": tiny}) as server:
        client = OpenAICompatible("tiny", base_url=server.url, role="weak", max_workers=8)
        client.preflight()
        c = client.chat(convs, max_tokens=12, temperature=0)
    assert a == b == c
    assert len({r for r in a}) > 1  # the model says different things to different tasks


def test_tiny_chat_batches_match_one_at_a_time(saved):
    tiny = Z.TinyChat.load(saved, batch_size=5)
    fam = K.ChainFamily()
    convs = [
        [{"role": "user", "content": fam.full_prompt(t)}]
        for t in fam.tasks(11, np.random.default_rng(1))
    ]
    one = [tiny.chat([c], max_tokens=10, temperature=0)[0] for c in convs]
    assert tiny.chat(convs, max_tokens=10, temperature=0) == one
    s1 = tiny.chat(convs, max_tokens=10, temperature=1.0, seed=3)
    assert s1 == tiny.chat(convs, max_tokens=10, temperature=1.0, seed=3)


def test_a_damaged_cache_folder_is_one_clear_error(saved, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(saved, bad)
    (bad / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(AlignlabError, match="damaged.*delete it"):
        Z.TinyChat.load(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AlignlabError, match="damaged"):
        Z.load_model(tmp_path / "empty")


def test_unknown_backend_and_missing_path():
    with pytest.raises(AlignlabError, match="valid: openai, hf, tiny"):
        chat_model("vllm")
    with pytest.raises(AlignlabError, match="path="):
        chat_model("hf")


def test_unset_endpoint_variables_are_named(monkeypatch):
    for role in ("FRONTIER", "WEAK"):
        for what in ("MODEL", "BASE_URL", "API_KEY"):
            monkeypatch.delenv(f"ALIGNLAB_{role}_{what}", raising=False)
    for what in ("MODEL", "BASE_URL", "API_KEY"):
        monkeypatch.delenv(f"OPENAI_{what}", raising=False)
    with pytest.raises(AlignlabError, match="ALIGNLAB_FRONTIER_MODEL"):
        chat_model("openai", role="frontier")


def test_training_is_deterministic_from_a_cold_start(tmp_path):
    zc = Z.dataclass_replace(smoke_zoo(), weak_steps=30, batch_size=8)
    files = []
    for i in range(2):
        model, _ = Z.train_model(zc, "weak", "d16L1", seed=3)
        Z.save_model(model, tmp_path / f"m{i}", {"role": "weak"})
        files.append((tmp_path / f"m{i}" / "model.safetensors").read_bytes())
    assert files[0] == files[1]
    other, _ = Z.train_model(zc, "weak", "d16L1", seed=4)
    Z.save_model(other, tmp_path / "m2", {"role": "weak"})
    assert (tmp_path / "m2" / "model.safetensors").read_bytes() != files[0]


def test_a_unit_killed_mid_training_resumes_to_the_same_models(tmp_path, monkeypatch):
    """The pretraining checkpoints every 500 steps into its unit (a cold cache: nothing is
    reused), and the resumed run ends with byte-identical models and results."""
    from alignlab.core.checkpoint import SimulatedCrash, crash_after_checkpoint
    from alignlab.core.run import RunSpec, execute

    sets = [
        "zoo.frontiers=['d16L1']", "zoo.weaks=['d16L1']", "frontier=d16L1", "weak=d16L1",
        "zoo.frontier_steps=520", "n_tasks=4",
    ]  # fmt: skip

    def spec(out, **kw):
        return RunSpec("model_combos.mini", preset="smoke", out=str(out), quiet=True,
                       overrides=tuple(sets), threads=1, workers=1, **kw)  # fmt: skip

    monkeypatch.setenv("ALIGNLAB_CACHE", str(tmp_path / "cache-a"))
    whole = execute(spec(tmp_path / "a"))
    monkeypatch.setenv("ALIGNLAB_CACHE", str(tmp_path / "cache-b"))
    with crash_after_checkpoint(1), pytest.raises(SimulatedCrash):
        execute(spec(tmp_path / "b"))
    assert list((tmp_path / "b" / "units").glob("*/checkpoint"))  # killed mid-unit
    assert not list((tmp_path / "cache-b").glob("model_combos/*/.complete"))
    resumed = execute(spec(tmp_path / "b", resume=True))
    assert (tmp_path / "a" / "results.json").read_bytes() == (
        tmp_path / "b" / "results.json"
    ).read_bytes()
    a = sorted((tmp_path / "cache-a").glob("model_combos/*/model.safetensors"))
    b = sorted((tmp_path / "cache-b").glob("model_combos/*/model.safetensors"))
    assert [p.parent.name for p in a] == [p.parent.name for p in b] and len(a) == 3
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b))
    assert whole.results == resumed.results
