"""KTO (alignlab.feedback_gaming.kto): hand cases, gradcheck, padding, and the TRL anchor.

The anchor (last test) runs TRL 1.16's KTOTrainer on the same batch and needs the `anchors`
extra, in a separate venv:

    /work/anchors-venv/bin/python -m pytest tests/feedback_gaming/test_kto.py

Without TRL it is skipped with that reason; every other test runs in about a second.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from alignlab.feedback_gaming.kto import (
    KTOBatch,
    collate,
    kto_loss,
    kto_step,
    sequence_logps,
    undesirable_weight,
)
from alignlab.gemma2.config import Gemma2Config
from alignlab.gemma2.model import Gemma2ForCausalLM

TOL = 1e-5


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Tiny models: one torch thread (tests/conftest.py)."""


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def t(*xs, dtype=torch.float32, grad=False) -> torch.Tensor:
    return torch.tensor(xs, dtype=dtype, requires_grad=grad)


# ---------------------------------------------------------------------------------------
# (a) hand cases


def test_loss_on_a_two_example_batch_is_the_formula():
    beta, w_d, w_u = 0.1, 1.0, 0.7
    policy, ref = t(-10.0, -20.0), t(-12.0, -15.0)  # r = 2, -5
    kl_policy, kl_ref = t(-8.0, -9.0), t(-9.0, -9.5)  # KL terms 1, 0.5: z0 = 0.75
    loss, stats = kto_loss(policy, ref, kl_policy, kl_ref, t(True, False, dtype=torch.bool),
                           beta, w_d, w_u)  # fmt: skip
    z0 = 0.75
    want = (w_d * (1 - sigmoid(beta * (2 - z0))) + w_u * (1 - sigmoid(beta * (z0 + 5)))) / 2
    assert stats["z0"] == pytest.approx(z0)
    assert float(loss) == pytest.approx(want, abs=1e-7)
    assert stats["loss"] == pytest.approx(want, abs=1e-7)
    assert stats["rewards_chosen"] == pytest.approx(0.2)
    assert stats["rewards_rejected"] == pytest.approx(-0.5)
    assert stats["rewards_margin"] == pytest.approx(0.7)
    assert (stats["n_desirable"], stats["n_undesirable"]) == (1, 1)


def test_loss_is_the_mean_over_examples_not_over_classes():
    """TRL: nanmean of cat(w_d·chosen, w_u·rejected): 3 desirable and 1 undesirable example
    weigh 3 : 1, not 1 : 1."""
    r = t(1.0, 2.0, 3.0, -4.0)
    zero = torch.zeros(4)
    loss, _ = kto_loss(r, zero, zero, zero, t(True, True, True, False, dtype=torch.bool))
    each = [1 - sigmoid(0.1 * x) for x in (1, 2, 3)] + [1 - sigmoid(0.1 * 4)]
    assert float(loss) == pytest.approx(sum(each) / 4, abs=1e-7)


def test_z0_clamps_at_zero_when_the_mean_kl_term_is_negative():
    kl_policy, kl_ref = t(-10.0, -12.0), t(-9.0, -10.0)  # terms -1, -2
    policy, ref = t(-3.0, -4.0), t(-3.0, -4.0)  # r = 0
    loss, stats = kto_loss(policy, ref, kl_policy, kl_ref, t(True, False, dtype=torch.bool))
    assert stats["z0"] == 0.0
    assert float(loss) == pytest.approx(0.5)  # 1 − σ(0) for both
    # one positive term that does not lift the mean above 0: still clamped
    _, stats = kto_loss(policy, ref, t(-8.0, -12.0), kl_ref, t(True, False, dtype=torch.bool))
    assert stats["z0"] == 0.0


def test_z0_is_detached():
    policy = t(-5.0, -6.0, -7.0, grad=True)
    kl_policy = t(-1.0, -2.0, -3.0, grad=True)  # KL terms 1, 1, 1: z0 = 1 > 0
    ref, kl_ref = t(-5.5, -6.0, -6.0), t(-2.0, -3.0, -4.0)
    loss, stats = kto_loss(policy, ref, kl_policy, kl_ref, t(True, False, True, dtype=torch.bool))
    assert stats["z0"] == pytest.approx(1.0)
    loss.backward()
    assert kl_policy.grad is None  # nothing reaches the KL sequences' logps
    assert policy.grad is not None and bool((policy.grad != 0).all())


def test_undesirable_weight():
    assert undesirable_weight(10, 8) == 10 / (8 * 1.05)
    assert undesirable_weight(120, 120) == pytest.approx(1 / 1.05)
    assert undesirable_weight(3, 6, target_ratio=1.0) == 0.5
    assert undesirable_weight(0, 5) == 1.0 and undesirable_weight(5, 0) == 1.0


def test_desirable_example_far_above_z0_has_no_loss_and_undesirable_far_below_neither():
    zero = torch.zeros(2)
    loss, _ = kto_loss(t(1000.0, 0.0), zero, zero, zero, t(True, True, dtype=torch.bool))
    assert float(loss) == pytest.approx(0.5 * 0.5, abs=1e-6)  # only the r = 0 example counts
    loss, _ = kto_loss(t(1000.0), torch.zeros(1), t(0.0), t(0.0), t(True, dtype=torch.bool))
    assert float(loss) < 1e-30
    loss, _ = kto_loss(t(-1000.0), torch.zeros(1), t(0.0), t(0.0), t(False, dtype=torch.bool))
    assert float(loss) < 1e-30


def test_single_class_batch_has_nan_stats_for_the_empty_class():
    loss, stats = kto_loss(t(1.0, 2.0), torch.zeros(2), torch.zeros(2), torch.zeros(2),
                           t(False, False, dtype=torch.bool))  # fmt: skip
    assert math.isfinite(float(loss))
    assert math.isnan(stats["rewards_chosen"]) and math.isnan(stats["logps_chosen"])
    assert stats["rewards_rejected"] == pytest.approx(0.15)


def test_collate_pairs_each_prompt_with_the_previous_completion_cyclically():
    prompts = [[5, 6, 7], [8, 9], [10]]
    completions = [[11, 12], [13, 14, 15], [16]]
    b = collate(prompts, completions, [True, False, True], pad_id=0)
    assert b.input_ids.tolist() == [[5, 6, 7, 11, 12], [8, 9, 13, 14, 15], [10, 16, 0, 0, 0]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert b.completion_mask.tolist() == [[0, 0, 0, 1, 1], [0, 0, 1, 1, 1], [0, 1, 0, 0, 0]]
    # (x1, y3), (x2, y1), (x3, y2): TRL's [completions[-1]] + completions[:-1]
    assert b.kl_input_ids.tolist() == [[5, 6, 7, 16], [8, 9, 11, 12], [10, 13, 14, 15]]
    assert b.kl_attention_mask.tolist() == [[1, 1, 1, 1]] * 3
    assert b.kl_completion_mask.tolist() == [[0, 0, 0, 1], [0, 0, 1, 1], [0, 1, 1, 1]]
    assert b.desirable.dtype == torch.bool and b.desirable.tolist() == [True, False, True]
    with pytest.raises(ValueError):
        collate(prompts, completions[:2], [True, False, True], 0)


# ---------------------------------------------------------------------------------------
# (b) gradcheck


def test_gradcheck_wrt_policy_logps():
    g = torch.Generator().manual_seed(0)
    policy = (torch.randn(6, generator=g, dtype=torch.float64) * 5).requires_grad_()
    ref = torch.randn(6, generator=g, dtype=torch.float64) * 5
    kl_policy = torch.randn(6, generator=g, dtype=torch.float64) + 1.0
    kl_ref = torch.randn(6, generator=g, dtype=torch.float64)
    desirable = torch.tensor([True, False, True, True, False, False])

    def f(p):
        return kto_loss(p, ref, kl_policy, kl_ref, desirable, 0.1, 1.0, 0.8)[0]

    assert kto_loss(policy, ref, kl_policy, kl_ref, desirable)[1]["z0"] > 0
    assert torch.autograd.gradcheck(f, (policy,), eps=1e-6, atol=1e-8)


# ---------------------------------------------------------------------------------------
# (c) sequence_logps and padding

TINY = dict(vocab_size=64, d_model=32, intermediate_size=64, num_layers=2, num_heads=2,
            num_kv_heads=1, head_dim=16, sliding_window=6, max_position_embeddings=128)  # fmt: skip


def tiny_model(seed: int, std: float = 0.15, **overrides) -> Gemma2ForCausalLM:
    """Every weight random (the norm offsets too), large enough that the soft-caps act."""
    torch.manual_seed(seed)
    model = Gemma2ForCausalLM(Gemma2Config(**(TINY | overrides)))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0, 0.5 if "norm" in name else std)
    return model


def random_examples(n: int, vocab: int, seed: int, prompt=(4, 12), completion=(2, 8)):
    """Token ids from 3 up (0, 1, 2 are pad, eos, bos); completions end with eos (1)."""
    g = torch.Generator().manual_seed(seed)

    def ids(lo, hi):
        k = int(torch.randint(lo, hi + 1, (), generator=g))
        return torch.randint(3, vocab, (k,), generator=g).tolist()

    prompts = [ids(*prompt) for _ in range(n)]
    completions = [ids(completion[0] - 1, completion[1] - 1) + [1] for _ in range(n)]
    return prompts, completions


def loop_logps(model, input_ids, attention_mask, completion_mask) -> torch.Tensor:
    """The per-example reference: each sequence unpadded, full logits, explicit sum."""
    out = []
    for ids, attn, comp in zip(input_ids, attention_mask, completion_mask):
        n = int(attn.sum())
        logp = model(ids[None, :n])[0].log_softmax(-1)
        out.append(sum(logp[i - 1, ids[i]] for i in range(1, n) if comp[i]))
    return torch.stack(out)


@pytest.mark.parametrize("impl", ["fast", "eager"])
def test_sequence_logps_equals_a_loop_over_unpadded_sequences(impl):
    model = tiny_model(0, attn_impl=impl).eval()
    prompts, completions = random_examples(5, 64, seed=1)
    b = collate(prompts, completions, [True] * 5, pad_id=0)
    assert int((b.attention_mask == 0).sum()) > 0  # right padding is present
    with torch.no_grad():
        got = sequence_logps(model, b.input_ids, b.attention_mask, b.completion_mask)
        want = loop_logps(model, b.input_ids, b.attention_mask, b.completion_mask)
        kl = sequence_logps(model, b.kl_input_ids, b.kl_attention_mask, b.kl_completion_mask)
        kl_want = loop_logps(model, b.kl_input_ids, b.kl_attention_mask, b.kl_completion_mask)
    assert got.shape == (5,)
    torch.testing.assert_close(got, want, rtol=0, atol=TOL)
    torch.testing.assert_close(kl, kl_want, rtol=0, atol=TOL)
    # extra right padding changes nothing
    pad = torch.nn.functional.pad
    with torch.no_grad():
        wider = sequence_logps(model, pad(b.input_ids, (0, 7)), pad(b.attention_mask, (0, 7)),
                               pad(b.completion_mask, (0, 7)))  # fmt: skip
    torch.testing.assert_close(wider, got, rtol=0, atol=TOL)


def test_sequence_logps_of_a_model_returning_logits_matches_the_fused_path():
    """A generic model (called, logits out) gives the same sums as our unembed-only-scored path."""
    model = tiny_model(2).eval()
    prompts, completions = random_examples(4, 64, seed=3)
    b = collate(prompts, completions, [False] * 4, pad_id=0)

    class Wrapped(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask=None):
            return self.inner(input_ids, attention_mask=attention_mask)

    with torch.no_grad():
        a = sequence_logps(model, b.input_ids, b.attention_mask, b.completion_mask)
        c = sequence_logps(Wrapped(model), b.input_ids, b.attention_mask, b.completion_mask)
    torch.testing.assert_close(a, c, rtol=0, atol=TOL)


class CaptureGrads:
    """An 'optimiser' that records the gradients kto_step leaves (and changes nothing)."""

    def __init__(self, model):
        self.model, self.grads = model, None

    def step(self):
        self.grads = {n: p.grad.clone() for n, p in self.model.named_parameters()}

    def zero_grad(self, set_to_none=True):
        self.model.zero_grad(set_to_none=set_to_none)


def policy_and_ref(seed=0, noise=0.05, **overrides):
    ref = tiny_model(seed, **overrides)
    policy = tiny_model(seed, **overrides)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn(p.shape, generator=g) * noise)
    return policy, ref


def test_kto_step_is_kto_loss_of_sequence_logps_then_clip_and_step():
    policy, ref = policy_and_ref()
    prompts, completions = random_examples(6, 64, seed=4)
    labels = [True, True, False, True, False, True]
    b = collate(prompts, completions, labels, pad_id=0)
    w_u = undesirable_weight(4, 2)
    # the direct computation
    with torch.no_grad():
        kl_p = sequence_logps(policy, b.kl_input_ids, b.kl_attention_mask, b.kl_completion_mask)
        kl_r = sequence_logps(ref, b.kl_input_ids, b.kl_attention_mask, b.kl_completion_mask)
        r = sequence_logps(ref, b.input_ids, b.attention_mask, b.completion_mask)
    p = sequence_logps(policy, b.input_ids, b.attention_mask, b.completion_mask)
    loss, stats = kto_loss(p, r, kl_p, kl_r, b.desirable, 0.1, 1.0, w_u)
    loss.backward()
    want = {n: q.grad.clone() for n, q in policy.named_parameters()}
    norm = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in want.values()])))
    policy.zero_grad(set_to_none=True)
    # kto_step, unclipped, capturing the gradients
    cap = CaptureGrads(policy)
    got = kto_step(policy, ref, b, cap, beta=0.1, desirable_weight=1.0, undesirable_weight=w_u,
                   max_grad_norm=None)  # fmt: skip
    assert got["loss"] == pytest.approx(stats["loss"], abs=1e-6)
    assert got["z0"] == pytest.approx(stats["z0"], abs=1e-6)
    assert got["grad_norm"] == pytest.approx(norm, rel=1e-5)
    for n, g in want.items():
        torch.testing.assert_close(cap.grads[n], g, rtol=0, atol=1e-6, msg=n)
    assert all(q.grad is None for q in policy.parameters())  # zero_grad ran
    # with clipping at a tenth of the norm, SGD moves every parameter by -lr · g / ‖g‖ · max
    before = {n: q.detach().clone() for n, q in policy.named_parameters()}
    sgd = torch.optim.SGD(policy.parameters(), lr=1.0)
    stats2 = kto_step(policy, ref, b, sgd, beta=0.1, desirable_weight=1.0,
                      undesirable_weight=w_u, max_grad_norm=norm / 10)  # fmt: skip
    assert stats2["grad_norm"] == pytest.approx(norm, rel=1e-5)  # the norm before clipping
    for n, q in policy.named_parameters():
        torch.testing.assert_close(before[n] - q.detach(), want[n] / 10, rtol=1e-3, atol=1e-6)


# ---------------------------------------------------------------------------------------
# (d) the TRL anchor


def word_tokenizer(vocab_size: int):
    """An HF fast tokenizer with token i spelled "t{i}" (0, 1, 2 = <pad>, <eos>, <bos>), so that
    text and ids correspond one to one; it adds no special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2} | {f"t{i}": i for i in range(3, vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>"
    )


def spell(ids: list[int]) -> str:
    return " ".join("<eos>" if i == 1 else f"t{i}" for i in ids)


def test_matches_trl_kto_trainer(tmp_path):
    """Loss, z0 (TRL's "kl") and every parameter's gradient of one batch, prepared by TRL's own
    dataset pipeline and collator, agree with ours (policy ≠ reference, z0 > 0, w_u ≠ 1)."""
    pytest.importorskip("trl", reason="the anchors extra: pip install 'alignlab[anchors]'")
    import datasets
    import transformers
    from trl import KTOConfig, KTOTrainer

    from alignlab.gemma2.hf import save_pretrained

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    policy, ref = policy_and_ref(seed=0, noise=0.05)
    prompts, completions = random_examples(6, 64, seed=5)
    labels = [True, False, True, True, False, True]
    w_u = undesirable_weight(sum(labels), len(labels) - sum(labels))
    hf = {}
    for name, model in (("policy", policy), ("ref", ref)):
        save_pretrained(model, tmp_path / name)
        hf[name] = transformers.AutoModelForCausalLM.from_pretrained(
            tmp_path / name, attn_implementation="eager"
        )
    data = datasets.Dataset.from_dict(
        {
            "prompt": [spell(p) for p in prompts],
            "completion": [" " + spell(c) for c in completions],  # ends with <eos>: none added
            "label": labels,
        }
    )
    # fp32 (TRL defaults to bf16) and no activation checkpointing (TRL defaults to it;
    # transformers 5 renamed gradient_checkpointing, which TRL's default then sets with a warning)
    ckpt = "activation_checkpointing"
    ckpt = ckpt if ckpt in KTOConfig.__dataclass_fields__ else "gradient_checkpointing"
    args = KTOConfig(
        output_dir=str(tmp_path / "trl"), per_device_train_batch_size=len(labels), beta=0.1,
        desirable_weight=1.0, undesirable_weight=w_u, bf16=False, **{ckpt: False},
        use_cpu=True, report_to="none", save_strategy="no", disable_tqdm=True, max_length=None,
        dataloader_num_workers=0,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = KTOTrainer(
            model=hf["policy"], ref_model=hf["ref"], args=args, train_dataset=data,
            processing_class=word_tokenizer(64),
        )  # fmt: skip
        batch = next(iter(trainer.get_train_dataloader()))
        trainer.model.train()
        loss_theirs = trainer.compute_loss(trainer.model, batch)
        loss_theirs.backward()
    theirs = float(loss_theirs.detach())
    z0_theirs = trainer._metrics["train"]["kl"][-1]

    # TRL's collated batch is ours, KL pairing included
    ours_batch = collate(prompts, completions, labels, pad_id=0)
    for field in KTOBatch.__dataclass_fields__:
        key = "label" if field == "desirable" else field.replace("kl_", "KL_")
        assert torch.equal(batch[key].cpu(), getattr(ours_batch, field)), field

    cap = CaptureGrads(policy)
    stats = kto_step(policy, ref, ours_batch, cap, beta=0.1, desirable_weight=1.0,
                     undesirable_weight=w_u, max_grad_norm=None)  # fmt: skip
    assert z0_theirs > 0.05  # the reference point is active, not clamped
    assert abs(stats["loss"] - theirs) <= TOL
    assert abs(stats["z0"] - z0_theirs) <= TOL
    theirs_params = dict(hf["policy"].named_parameters())  # the tied lm_head is the embedding
    assert set(theirs_params) == set(cap.grads)
    worst = max(float((cap.grads[n] - p.grad.cpu()).abs().max()) for n, p in theirs_params.items())
    max_grad = max(float(g.abs().max()) for g in cap.grads.values())
    print(f"TRL anchor: loss {theirs:.6f} (|Δ| {abs(stats['loss'] - theirs):.1e}), "
          f"z0 {z0_theirs:.5f} (|Δ| {abs(stats['z0'] - z0_theirs):.1e}), "
          f"max |Δgrad| {worst:.1e} (max |grad| {max_grad:.1e})")  # fmt: skip
    assert worst <= TOL
    assert stats["rewards_chosen"] == pytest.approx(
        trainer._metrics["train"]["rewards/chosen"][-1], abs=TOL
    )
    assert stats["rewards_rejected"] == pytest.approx(
        trainer._metrics["train"]["rewards/rejected"][-1], abs=TOL
    )
