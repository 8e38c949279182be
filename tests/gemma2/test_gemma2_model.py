"""The Gemma 2 model without transformers: config and presets, paper Table 2 parameter counts,
attention against a loop-by-loop oracle, fast vs eager, the KV cache, and the hook sites."""

import dataclasses

import pytest
import torch

from alignlab.core.errors import AlignlabError
from alignlab.gemma2 import (
    PAPER_VOCAB_SIZE,
    SITES,
    Gemma2Config,
    Gemma2ForCausalLM,
    count_parameters,
)
from alignlab.gemma2.model import (
    HookPoint,
    KVCache,
    RMSNorm,
    build_mask,
    eager_attention,
    fast_attention,
)


def random_model(seed=0, std=0.2, **overrides) -> Gemma2ForCausalLM:
    """A tiny model with every weight random, norms included (they initialise to zero)."""
    torch.manual_seed(seed)
    model = Gemma2ForCausalLM(Gemma2Config.preset("tiny", **overrides)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0, 0.5 if "norm" in name else std)
    return model


def tokens(batch, T, vocab=512, seed=0):
    return torch.randint(3, vocab, (batch, T), generator=torch.Generator().manual_seed(seed))


# --- config -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, table1",
    [
        ("2b", (2304, 26, 18432, 8, 4, 256, 256)),
        ("9b", (3584, 42, 28672, 16, 8, 256, 256)),
        ("27b", (4608, 46, 73728, 32, 16, 128, 144)),
    ],
)
def test_presets_are_paper_table1(name, table1):
    c = Gemma2Config.preset(name)
    got = (c.d_model, c.num_layers, 2 * c.intermediate_size, c.num_heads, c.num_kv_heads)
    assert got + (c.head_dim, c.query_pre_attn_scalar) == table1
    assert (c.sliding_window, c.max_position_embeddings, c.vocab_size) == (4096, 8192, 256000)
    assert (c.attn_logit_softcap, c.final_logit_softcap, c.num_kv_groups) == (50.0, 30.0, 2)


@pytest.mark.parametrize(
    "name, embedding, non_embedding",
    [
        ("2b", 590_118_912, 2_024_517_888),
        ("9b", 917_962_752, 8_324_201_984),
        ("27b", 1_180_237_824, 26_047_480_320),
    ],
)
def test_parameter_counts_are_paper_table2_exactly(name, embedding, non_embedding):
    counts = count_parameters(Gemma2Config.preset(name, vocab_size=PAPER_VOCAB_SIZE))
    assert counts == {"embedding": embedding, "non_embedding": non_embedding}


def test_cpu_presets_are_small():
    for name, (low, high) in {
        "tiny": (1e5, 1e6),
        "small": (1e6, 3e6),
        "medium": (5e6, 1e7),
    }.items():
        total = sum(count_parameters(Gemma2Config.preset(name)).values())
        assert low < total < high, name


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(AlignlabError, match=r"'2B'.*2b, 9b, 27b, tiny.*Did you mean: 2b"):
        Gemma2Config.preset("2B")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(num_heads=4, num_kv_heads=3), "num_heads \\(4\\) must be divisible by num_kv_heads"),
        (dict(head_dim=15), "head_dim must be even"),
        (dict(attn_impl="flash"), "attn_impl 'flash'; valid: eager, fast"),
        (dict(attn_logit_softcap=0.0), "attn_logit_softcap must be > 0 or None"),
        (dict(num_layers=0), "num_layers must be a positive integer"),
        (dict(eos_token_id=512), "eos_token_id=512 is outside the vocabulary"),
        (dict(query_pre_attn_scalar=-1), "query_pre_attn_scalar must be > 0"),
    ],
)
def test_invalid_configs_say_what_is_wrong(overrides, message):
    with pytest.raises(AlignlabError, match=message):
        Gemma2Config.preset("tiny", **overrides)


def test_config_dict_round_trip_and_unknown_keys():
    c = Gemma2Config.preset("small", attn_logit_softcap=None)
    assert Gemma2Config.from_dict(c.to_dict()) == c
    with pytest.raises(AlignlabError, match="unknown Gemma2Config field.*hidden_size"):
        Gemma2Config.from_dict({**c.to_dict(), "hidden_size": 128})


def test_even_layers_slide_and_odd_layers_are_global():
    model = Gemma2ForCausalLM(Gemma2Config.preset("tiny"))
    windows = [block.self_attn.window for block in model.model.layers]
    assert windows == [8, None, 8, None]


# --- building blocks ----------------------------------------------------------------------------


def test_rmsnorm_scales_by_one_plus_weight_in_fp32():
    norm = RMSNorm(4)
    x = torch.tensor([[1.0, -2.0, 3.0, -4.0]])
    unit = x / x.pow(2).mean().add(1e-6).sqrt()
    assert torch.allclose(norm(x), unit)  # zero weight = unit scale
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([0.0, 1.0, -1.0, 0.5]))
    assert torch.allclose(norm(x), unit * torch.tensor([1.0, 2.0, 0.0, 1.5]))
    low = norm(x.bfloat16())
    assert low.dtype == torch.bfloat16
    assert torch.equal(low, norm(x.bfloat16().float()).bfloat16())  # computed in fp32, cast back


def test_embedding_normaliser_is_cast_to_the_activation_dtype():
    # As in HF and gemma_pytorch, sqrt(d_model) is a tensor of the activation dtype: in bf16
    # sqrt(3584) = 59.866 becomes 59.75 (bf16 steps by 0.25 between 32 and 64).
    cfg = Gemma2Config(
        vocab_size=8, d_model=3584, intermediate_size=2, num_layers=1, num_heads=1,
        num_kv_heads=1, head_dim=2, query_pre_attn_scalar=2, sliding_window=4,
    )  # fmt: skip
    model = Gemma2ForCausalLM(cfg).to(torch.bfloat16)
    _, hidden = model(torch.tensor([[3, 4]]), return_hidden_states=True)
    rounded = torch.tensor(59.75, dtype=torch.bfloat16)
    assert torch.equal(hidden[0], model.model.embed_tokens.weight[[3, 4]][None] * rounded)
    assert not torch.equal(hidden[0], (model.model.embed_tokens.weight[[3, 4]][None].float() * 3584**0.5).bfloat16())  # fmt: skip


def naive_attention(q, k, v, scaling, cap, window):
    """One query, one head at a time, straight from paper §2: q (H, T, hd), k and v (KV, T, hd)."""
    H, T, hd = q.shape
    groups = H // k.shape[0]
    out = torch.zeros(T, H * hd, dtype=torch.float64)
    for h in range(H):
        kv = h // groups  # adjacent query heads share a KV head
        for i in range(T):
            keys = [j for j in range(T) if j <= i and (window is None or j > i - window)]
            s = torch.stack([q[h, i] @ k[kv, j] * scaling for j in keys])
            p = torch.softmax(cap * torch.tanh(s / cap), 0)
            out[i, h * hd : (h + 1) * hd] = sum(p[n] * v[kv, j] for n, j in enumerate(keys))
    return out


@pytest.mark.parametrize("window", [3, None])
@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_attention_kernels_match_a_loop_oracle(window, kv_heads):
    g = torch.Generator().manual_seed(kv_heads)
    T, H, hd, cap = 11, 4, 8, 5.0  # a small cap so that the soft-cap matters
    q = 3 * torch.randn(1, H, T, hd, generator=g, dtype=torch.float64)
    k = 3 * torch.randn(1, kv_heads, T, hd, generator=g, dtype=torch.float64)
    v = torch.randn(1, kv_heads, T, hd, generator=g, dtype=torch.float64)
    want = naive_attention(q[0], k[0], v[0], 0.3, cap, window)
    mask = build_mask(None, 0, 0, T, window, torch.float64)
    got_eager = eager_attention(q, k, v, mask, 0.3, cap)[0]
    torch.testing.assert_close(got_eager, want)
    for block in (1, 3, 4, 64):  # block edges inside and outside the window
        got_fast = fast_attention(q, k, v, mask, 0.3, cap, window, block=block)[0]
        torch.testing.assert_close(got_fast, want)
    uncapped = naive_attention(q[0], k[0], v[0], 0.3, 1e9, window)
    assert (uncapped - want).abs().max() > 1e-2  # the soft-cap matters in this test


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_fast_attention_gives_the_same_bits_with_and_without_autograd(kv_heads):
    """Without autograd the queries are laid out (kv head, query, group), with it (kv head,
    group, query): the same rows, so the same bits; strided keys (a permuted projection, a
    cache buffer's view) give the same bits as contiguous ones."""
    g = torch.Generator().manual_seed(kv_heads)
    B, H, T, S, hd = 2, 4, 70, 75, 16  # 5 cached keys before the 70 queries
    q = torch.randn(B, T, H, hd, generator=g).transpose(1, 2)  # a projection's layout
    buf = torch.randn(B, kv_heads, 90, hd, generator=g)
    k, v = buf[:, :, :S], torch.randn(B, S, kv_heads, hd, generator=g).transpose(1, 2)
    valid = torch.rand(B, S, generator=g) > 0.2
    for window in (None, 9):
        mask = build_mask(valid, 5, 5, T, window, torch.float32)
        args = (mask, 0.125, 50.0, window, 5)
        plain = fast_attention(q, k, v, *args)
        contiguous = fast_attention(q.contiguous(), k.contiguous(), v.contiguous(), *args)
        with torch.enable_grad():
            tracked = fast_attention(q.clone().requires_grad_(), k, v, *args)
        assert torch.equal(plain, contiguous) and torch.equal(plain, tracked.detach())


def test_mask_is_sliding_window_on_columns_and_padding():
    mask = build_mask(None, 0, 0, 6, 3, torch.float32)[0]
    visible = [[int(mask[i, j] == 0) for j in range(6)] for i in range(6)]
    assert visible == [[int(i - 3 < j <= i) for j in range(6)] for i in range(6)]
    valid = torch.tensor([[False, True, True, True]])
    padded = build_mask(valid, 0, 0, 4, None, torch.float32)[0]
    assert (padded[:, 0] < -1e30).all() and (padded[3, 1:] == 0).all()


# --- the whole model ----------------------------------------------------------------------------


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_fast_attention_path_equals_eager(kv_heads):
    model = random_model(num_kv_heads=kv_heads)
    ids = tokens(2, 80)  # > one 64-query block, 10 sliding windows
    mask = torch.ones_like(ids)
    mask[1, :7] = 0
    with torch.no_grad():
        fast, fast_hidden = model(ids, attention_mask=mask, return_hidden_states=True)
        model.config.attn_impl = "eager"
        eager, eager_hidden = model(ids, attention_mask=mask, return_hidden_states=True)
    real = mask.bool()
    torch.testing.assert_close(fast[real], eager[real], atol=1e-5, rtol=0)
    for a, b in zip(fast_hidden, eager_hidden, strict=True):
        torch.testing.assert_close(a[real], b[real], atol=1e-5, rtol=1e-6)


def test_fast_path_gradients_equal_eager():
    model = random_model(std=0.1).train()
    ids = tokens(2, 70)
    grads = {}
    for impl in ("fast", "eager"):
        model.config.attn_impl = impl
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(ids)[:, :-1].flatten(0, 1), ids[:, 1:].flatten()).backward()  # fmt: skip
        grads[impl] = {n: p.grad.clone() for n, p in model.named_parameters()}
    for name, g in grads["fast"].items():
        torch.testing.assert_close(g, grads["eager"][name], atol=1e-5, rtol=1e-4, msg=name)


def test_a_sliding_layer_sees_exactly_the_last_window_tokens():
    model = random_model(num_layers=1)  # layer 0 slides over W = 8 tokens
    ids = tokens(1, 20)
    far, near = ids.clone(), ids.clone()
    far[0, 19 - 8] += 1  # just outside the window of the last query
    near[0, 19 - 7] += 1  # its oldest visible key
    with torch.no_grad():
        base, out_far, out_near = model(ids)[0, -1], model(far)[0, -1], model(near)[0, -1]
    assert torch.equal(base, out_far)
    assert (base - out_near).abs().max() > 1e-3


@pytest.mark.parametrize("impl", ["fast", "eager"])
def test_kv_cache_continuation_equals_one_full_pass(impl):
    model = random_model(attn_impl=impl)
    ids = tokens(2, 30)
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # a left-padded row
    with torch.no_grad():
        full = model(ids, attention_mask=mask)
        cache = model.new_cache(2)
        parts, start = [], 0
        for size in (5, 1, 3, 9, 1, 11):  # prefill, then chunks across the 8-token window
            part = slice(start, start + size)
            parts.append(model(ids[:, part], attention_mask=mask[:, part], cache=cache))
            start += size
    torch.testing.assert_close(torch.cat(parts, 1)[mask.bool()], full[mask.bool()], atol=1e-5, rtol=0)  # fmt: skip
    assert cache.keys[0].shape[2] == 8 and cache.keys[1].shape[2] == 30  # sliding layers keep W
    assert cache.lengths.tolist() == [26, 30]


@pytest.mark.parametrize("window", [None, 3])
@pytest.mark.parametrize("capacity", [0, 6])
@pytest.mark.parametrize("grad", [False, True])
def test_kv_cache_returns_what_concatenation_would(window, capacity, grad):
    """The preallocated buffers (moved to the front when full, doubled when too small) give
    each call exactly the held columns followed by its own, as concatenating them would."""
    cfg = Gemma2Config.preset("tiny", sliding_window=window or 4, num_layers=2)
    layer = 0 if window else 1  # layer 0 slides, layer 1 is global
    cache = KVCache(cfg, batch_size=2, capacity=capacity)
    g = torch.Generator().manual_seed(0)
    held_k = held_v = None
    with torch.set_grad_enabled(grad):
        for T in (2, 1, 1, 5, 1, 1, 1, 3, 1, 1):
            k = torch.randn(2, 1, T, 8, generator=g).requires_grad_(grad)
            v = torch.randn(2, 1, T, 8, generator=g).requires_grad_(grad)
            ref_k = k if held_k is None else torch.cat([held_k, k], 2)
            ref_v = v if held_v is None else torch.cat([held_v, v], 2)
            out_k, out_v = cache.update(layer, k, v)
            assert torch.equal(out_k, ref_k) and torch.equal(out_v, ref_v)
            held_k = ref_k if window is None else ref_k[:, :, -window:]
            held_v = ref_v if window is None else ref_v[:, :, -window:]
            assert torch.equal(cache.keys[layer], held_k)
            assert torch.equal(cache.values[layer], held_v)
            if grad:  # the differentiable path: gradients reach every call's keys
                out_k.sum().backward(retain_graph=True)
                assert k.grad is not None and torch.equal(k.grad, torch.ones_like(k))


def test_decoding_with_the_cache_under_autograd_matches_one_full_pass():
    model = random_model().train()
    ids = tokens(2, 14)
    full = model(ids)
    cache = model.new_cache(2)
    parts = [model(ids[:, :5], cache=cache)] + [model(ids[:, t : t + 1], cache=cache) for t in range(5, 14)]  # fmt: skip
    chunked = torch.cat(parts, 1)
    torch.testing.assert_close(chunked, full, atol=1e-5, rtol=1e-5)
    (g_full,) = torch.autograd.grad(full.square().sum(), model.model.embed_tokens.weight)
    (g_chunk,) = torch.autograd.grad(chunked.square().sum(), model.model.embed_tokens.weight)
    assert (g_chunk - g_full).norm() / g_full.norm() < 2e-5  # float rounding (3e-6 measured)


def test_the_cache_keeps_autograd_working_when_only_queries_need_gradients():
    """With autograd on, the cache concatenates (as a LoRA on q_proj alone needs: attention
    saves keys that no gradient flows to), also after no-grad steps and with frozen layers."""
    model = random_model().train()
    for name, p in model.named_parameters():
        p.requires_grad_("q_proj" in name)
    ids = tokens(2, 20)
    cache = model.new_cache(2)
    parts = [model(ids[:, :4], cache=cache)]
    with torch.no_grad():  # a few steps without autograd in between
        parts += [model(ids[:, t : t + 1], cache=cache) for t in range(4, 9)]
    parts += [model(ids[:, t : t + 1], cache=cache) for t in range(9, 20)]
    chunked = torch.cat(parts, 1)
    chunked.square().sum().backward()  # raised when a saved key buffer was written again
    grads = [p.grad for n, p in model.named_parameters() if "q_proj" in n]
    assert all(g is not None and g.isfinite().all() and g.abs().sum() > 0 for g in grads)
    with torch.no_grad():
        torch.testing.assert_close(chunked, model(ids), atol=1e-4, rtol=1e-4)


def test_cache_buffers_follow_dtype_and_inference_mode_like_concatenation():
    model = random_model()
    ids = tokens(1, 12)
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache(1)
        with torch.inference_mode():  # a cache begun in inference mode ...
            first = model(ids[:, :5], cache=cache)
        rest = model(ids[:, 5:], cache=cache)  # ... continues outside it
        torch.testing.assert_close(torch.cat([first, rest], 1), full, atol=1e-5, rtol=1e-5)
        cache = model.new_cache(1)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 keys, then fp32 ones
            model(ids[:, :5], cache=cache)
        model(ids[:, 5:6], cache=cache)
    assert all(k.dtype == torch.float32 for k in cache.keys)  # promoted, as cat would
    held = cache.keys[1]
    held.zero_()  # a copy: the cache's own buffers are untouched
    assert cache.keys[1].abs().sum() > 0
    with pytest.raises(TypeError):
        cache.keys[0] = held


def test_backward_hooks_on_sites_still_fire():
    model = random_model().train()
    seen = []
    handle = model.hook_point("attn_z", 1).register_full_backward_hook(
        lambda _m, _gi, go: seen.append(go[0].shape)
    )
    model(tokens(1, 6)).sum().backward()
    handle.remove()
    assert seen == [torch.Size([1, 6, 64])]


def test_a_global_forward_hook_still_sees_every_site():
    """Sites skip nn.Module's call machinery only when no hook, local or global, could see them."""
    model = random_model()
    seen = []
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda m, _i, _o: seen.append(m) if isinstance(m, HookPoint) else None
    )
    try:
        with torch.no_grad():
            model(tokens(1, 5))
    finally:
        handle.remove()
    assert len(seen) == 3 * model.config.num_layers


# --- Gemma Scope hook sites ---------------------------------------------------------------------


def test_captured_sites_have_the_documented_shapes_and_values():
    model = random_model()
    cfg = model.config
    ids = tokens(2, 12)
    sites = [(site, layer) for site in SITES for layer in range(cfg.num_layers)]
    o_proj_inputs = {}
    handle = model.model.layers[2].self_attn.o_proj.register_forward_pre_hook(
        lambda _m, args: o_proj_inputs.__setitem__(2, args[0])
    )
    with torch.no_grad(), model.capture(sites) as acts:
        _, hidden = model(ids, return_hidden_states=True)
    handle.remove()
    assert acts[("attn_z", 0)].shape == (2, 12, cfg.num_heads * cfg.head_dim)
    assert acts[("mlp_out", 0)].shape == acts[("resid_post", 0)].shape == (2, 12, cfg.d_model)
    assert torch.equal(acts[("attn_z", 2)], o_proj_inputs[2])
    last = cfg.num_layers - 1
    for layer in range(last):  # HF's hidden_states: block outputs, the last one normed
        assert torch.equal(acts[("resid_post", layer)], hidden[layer + 1])
    assert torch.equal(model.model.norm(acts[("resid_post", last)]), hidden[last + 1])
    block = model.model.layers[1]
    ffn = block.pre_feedforward_layernorm(acts[("resid_post", 0)] + block.post_attention_layernorm(block.self_attn.o_proj(acts[("attn_z", 1)])))  # fmt: skip
    torch.testing.assert_close(
        acts[("mlp_out", 1)], block.post_feedforward_layernorm(block.mlp(ffn))
    )
    assert not any(h._forward_hooks for h in model.modules())  # capture cleaned up


@pytest.mark.parametrize("site", SITES)
def test_replacing_a_site_splices_into_the_forward_pass(site):
    model = random_model()
    ids = tokens(1, 12)
    with torch.no_grad():
        base = model(ids)
        with model.replace(site, 1, lambda x: x.clone()):
            same = model(ids)
        with model.replace(site, 1, torch.zeros_like), model.capture([(site, 1)]) as acts:
            zeroed = model(ids)
    assert torch.equal(base, same)
    assert (base - zeroed).abs().max() > 1e-3
    assert torch.equal(acts[(site, 1)], torch.zeros_like(acts[(site, 1)]))  # capture sees it
    with torch.no_grad():
        assert torch.equal(model(ids), base)  # the replacement ended with its block


def test_unknown_site_or_layer_is_an_error():
    model = random_model()
    with pytest.raises(AlignlabError, match="unknown hook site 'resid'; valid sites: attn_z"):
        model.hook_point("resid", 0)
    with pytest.raises(AlignlabError, match="layer 4 out of range"):
        model.hook_point("mlp_out", 4)


def test_model_is_built_from_the_config_alone():
    cfg = Gemma2Config.preset("tiny")
    model = Gemma2ForCausalLM(dataclasses.replace(cfg))
    names = set(model.state_dict())
    assert "model.layers.3.post_feedforward_layernorm.weight" in names
    assert "lm_head.weight" not in names  # tied: the unembedding is the embedding matrix
    assert all((p == 0).all() for n, p in model.named_parameters() if "norm" in n)
    assert (model.model.embed_tokens.weight[cfg.pad_token_id] == 0).all()
