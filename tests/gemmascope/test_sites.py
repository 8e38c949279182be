"""Gemma Scope sites (notes "Sites per layer") on our Gemma 2 and on Hugging Face's: the same
activations, the same effect of a replacement, and each site recomputed by hand."""

import math

import pytest
import torch
from torch import nn

from alignlab.core.errors import AlignlabError
from alignlab.gemma2 import Gemma2Config, Gemma2ForCausalLM
from alignlab.gemma2.hf import to_hf_config, to_hf_state_dict
from alignlab.gemmascope.sites import (
    SITES,
    capture_sites,
    check_sites,
    is_hf_gemma2,
    model_num_layers,
    parse_site_name,
    replace_site,
    site_dim,
    site_name,
)

LAYERS = (1, 2)  # a global (odd) and a sliding-window (even) layer
T = 20  # longer than the tiny preset's window of 8, so the sliding mask acts
ATOL = 1e-5


def tiny_ours(seed=0, std=0.15, **overrides) -> Gemma2ForCausalLM:
    """A tiny random model, norms random too (zero norm offsets would hide a misplaced norm)."""
    cfg = Gemma2Config.preset("tiny", **overrides)
    torch.manual_seed(seed)
    model = Gemma2ForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0, 0.5 if "norm" in name else std)
    return model


@pytest.fixture(scope="module")
def pair():
    """Our tiny model and an HF eager Gemma2ForCausalLM converted from it."""
    import transformers  # the [hf] extra, installed by `make test`

    ours = tiny_ours()
    hf_cfg = transformers.Gemma2Config.from_dict(to_hf_config(ours.config))
    hf = transformers.Gemma2ForCausalLM._from_config(hf_cfg, attn_implementation="eager").eval()
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(ours), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    hf.tie_weights()
    return ours, hf


@pytest.fixture(scope="module")
def ids():
    return torch.randint(3, 512, (2, T), generator=torch.Generator().manual_seed(1))


def hf_logits(hf, ids):
    return hf(input_ids=ids, use_cache=False).logits


ALL_KEYS = [(s, i) for s in SITES for i in LAYERS]


def test_models_agree_without_hooks(pair, ids):
    ours, hf = pair
    assert not is_hf_gemma2(ours) and is_hf_gemma2(hf)
    with torch.no_grad():
        assert torch.allclose(ours(ids), hf_logits(hf, ids), atol=ATOL)


def test_site_dims_and_layers(pair):
    ours, hf = pair
    cfg = ours.config
    for model in pair:
        assert site_dim(model, "attn_z") == cfg.num_heads * cfg.head_dim
        assert site_dim(model, "mlp_out") == cfg.d_model
        assert site_dim(model, "resid_post") == cfg.d_model
        assert model_num_layers(model) == cfg.num_layers


def test_site_dim_differs_from_d_model_when_heads_are_wider():
    model = tiny_ours(num_heads=8, head_dim=16, num_kv_heads=2)  # 8 * 16 = 128 != d_model 64
    assert site_dim(model, "attn_z") == 128
    assert site_dim(model, "resid_post") == 64


def test_captured_activations_match_hf(pair, ids):
    ours, hf = pair
    with torch.no_grad():
        with capture_sites(ours, ALL_KEYS) as a:
            ours(ids)
        with capture_sites(hf, ALL_KEYS) as b:
            hf_logits(hf, ids)
    assert set(a) == set(b) == set(ALL_KEYS)
    for key in ALL_KEYS:
        width = site_dim(ours, key[0])
        assert a[key].shape == b[key].shape == (2, T, width), key
        assert torch.allclose(a[key], b[key], atol=ATOL), key


def test_capture_is_overwritten_by_each_forward(pair, ids):
    for model in pair:
        with torch.no_grad(), capture_sites(model, [("resid_post", 1)]) as acts:
            model(ids)
            first = acts[("resid_post", 1)]
            model(ids[:1, :5])
            assert acts[("resid_post", 1)].shape[:2] == (1, 5)
            assert first.shape[:2] == (2, T)


def test_hooks_are_removed_on_exit(pair, ids):
    for model in pair:
        with capture_sites(model, ALL_KEYS):
            pass
        with replace_site(model, "mlp_out", 1, torch.zeros_like):
            pass
        for module in model.modules():
            assert not module._forward_hooks and not module._forward_pre_hooks


def test_hooks_are_removed_after_an_exception(pair):
    for model in pair:
        with pytest.raises(RuntimeError), replace_site(model, "attn_z", 1, torch.zeros_like):
            raise RuntimeError("boom")
        assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())


@pytest.mark.parametrize("site", SITES)
@pytest.mark.parametrize("layer", LAYERS)
def test_replacement_changes_logits_identically(pair, ids, site, layer):
    ours, hf = pair
    g = torch.Generator().manual_seed(7)
    noise = torch.randn(site_dim(ours, site), generator=g)

    def fn(x):
        return 0.5 * x + noise

    with torch.no_grad():
        clean = ours(ids)
        with replace_site(ours, site, layer, fn):
            a = ours(ids)
        with replace_site(hf, site, layer, fn):
            b = hf_logits(hf, ids)
    assert (a - clean).abs().max() > 1e-2  # the replacement does something
    assert torch.allclose(a, b, atol=ATOL)


def test_capture_sees_the_replacement_entered_before_it(pair, ids):
    for model in pair:
        with torch.no_grad(), replace_site(model, "mlp_out", 2, torch.zeros_like):
            with capture_sites(model, [("mlp_out", 2)]) as acts:
                model(ids)
        assert not acts[("mlp_out", 2)].any()


@pytest.mark.parametrize("site", SITES)
def test_identity_replacement_is_bit_identical(pair, ids, site):
    ours, hf = pair
    with torch.no_grad():
        for model, run in ((ours, ours), (hf, lambda x: hf_logits(hf, x))):
            clean = run(ids)
            with replace_site(model, site, LAYERS[0], lambda x: x):
                same = run(ids)
            assert torch.equal(clean, same)


# --- Each site recomputed by hand from the block's weights ------------------------------------


def rms(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * (1 + weight)


def rope(x, theta):
    """Half-split RoPE at positions 0..T-1 on x (B, H, T, hd)."""
    hd, n = x.shape[-1], x.shape[-2]
    inv = theta ** (-torch.arange(0, hd, 2, dtype=torch.float) / hd)
    ang = torch.arange(n, dtype=torch.float)[:, None] * inv
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
    x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]
    return x * cos + torch.cat([-x2, x1], -1) * sin


def attention_z_by_hand(block, x, cfg, layer):
    """Concatenated head outputs, one head at a time, for the normed block input x (B, T, d)."""
    B, n, _ = x.shape
    att = block.self_attn
    H, KV, hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    q = rope(att.q_proj(x).view(B, n, H, hd).transpose(1, 2), cfg.rope_theta)
    k = rope(att.k_proj(x).view(B, n, KV, hd).transpose(1, 2), cfg.rope_theta)
    v = att.v_proj(x).view(B, n, KV, hd).transpose(1, 2)
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    visible = j <= i
    window = cfg.window(layer)
    if window is not None:
        visible &= j > i - window
    heads = []
    for h in range(H):
        kv = h // (H // KV)
        s = q[:, h] @ k[:, kv].transpose(1, 2) / math.sqrt(cfg.query_pre_attn_scalar)
        c = cfg.attn_logit_softcap
        s = c * torch.tanh(s / c)
        s = s.masked_fill(~visible, float("-inf"))
        heads.append(torch.softmax(s, -1) @ v[:, kv])
    return torch.cat(heads, -1)


@pytest.mark.parametrize("layer", LAYERS)
def test_sites_recomputed_by_hand(pair, ids, layer):
    ours, hf = pair
    cfg = ours.config
    block = ours.model.layers[layer]
    outputs = {}
    handles = [
        block.register_forward_pre_hook(lambda _m, args: outputs.__setitem__("h_in", args[0])),
        block.self_attn.register_forward_hook(lambda _m, _a, o: outputs.__setitem__("attn", o)),
        block.register_forward_hook(lambda _m, _a, o: outputs.__setitem__("block", o)),
    ]
    keys = [(s, layer) for s in SITES]
    try:
        with torch.no_grad(), capture_sites(ours, keys) as acts:
            ours(ids)
    finally:
        for handle in handles:
            handle.remove()
    eps = cfg.rms_norm_eps
    with torch.no_grad():
        h_in = outputs["h_in"]
        x = rms(h_in, block.input_layernorm.weight, eps)
        z = attention_z_by_hand(block, x, cfg, layer)
        assert torch.allclose(acts[("attn_z", layer)], z, atol=ATOL)
        # W_O applied to attn_z is the attention sub-layer's output
        assert torch.allclose(block.self_attn.o_proj(acts[("attn_z", layer)]), outputs["attn"])
        h_mid = h_in + rms(outputs["attn"], block.post_attention_layernorm.weight, eps)
        m = rms(block.mlp(rms(h_mid, block.pre_feedforward_layernorm.weight, eps)),
                block.post_feedforward_layernorm.weight, eps)  # fmt: skip
        assert torch.allclose(acts[("mlp_out", layer)], m, atol=ATOL)
        assert torch.equal(acts[("resid_post", layer)], outputs["block"])
        assert torch.allclose(acts[("resid_post", layer)], h_mid + m, atol=ATOL)

    # HF: o_proj(attn_z) is the attention output; resid_post is HF's hidden_states[layer + 1]
    hf_block = hf.model.layers[layer]
    got = {}
    handle = hf_block.self_attn.register_forward_hook(
        lambda _m, _a, o: got.__setitem__("attn", o[0] if isinstance(o, tuple) else o)
    )
    try:
        with torch.no_grad(), capture_sites(hf, keys) as hacts:
            out = hf(input_ids=ids, use_cache=False, output_hidden_states=True)
    finally:
        handle.remove()
    with torch.no_grad():
        assert torch.allclose(hf_block.self_attn.o_proj(hacts[("attn_z", layer)]), got["attn"])
    assert torch.equal(hacts[("resid_post", layer)], out.hidden_states[layer + 1])


# --- HF decoder layers that return tuples (transformers 4.x) ----------------------------------


class TupleLayer(nn.Module):
    """An HF-4-style decoder layer: returns (hidden_states, attn_weights)."""

    def __init__(self, d):
        super().__init__()
        self.self_attn = nn.Module()
        self.self_attn.o_proj = nn.Linear(d, d, bias=False)
        self.post_feedforward_layernorm = nn.Identity()

    def forward(self, h):
        z = h * 2
        m = self.post_feedforward_layernorm(self.self_attn.o_proj(z))
        return (h + m, None)


class TupleModel(nn.Module):
    def __init__(self, d=4, n=2):
        super().__init__()
        self.model = nn.Module()
        self.model.layers = nn.ModuleList(TupleLayer(d) for _ in range(n))

    def forward(self, h):
        for layer in self.model.layers:
            h = layer(h)[0]
        return h


def test_tuple_returning_layers_are_handled():
    torch.manual_seed(0)
    model = TupleModel()
    assert is_hf_gemma2(model) and model_num_layers(model) == 2
    x = torch.randn(1, 3, 4)
    with torch.no_grad():
        clean = model(x)
        with capture_sites(model, [("resid_post", 0), ("attn_z", 1)]) as acts:
            model(x)
        assert torch.equal(acts[("attn_z", 1)], acts[("resid_post", 0)] * 2)
        assert acts[("resid_post", 0)].shape == (1, 3, 4)
        with replace_site(model, "resid_post", 0, torch.zeros_like):
            replaced = model(x)
    assert not torch.equal(clean, replaced)
    assert torch.equal(replaced, model.model.layers[1](torch.zeros(1, 3, 4))[0])


# --- Errors and helpers ------------------------------------------------------------------------


def test_bad_sites_are_refused():
    model = tiny_ours()
    with pytest.raises(AlignlabError, match="valid sites: attn_z, mlp_out, resid_post"):
        check_sites(model, [("resid_pre", 0)])
    with pytest.raises(AlignlabError, match=r"out of range \[0, 4\)"):
        check_sites(model, [("attn_z", 4)])
    with pytest.raises(AlignlabError, match="twice"):
        check_sites(model, [("attn_z", 1), ("attn_z", 1)])
    with pytest.raises(AlignlabError, match="pair"):
        check_sites(model, ["attn_z"])
    with pytest.raises(AlignlabError, match="valid sites"):
        with replace_site(model, "mlp", 0, torch.zeros_like):
            pass
    with pytest.raises(AlignlabError, match="unsupported model type"):
        with capture_sites(nn.Linear(2, 2), [("attn_z", 0)]):
            pass


def test_site_names_round_trip():
    assert site_name(("attn_z", 3)) == "attn_z.3"
    for key in ALL_KEYS:
        assert parse_site_name(site_name(key)) == key
    with pytest.raises(AlignlabError, match="malformed site name"):
        parse_site_name("attn.3")
