"""Sampling: the KV cache against full recomputation, batching with padding, reproducible
sampling, top-k / top-p, stop tokens, and input errors."""

import pytest
import torch

from alignlab.core.errors import AlignlabError
from alignlab.gemma2 import Gemma2Config, Gemma2ForCausalLM, generate, sample
from alignlab.gemma2.generate import left_pad


@pytest.fixture(scope="module")
def model():
    """Tiny (window 8) with random weights big enough for varied, non-degenerate greedy text."""
    torch.manual_seed(0)
    m = Gemma2ForCausalLM(Gemma2Config.preset("tiny")).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            p.normal_(0, 0.5 if "norm" in name else 0.05)
    return m


PROMPTS = [[2, 5, 7, 9, 11, 13, 4, 5, 6, 7, 8], [2, 9], [2, 30, 31, 32, 33]]


@pytest.mark.parametrize("impl", ["fast", "eager"])
def test_cached_greedy_decoding_equals_full_recomputation(model, impl):
    model.config.attn_impl = impl
    try:
        cached = generate(model, PROMPTS, 24, temperature=0, stop_tokens=())
        full = generate(model, PROMPTS, 24, temperature=0, stop_tokens=(), use_cache=False)
    finally:
        model.config.attn_impl = "fast"
    assert cached == full
    assert [len(row) for row in cached] == [24, 24, 24]  # 11 + 24 tokens: past the window 4x
    assert all(len(set(row)) > 3 for row in cached)  # not one token repeated


def test_a_batched_prompt_decodes_as_if_alone(model):
    batched = generate(model, PROMPTS, 16, temperature=0, stop_tokens=())
    alone = [generate(model, [p], 16, temperature=0, stop_tokens=())[0] for p in PROMPTS]
    assert batched == alone
    tensor_prompt = torch.tensor([PROMPTS[0]])
    assert generate(model, tensor_prompt, 16, temperature=0, stop_tokens=()) == alone[:1]


def test_sampling_is_reproducible_with_a_seeded_generator(model):
    def draw(seed, **kw):
        g = torch.Generator().manual_seed(seed)
        return generate(model, PROMPTS, 12, generator=g, stop_tokens=(), **kw)

    assert draw(1) == draw(1)
    assert draw(1) != draw(2)
    assert draw(3, top_k=20, top_p=0.9) == draw(3, top_k=20, top_p=0.9)


def test_top_k_1_and_a_tiny_nucleus_are_greedy(model):
    greedy = generate(model, PROMPTS, 10, temperature=0, stop_tokens=())
    g = torch.Generator().manual_seed(0)
    assert generate(model, PROMPTS, 10, top_k=1, generator=g, stop_tokens=()) == greedy
    assert generate(model, PROMPTS, 10, top_p=1e-6, generator=g, stop_tokens=()) == greedy


def test_stop_tokens_end_their_row_only(model):
    greedy = generate(model, PROMPTS, 12, temperature=0, stop_tokens=())
    stop = greedy[0][3]
    out = generate(model, PROMPTS, 12, temperature=0, stop_tokens=[stop])
    assert out[0] == greedy[0][: greedy[0].index(stop) + 1]  # ends at the stop, included
    for got, want in zip(out[1:], greedy[1:]):
        assert got == (want[: want.index(stop) + 1] if stop in want else want)
    eos = model.config.eos_token_id
    assert generate(model, PROMPTS, 12, temperature=0) == [
        row[: row.index(eos) + 1] if eos in row else row for row in greedy
    ]  # eos is the default stop


def test_activations_kept_by_a_hook_during_generate_are_ordinary_tensors(model):
    """generate runs under inference mode only when no hook could keep an activation."""
    kept = []
    handle = model.hook_point("resid_post", 1).register_forward_hook(
        lambda _m, _i, out: kept.append(out)
    )
    try:
        hooked = generate(model, PROMPTS, 6, temperature=0, stop_tokens=())
    finally:
        handle.remove()
    assert hooked == generate(model, PROMPTS, 6, temperature=0, stop_tokens=())
    assert kept and not any(t.is_inference() for t in kept)
    w = torch.ones(kept[0].shape[-1], requires_grad=True)
    (kept[0] @ w).sum().backward()  # usable with autograd, and in place
    kept[0].mul_(2)


def test_a_huge_max_new_tokens_allocates_only_what_is_generated(model):
    every_token_stops = range(model.config.vocab_size)
    assert len(generate(model, [[2, 5, 7]], 10**9, temperature=0, stop_tokens=every_token_stops)[0]) == 1  # fmt: skip


def test_sample_filters_keep_the_right_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(400, 4)
    g = torch.Generator().manual_seed(0)
    assert set(sample(logits, top_k=2, generator=g).tolist()) == {0, 1}
    assert set(sample(logits, top_p=0.7, generator=g).tolist()) == {0, 1}  # 0.5 + 0.3 covers it
    assert set(sample(logits, top_p=0.85, generator=g).tolist()) == {0, 1, 2}
    assert set(sample(logits, generator=g).tolist()) == {0, 1, 2, 3}
    assert sample(logits[:1], temperature=0).tolist() == [0]
    # min-p: keep p >= min_p * p_max; 0.15 / 0.5 = 0.3, 0.05 / 0.5 = 0.1
    assert set(sample(logits, min_p=0.2, generator=g).tolist()) == {0, 1, 2}
    assert set(sample(logits, min_p=0.5, generator=g).tolist()) == {0, 1}
    assert set(sample(logits, min_p=0.09, generator=g).tolist()) == {0, 1, 2, 3}
    # after temperature: at T = 2 the ratio 0.05 / 0.5 becomes sqrt(0.1) ≈ 0.32
    assert set(sample(logits, temperature=2.0, min_p=0.3, generator=g).tolist()) == {0, 1, 2, 3}


def test_left_pad():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(prompts=[[2], []]), "every prompt at least one token"),
        (dict(max_new_tokens=-1), "max_new_tokens must be >= 0"),
        (dict(temperature=-0.5), "temperature must be >= 0"),
        (dict(top_k=0), "top_k must be >= 1"),
        (dict(top_p=1.5), "top_p must be in \\(0, 1\\]"),
        (dict(min_p=-0.1), "min_p must be in \\[0, 1\\]"),
    ],
)
def test_bad_arguments_are_clear_errors(model, kwargs, message):
    args = dict(prompts=[[2, 3]], max_new_tokens=2) | kwargs
    with pytest.raises(AlignlabError, match=message):
        generate(model, **args)


def test_nucleus_keeps_the_smallest_set_reaching_top_p():
    # probabilities 0.5, 0.25, 0.25 (exact in binary): top_p = 0.5 is reached by the first
    # token alone, 0.6 needs the second, and 1.0 keeps all three
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25]])).repeat(4000, 1)
    g = torch.Generator().manual_seed(0)
    assert set(sample(logits, top_p=0.5, generator=g).tolist()) == {0}
    drawn = sample(logits, top_p=0.6, generator=g)
    assert set(drawn.tolist()) == {0, 1} or set(drawn.tolist()) == {0, 2}
    assert set(sample(logits, top_p=1.0, generator=g).tolist()) == {0, 1, 2}
