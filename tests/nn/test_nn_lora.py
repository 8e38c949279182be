"""LoRA on our Gemma 2 (alignlab.nn.lora), and peft's adapter format both ways."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from alignlab.core.errors import AlignlabError
from alignlab.gemma2.config import Gemma2Config
from alignlab.gemma2.hf import from_pretrained, save_pretrained
from alignlab.gemma2.model import Gemma2ForCausalLM
from alignlab.nn.lora import (
    TARGETS,
    LoRAConfig,
    LoRALinear,
    apply_lora,
    load_adapter,
    lora_modules,
    lora_parameters,
    lora_state_dict,
    merge_lora,
    save_adapter,
)

PEFT_REASON = "the anchors extra: pip install 'alignlab[anchors]'"


def tiny_config(**kw) -> Gemma2Config:
    c = dict(
        vocab_size=256,
        d_model=32,
        intermediate_size=64,
        num_layers=2,
        num_heads=2,
        num_kv_heads=1,
        head_dim=16,
        query_pre_attn_scalar=16,
        sliding_window=16,
        max_position_embeddings=64,
        attn_impl="eager",
    )
    return Gemma2Config(**(c | kw))


def tiny_model(seed: int = 0) -> Gemma2ForCausalLM:
    torch.manual_seed(seed)
    model = Gemma2ForCausalLM(tiny_config())
    with torch.no_grad():  # nonzero norm offsets, so every weight matters
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(std=0.1)
    return model.eval()


def ids(seed: int = 1, shape=(2, 12)) -> torch.Tensor:
    return torch.randint(3, 256, shape, generator=torch.Generator().manual_seed(seed))


def train(model: Gemma2ForCausalLM, steps: int = 3, lr: float = 0.1) -> None:
    """A few SGD steps of next-token prediction on the LoRA parameters, dropout on."""
    model.train()
    opt = torch.optim.SGD(lora_parameters(model), lr=lr)
    x = ids(seed=7, shape=(4, 12))
    for _ in range(steps):
        logits = model(x)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def test_init_equals_base_exactly():
    base = tiny_model()
    x = ids()
    with torch.no_grad():
        ref = base(x)
    model = copy.deepcopy(base)
    names = apply_lora(model, LoRAConfig(), seed=0)
    assert len(names) == 2 * 7
    assert names[:7] == [
        "model.layers.0.self_attn.q_proj",
        "model.layers.0.self_attn.k_proj",
        "model.layers.0.self_attn.v_proj",
        "model.layers.0.self_attn.o_proj",
        "model.layers.0.mlp.gate_proj",
        "model.layers.0.mlp.up_proj",
        "model.layers.0.mlp.down_proj",
    ]
    assert set(lora_modules(model)) == set(names)
    assert not any(m.training for m in model.modules())  # new LoRA layers keep eval mode
    with torch.no_grad():
        assert torch.equal(model(x), ref)
    model.train()  # dropout on: still exact, since B = 0
    with torch.no_grad():
        assert torch.equal(model(x), ref)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert len(trainable) == len(lora_parameters(model)) == 2 * len(names)
    # seeded init is reproducible; A is Kaiming-uniform with bound 1/sqrt(in_features)
    again = copy.deepcopy(base)
    apply_lora(again, LoRAConfig(), seed=0)
    for a, b in zip(lora_parameters(model), lora_parameters(again), strict=True):
        assert torch.equal(a, b)
    q = lora_modules(model)["model.layers.0.self_attn.q_proj"]
    assert q.lora_A.weight.shape == (16, 32) and q.lora_B.weight.shape == (32, 16)
    assert q.lora_A.weight.abs().max() <= 1 / math.sqrt(32)
    assert q.weight is q.base_layer.weight
    with pytest.raises(AlignlabError, match="already has LoRA"):
        apply_lora(model, LoRAConfig())


def test_training_touches_only_lora_and_merge_agrees():
    base = tiny_model()
    model = copy.deepcopy(base)
    apply_lora(model, LoRAConfig(), seed=0)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    before = [p.detach().clone() for p in lora_parameters(model)]
    train(model)
    for n, p in model.named_parameters():
        if "lora_" not in n:
            assert torch.equal(p, frozen[n]), n
            assert p.grad is None, n
    changed = [not torch.equal(a, b) for a, b in zip(before, lora_parameters(model), strict=True)]
    assert all(changed)
    for path, m in lora_modules(model).items():  # base weights are the original model's
        assert torch.equal(m.weight, base.get_submodule(path).weight)

    x = ids()
    with torch.no_grad():
        lora_logits = model(x)
        assert (lora_logits - base(x)).abs().max() > 1e-3  # the adapter does something
    merged = merge_lora(model)
    assert merged is model and not lora_modules(model)
    assert all(type(m) is nn.Linear for m in model.modules() if isinstance(m, nn.Linear))
    assert set(model.state_dict()) == set(base.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model(x), lora_logits, atol=1e-5, rtol=0)


def test_scaling_rule_by_hand():
    assert LoRAConfig().scaling == 32 / math.sqrt(16) == 8.0  # rsLoRA: alpha / sqrt(r)
    assert LoRAConfig(rslora=False).scaling == 32 / 16 == 2.0  # LoRA: alpha / r
    assert LoRAConfig(r=4, alpha=8, rslora=True).scaling == 4.0
    torch.manual_seed(0)
    lin = nn.Linear(6, 5, bias=True)
    for rslora, scaling in ((True, 16 / math.sqrt(4)), (False, 16 / 4)):
        cfg = LoRAConfig(r=4, alpha=16, dropout=0.0, rslora=rslora)
        m = LoRALinear(copy.deepcopy(lin), cfg.r, cfg.scaling)
        assert m.scaling == scaling
        with torch.no_grad():
            m.lora_B.weight.normal_()
        a, b = m.lora_A.weight, m.lora_B.weight
        x = torch.randn(3, 6)
        with torch.no_grad():
            expected = x @ lin.weight.T + lin.bias + scaling * (x @ a.T @ b.T)
            torch.testing.assert_close(m(x), expected, atol=1e-5, rtol=1e-5)
            merged = m.merge()
            torch.testing.assert_close(merged.weight, lin.weight + scaling * b @ a)
            torch.testing.assert_close(merged(x), expected, atol=1e-5, rtol=1e-5)
    for bad in (dict(r=0), dict(alpha=-1), dict(dropout=1.0), dict(target_modules=("qproj",))):
        with pytest.raises(AlignlabError):
            LoRAConfig(**bad)


def test_save_load_round_trip_and_format(tmp_path):
    base = tiny_model()
    model = copy.deepcopy(base)
    cfg = LoRAConfig()
    apply_lora(model, cfg, seed=0)
    train(model)
    save_adapter(model, tmp_path / "ad", cfg, base_model_name_or_path="google/gemma-2-2b-it")
    assert sorted(p.name for p in (tmp_path / "ad").iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    d = json.loads((tmp_path / "ad" / "adapter_config.json").read_text())
    assert d["peft_type"] == "LORA" and d["task_type"] == "CAUSAL_LM"
    assert (d["r"], d["lora_alpha"], d["lora_dropout"], d["use_rslora"]) == (16, 32, 0.1, True)
    assert d["target_modules"] == list(TARGETS) and d["bias"] == "none"
    assert d["base_model_name_or_path"] == "google/gemma-2-2b-it"

    from safetensors import safe_open

    with safe_open(str(tmp_path / "ad" / "adapter_model.safetensors"), "pt") as f:
        keys = set(f.keys())
        assert f.metadata() == {"format": "pt"}
    assert keys == set(lora_state_dict(model))
    assert len(keys) == 2 * 7 * 2
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys
    assert "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight" in keys

    fresh = copy.deepcopy(base)
    got = load_adapter(fresh, tmp_path / "ad")
    assert got == cfg
    x = ids()
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    for a, b in zip(lora_parameters(fresh), lora_parameters(model), strict=True):
        assert torch.equal(a, b)
    # loading again into the same LoRA layers replaces their weights
    with torch.no_grad():
        for p in lora_parameters(fresh):
            p.zero_()
    load_adapter(fresh, tmp_path / "ad")
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    with pytest.raises(AlignlabError, match="does not describe"):
        save_adapter(model, tmp_path / "x", LoRAConfig(r=8))


def test_peft_config_fields():
    d = LoRAConfig(r=8, alpha=16, rslora=False).to_peft()
    assert LoRAConfig.from_peft(d) == LoRAConfig(r=8, alpha=16, rslora=False)
    assert d["base_model_name_or_path"] is None  # as peft writes an unknown base model
    assert LoRAConfig.from_peft(d | {"target_modules": "all-linear"}).target_modules == TARGETS
    some = LoRAConfig.from_peft(d | {"target_modules": ["v_proj", "q_proj"]})
    assert some.target_modules == ("q_proj", "v_proj")
    for bad, match in (
        ({"target_modules": ".*q_proj"}, "regular expression"),
        ({"target_modules": ["lm_head"]}, "not a Linear of a Gemma 2 block"),
        ({"r": 0}, "r must be a positive integer"),
        ({"bias": "all"}, "bias"),
        ({"init_lora_weights": "pissa"}, "init_lora_weights"),
        ({"rank_pattern": {"q_proj": 4}}, "rank_pattern"),
        ({"use_some_future_variant": True}, "use_some_future_variant"),
        ({"arrow_config": {"top_k": 2}}, "arrow_config"),
        ({"task_type": "SEQ_CLS"}, "task_type"),
    ):
        with pytest.raises(AlignlabError, match=match):
            LoRAConfig.from_peft(d | bad, source="x/adapter_config.json")


def _corrupt(folder, what):
    cfg_file, w_file = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    from safetensors.torch import load_file, save_file

    if what == "no config":
        cfg_file.unlink()
    elif what == "bad json":
        cfg_file.write_text("{not json")
    elif what == "not lora":
        cfg_file.write_text(json.dumps(json.loads(cfg_file.read_text()) | {"peft_type": "IA3"}))
    elif what == "dora":
        cfg_file.write_text(json.dumps(json.loads(cfg_file.read_text()) | {"use_dora": True}))
    elif what == "no weights":
        w_file.unlink()
    elif what == "garbage weights":
        w_file.write_bytes(b"\x00garbage")
    elif what in ("missing key", "bad shape"):
        state = load_file(str(w_file))
        key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
        if what == "missing key":
            del state[key]
        else:
            state[key] = torch.zeros(3, 32)
        save_file(state, str(w_file))


@pytest.mark.parametrize(
    ("what", "match"),
    [
        ("no config", "adapter_config.json is missing"),
        ("bad json", "adapter_config.json is not valid JSON"),
        ("not lora", "adapter_config.json: peft_type"),
        ("dora", "use_dora"),
        ("no weights", "adapter_model.safetensors is missing"),
        ("garbage weights", "adapter_model.safetensors is not a readable safetensors"),
        ("missing key", "adapter_model.safetensors does not match.*missing"),
        ("bad shape", "adapter_model.safetensors: .* has shape"),
    ],
)
def test_load_errors_name_the_file(tmp_path, what, match):
    base = tiny_model()
    model = copy.deepcopy(base)
    cfg = LoRAConfig(r=4, alpha=8)
    apply_lora(model, cfg, seed=0)
    save_adapter(model, tmp_path, cfg)
    _corrupt(tmp_path, what)
    target = copy.deepcopy(base)
    with pytest.raises(AlignlabError, match=match):
        load_adapter(target, tmp_path)
    assert not lora_modules(target)  # a failed load leaves the model as it was


# --- peft anchors -------------------------------------------------------------------------------


def _hf_base(tmp_path):
    """Our tiny model saved in HF format and loaded by transformers (eager attention)."""
    transformers = pytest.importorskip("transformers", reason=PEFT_REASON)
    base = tiny_model()
    save_pretrained(base, tmp_path / "base")

    def load_hf():
        m = transformers.AutoModelForCausalLM.from_pretrained(
            tmp_path / "base", attn_implementation="eager"
        )
        return m.eval()

    return base, load_hf


def test_peft_loads_our_adapter(tmp_path):
    peft = pytest.importorskip("peft", reason=PEFT_REASON)
    base, load_hf = _hf_base(tmp_path)
    model = copy.deepcopy(base)
    cfg = LoRAConfig()  # the paper's: r 16, alpha 32, dropout 0.1, rsLoRA, 7 projections
    apply_lora(model, cfg, seed=0)
    train(model)
    save_adapter(model, tmp_path / "ours", cfg)

    hf = peft.PeftModel.from_pretrained(load_hf(), tmp_path / "ours").eval()
    x = ids()
    with torch.no_grad():
        theirs = hf(input_ids=x).logits
        mine = model(x)
        assert (mine - base(x)).abs().max() > 1e-3
    err = (theirs - mine).abs().max().item()
    print(f"max |peft - ours| logits: {err:.3g}")
    assert err <= 1e-4, err
    sd = peft.get_peft_model_state_dict(hf)
    assert set(sd) == set(lora_state_dict(model))


def test_our_loader_reads_peft_adapter(tmp_path):
    peft = pytest.importorskip("peft", reason=PEFT_REASON)
    base, load_hf = _hf_base(tmp_path)
    lora_cfg = peft.LoraConfig(
        r=8,
        lora_alpha=16,
        lora_dropout=0.1,
        use_rslora=False,  # the other scaling rule: alpha / r
        target_modules=[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(3)
    hf = peft.get_peft_model(load_hf(), lora_cfg)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    hf.save_pretrained(tmp_path / "theirs")
    hf.eval()

    model = from_pretrained(tmp_path / "base")
    got = load_adapter(model, tmp_path / "theirs")
    assert (got.r, got.alpha, got.rslora, got.scaling) == (8, 16, False, 2.0)
    x = ids()
    with torch.no_grad():
        theirs = hf(input_ids=x).logits
        mine = model(x)
        assert (mine - base(x)).abs().max() > 1e-3
    err = (theirs - mine).abs().max().item()
    print(f"max |peft - ours| logits: {err:.3g}")
    assert err <= 1e-4, err
