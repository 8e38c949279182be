"""Equivalence with Hugging Face's Gemma 2 (eager), checkpoint conversion both ways, and clear
errors for bad checkpoints. Tests that need transformers skip without the [hf] extra."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from alignlab.core.errors import AlignlabError
from alignlab.gemma2 import Gemma2Config, Gemma2ForCausalLM, from_pretrained, save_pretrained
from alignlab.gemma2.hf import (
    from_hf_config,
    from_hf_state_dict,
    hf_weight_shapes,
    to_hf_config,
    to_hf_state_dict,
)

# Random small configs: GQA ratios 1/2/4, query_pre_attn_scalar != head_dim, windows shorter
# than the sequences, non-default RoPE base and eps.
CONFIGS = {
    "mha": dict(num_heads=4, num_kv_heads=4, query_pre_attn_scalar=24, sliding_window=5),
    "gqa2": dict(num_heads=4, num_kv_heads=2, query_pre_attn_scalar=9, rope_theta=500.0),
    "gqa4": dict(
        num_heads=8, num_kv_heads=2, head_dim=8, query_pre_attn_scalar=40, rms_norm_eps=1e-5
    ),  # fmt: skip
    "mqa": dict(num_heads=4, num_kv_heads=1, d_model=48, intermediate_size=96, sliding_window=3),
}


def hf_pair(overrides, seed=0, std=0.15):
    """An HF eager Gemma2ForCausalLM with every weight random (norms too: HF zeroes them) and
    our model holding the same weights."""
    import transformers  # the [hf] extra, installed by `make test`

    cfg = Gemma2Config.preset("tiny", **overrides)
    hf_cfg = transformers.Gemma2Config.from_dict(to_hf_config(cfg))
    torch.manual_seed(seed)
    hf = transformers.Gemma2ForCausalLM._from_config(hf_cfg, attn_implementation="eager").eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            p.normal_(0, 0.5 if "norm" in name else std)  # large enough for the soft-caps to act
    ours = Gemma2ForCausalLM(cfg).eval()
    ours.load_state_dict(from_hf_state_dict(hf.state_dict(), cfg))
    return hf, ours


def max_diff(a, b):
    return (a - b).abs().max().item()


@pytest.mark.parametrize("impl", ["eager", "fast"])
@pytest.mark.parametrize("name", CONFIGS)
def test_logits_and_every_hidden_state_match_hf_eager(name, impl):
    hf, ours = hf_pair(CONFIGS[name])
    ours.config.attn_impl = impl
    ids = torch.randint(3, 512, (2, 70), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = hf(ids, output_hidden_states=True)
        logits, hidden = ours(ids, return_hidden_states=True)
    assert len(hidden) == len(want.hidden_states) == ours.config.num_layers + 1
    assert max_diff(logits, want.logits) <= 1e-5
    for ours_h, hf_h in zip(hidden, want.hidden_states, strict=True):
        assert max_diff(ours_h, hf_h) <= 1e-5
    assert want.logits.abs().max() > 3  # where 30 tanh(x / 30) and x differ by > 1e-3


def test_bfloat16_matches_hf_bit_for_bit():
    hf, ours = hf_pair(CONFIGS["gqa2"])
    inv_freq = hf.model.rotary_emb.inv_freq.clone()
    hf, ours = hf.to(torch.bfloat16), ours.to(torch.bfloat16)
    # HF's .to(bf16) also rounds its RoPE frequency buffer; we keep RoPE in fp32, as HF's
    # from_pretrained(dtype=...) and gemma_pytorch do, so compare against that.
    hf.model.rotary_emb.inv_freq = inv_freq
    ids = torch.randint(3, 512, (2, 70), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = hf(ids, output_hidden_states=True)
        for impl in ("eager", "fast"):
            ours.config.attn_impl = impl
            logits, hidden = ours(ids, return_hidden_states=True)
            assert torch.equal(logits, want.logits)
            assert all(map(torch.equal, hidden, want.hidden_states))


@pytest.mark.parametrize("impl", ["eager", "fast"])
def test_left_padded_batch_matches_hf_on_real_tokens(impl):
    hf, ours = hf_pair(CONFIGS["gqa2"])
    ours.config.attn_impl = impl
    ids = torch.randint(3, 512, (3, 20), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[1, :6] = 0
    mask[2, :13] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # what HF's generate passes
    with torch.no_grad():
        want = hf(ids, attention_mask=mask, position_ids=positions).logits
        got = ours(ids, attention_mask=mask)
    assert max_diff(got[mask.bool()], want[mask.bool()]) <= 1e-5


@pytest.mark.parametrize(
    "change",
    [dict(attn_logit_softcap=None), dict(sliding_window=512), dict(final_logit_softcap=None)],
    ids=["no-attn-softcap", "no-window", "no-final-softcap"],
)
def test_dropping_a_gemma2_feature_breaks_the_match(change):
    hf, ours = hf_pair(CONFIGS["gqa2"])
    ids = torch.randint(3, 512, (2, 40), generator=torch.Generator().manual_seed(3))
    ablated = Gemma2ForCausalLM(Gemma2Config(**{**ours.config.to_dict(), **change})).eval()
    ablated.load_state_dict(ours.state_dict())
    with torch.no_grad():
        want = hf(ids).logits
        assert max_diff(ours(ids), want) <= 1e-5
        assert max_diff(ablated(ids), want) > 1e-3


def test_hf_sdpa_is_a_different_model_when_the_softcap_matters():
    """Negative control: sdpa has no soft-cap. transformers 5 refuses it; 4.x silently differs."""
    hf, _ = hf_pair(CONFIGS["gqa2"])
    ids = torch.randint(3, 512, (2, 40), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        eager = hf(ids).logits
        hf.config._attn_implementation = "sdpa"
        try:
            sdpa = hf(ids).logits
        except ValueError as e:
            assert "softcap" in str(e)
            return
    assert max_diff(sdpa, eager) > 1e-3


def test_greedy_generation_matches_hf_generate():
    from alignlab.gemma2 import generate

    hf, ours = hf_pair(CONFIGS["mha"], seed=1, std=0.03)
    prompt = torch.randint(3, 512, (1, 7), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want = hf.generate(prompt, max_new_tokens=16, do_sample=False, eos_token_id=None)
    got = generate(ours, prompt, 16, temperature=0, stop_tokens=())
    assert got == [want[0, 7:].tolist()]
    assert len(set(got[0])) > 3  # 23 tokens through a window of 5, and not one token repeated


# --- conversion --------------------------------------------------------------------------------


def test_state_dict_conversion_round_trips_bit_for_bit():
    hf, ours = hf_pair(CONFIGS["gqa4"])
    hf_state = hf.state_dict()
    back = to_hf_state_dict(ours)
    assert set(back) == set(hf_state) - {"lm_head.weight"}  # tied, left out as HF saves it
    assert all(torch.equal(back[k], hf_state[k]) for k in back)
    again = from_hf_state_dict(back, ours.config)
    assert all(torch.equal(again[k], v) for k, v in ours.state_dict().items())


def test_config_conversion_round_trips():
    import transformers  # the [hf] extra, installed by `make test`

    for overrides in CONFIGS.values():
        cfg = Gemma2Config.preset("tiny", **overrides)
        assert from_hf_config(to_hf_config(cfg)) == cfg
        assert (
            from_hf_config(transformers.Gemma2Config.from_dict(to_hf_config(cfg)).to_dict()) == cfg
        )
    assert from_hf_config(transformers.Gemma2Config().to_dict()) == Gemma2Config.preset("2b")


def test_a_transformers_4_config_json_is_read():
    # The released gemma-2-2b config.json (transformers 4.42), shrunk: rope_theta, no layer_types.
    d = {
        "architectures": ["Gemma2ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "attn_logit_softcapping": 50.0, "bos_token_id": 2, "cache_implementation": "hybrid",
        "eos_token_id": [1, 107], "final_logit_softcapping": 30.0, "head_dim": 16,
        "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": 64, "initializer_range": 0.02, "intermediate_size": 128,
        "max_position_embeddings": 8192, "model_type": "gemma2", "num_attention_heads": 4,
        "num_hidden_layers": 4, "num_key_value_heads": 2, "pad_token_id": 0,
        "query_pre_attn_scalar": 16, "rms_norm_eps": 1e-06, "rope_theta": 10000.0,
        "sliding_window": 8, "torch_dtype": "float32", "transformers_version": "4.42.4",
        "use_cache": True, "vocab_size": 512,
    }  # fmt: skip
    cfg = from_hf_config(d)
    assert cfg == Gemma2Config.preset("tiny", max_position_embeddings=8192)


def test_our_checkpoint_loads_in_hf_and_gives_the_same_logits(tmp_path):
    import transformers  # the [hf] extra, installed by `make test`

    _, ours = hf_pair(CONFIGS["gqa2"], seed=5)
    ids = torch.randint(3, 512, (2, 30), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        want = ours(ids)
    for shard, directory in [(None, tmp_path / "one"), (40_000, tmp_path / "sharded")]:
        save_pretrained(ours, directory, max_shard_bytes=shard)
        hf = transformers.AutoModelForCausalLM.from_pretrained(directory, attn_implementation="eager")  # fmt: skip
        with torch.no_grad():
            assert max_diff(hf.eval()(ids).logits, want) <= 1e-5
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    assert max_diff(from_pretrained(tmp_path / "sharded")(ids), want) == 0


def test_hf_checkpoint_loads_here_and_gives_the_same_logits(tmp_path):
    hf, _ = hf_pair(CONFIGS["mqa"], seed=7)
    hf.save_pretrained(tmp_path)
    ours = from_pretrained(tmp_path, attn_impl="eager")
    ids = torch.randint(3, 512, (2, 30), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        assert max_diff(ours(ids), hf(ids).logits) <= 1e-5
    assert ours.config.attn_impl == "eager" and not ours.training


def test_importing_alignlab_gemma2_does_not_import_transformers():
    code = "import sys, alignlab.gemma2, alignlab.gemma2.hf; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- bad checkpoints ---------------------------------------------------------------------------


@pytest.fixture
def checkpoint(tmp_path):
    """A valid tiny checkpoint written by us (no transformers needed)."""
    torch.manual_seed(0)
    save_pretrained(Gemma2ForCausalLM(Gemma2Config.preset("tiny")), tmp_path)
    return tmp_path


def test_a_failed_save_leaves_the_previous_complete_weights(checkpoint, monkeypatch):
    before = from_pretrained(checkpoint).state_dict()
    (checkpoint / "tokenizer.json").write_text("{}")  # other files in the folder stay
    torch.manual_seed(1)
    other = Gemma2ForCausalLM(Gemma2Config.preset("tiny"))
    real, calls = os.replace, []

    def replace(src, dst):  # the disk fills up while the second shard is written
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("disk full")
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="disk full"):
        save_pretrained(other, checkpoint, max_shard_bytes=40_000)
    monkeypatch.setattr(os, "replace", real)
    after = from_pretrained(checkpoint).state_dict()  # the old single file, complete
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert not [p.name for p in checkpoint.iterdir() if p.name.endswith(".tmp")]
    save_pretrained(other, checkpoint, max_shard_bytes=40_000)  # a save that completes
    assert not (checkpoint / "model.safetensors").exists()  # the stale single file is gone
    assert (checkpoint / "tokenizer.json").read_text() == "{}"
    loaded = from_pretrained(checkpoint).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in other.state_dict().items())


def test_missing_directory_or_config_is_a_clear_error(tmp_path):
    with pytest.raises(AlignlabError, match="checkpoint directory not found"):
        from_pretrained(tmp_path / "nope")
    with pytest.raises(AlignlabError, match="has no config.json"):
        from_pretrained(tmp_path)


def test_other_model_types_are_refused(checkpoint):
    (checkpoint / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(AlignlabError, match="model_type 'llama'.*Gemma 2.*'gemma2'"):
        from_pretrained(checkpoint)


def test_pickled_weights_are_never_unpickled(checkpoint):
    (checkpoint / "model.safetensors").unlink()
    (checkpoint / "pytorch_model.bin").write_bytes(b"not even opened")
    with pytest.raises(AlignlabError, match="pytorch_model.bin.*safetensors only.*never unpickles"):
        from_pretrained(checkpoint)
    (checkpoint / "pytorch_model.bin").unlink()
    with pytest.raises(AlignlabError, match="no \\*.safetensors weights"):
        from_pretrained(checkpoint)


def test_missing_unexpected_and_misshapen_weights_are_named(checkpoint):
    cfg = Gemma2Config.preset("tiny")
    state = {k: torch.zeros(s) for k, s in hf_weight_shapes(cfg).items()}
    partial = {k: v for k, v in state.items() if "layers.3." not in k}
    partial["model.layers.9.mlp.up_proj.weight"] = torch.zeros(1)
    save_file(partial, str(checkpoint / "model.safetensors"))
    with pytest.raises(AlignlabError, match=r"missing model\.layers\.3\.input_layernorm.*\(and 6 more\); unexpected model\.layers\.9\.mlp\.up_proj"):  # fmt: skip
        from_pretrained(checkpoint)
    state["model.norm.weight"] = torch.zeros(3)
    with pytest.raises(AlignlabError, match=r"model\.norm\.weight has shape \(3,\), the config implies \(64,\)"):  # fmt: skip
        from_hf_state_dict(state, cfg)


def test_unsupported_gemma2_variants_are_refused():
    base = to_hf_config(Gemma2Config.preset("tiny"))
    for change, message in [
        (dict(layer_types=["full_attention"] * 4), "layer_types must alternate"),
        (dict(rope_parameters={"rope_type": "linear", "factor": 2.0}), "unsupported RoPE"),
        (dict(hidden_activation="silu", hidden_act="silu"), "unsupported hidden_activation"),
        (dict(tie_word_embeddings=False), "tie_word_embeddings=false"),
    ]:
        with pytest.raises(AlignlabError, match=message):
            from_hf_config({**base, **change})
