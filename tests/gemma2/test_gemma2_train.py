"""The Gemma 2 losses (vs hand-computed cases) and training loop: schedule, clipping,
learning, distillation, checkpoint/resume equality inside a context, clear errors.
(The command line and DDP: test_gemma2_cli.py.)"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from alignlab.core.checkpoint import Checkpointer
from alignlab.core.context import RunContext, read_metrics
from alignlab.core.errors import AlignlabError
from alignlab.gemma2.config import Gemma2Config
from alignlab.gemma2.data import synthetic_tokens
from alignlab.gemma2.losses import (
    IGNORE_INDEX,
    entropy,
    kd_loss,
    kl_divergence,
    ntp_loss,
    subsample_teacher,
    teacher_probs,
)
from alignlab.gemma2.model import Gemma2ForCausalLM
from alignlab.gemma2.train import TrainConfig, evaluate, learning_rate, param_groups, train

VOCAB = 64
TOKENS = synthetic_tokens(VOCAB, 4000, period=16, seed=1)


def tiny_config(**kw) -> Gemma2Config:
    base = dict(
        vocab_size=VOCAB, d_model=32, intermediate_size=64, num_layers=2, num_heads=2,
        num_kv_heads=1, head_dim=16, query_pre_attn_scalar=16, sliding_window=8,
        max_position_embeddings=64,
    )  # fmt: skip
    return Gemma2Config.preset("tiny", **{**base, **kw})


def tiny_model(seed: int = 0, **kw) -> Gemma2ForCausalLM:
    torch.manual_seed(seed)
    return Gemma2ForCausalLM(tiny_config(**kw))


def cfg(**kw) -> TrainConfig:
    base = dict(
        steps=6, batch_size=4, seq_len=16, lr=1e-2, warmup_steps=2, log_every=1,
        eval_every=3, eval_batches=1, checkpoint_every=2,
    )  # fmt: skip
    return TrainConfig(**{**base, **kw})


# --- losses -----------------------------------------------------------------------------


def test_ntp_loss_hand_computed():
    logits = torch.tensor([[[0.0, 0.0], [0.0, math.log(3.0)]]])  # P = (1/2, 1/2), (1/4, 3/4)
    targets = torch.tensor([[0, 1]])
    expected = (math.log(2) - math.log(3 / 4)) / 2
    assert ntp_loss(logits, targets).item() == pytest.approx(expected, abs=1e-6)
    assert ntp_loss(logits, targets, "sum").item() == pytest.approx(2 * expected, abs=1e-6)
    ignored = torch.tensor([[0, IGNORE_INDEX]])
    assert ntp_loss(logits, ignored).item() == pytest.approx(math.log(2), abs=1e-6)


def test_kd_loss_hand_computed_and_one_hot_teacher_is_cross_entropy():
    student = torch.tensor([[[0.0, math.log(3.0)]]])  # P_S = (1/4, 3/4)
    p_t = torch.tensor([[[0.5, 0.5]]])
    expected = -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))
    assert kd_loss(student, p_t).item() == pytest.approx(expected, abs=1e-6)
    logits = torch.randn(2, 3, 5)
    targets = torch.randint(0, 5, (2, 3))
    one_hot = torch.nn.functional.one_hot(targets, 5).float()
    torch.testing.assert_close(kd_loss(logits, one_hot), ntp_loss(logits, targets))


def test_kd_loss_is_teacher_entropy_plus_forward_kl():
    g = torch.Generator().manual_seed(0)
    student = torch.randn(3, 4, 7, generator=g, dtype=torch.float64)
    p_t = teacher_probs(torch.randn(3, 4, 7, generator=g, dtype=torch.float64))
    kl = kl_divergence(p_t, student)
    assert (kl >= 0).all()
    torch.testing.assert_close(kd_loss(student, p_t), (entropy(p_t) + kl).mean())
    # the student equal to the teacher: KD loss = H(P_T), KL = 0
    torch.testing.assert_close(
        kl_divergence(p_t, p_t.log()), torch.zeros(3, 4, dtype=torch.float64)
    )
    # zero teacher probabilities contribute nothing, even against -inf student log-probs
    sparse = torch.tensor([[[1.0, 0.0]]])
    assert kd_loss(torch.tensor([[[0.0, -torch.inf]]]), sparse).item() == 0.0


def test_kd_loss_gradient_is_student_minus_teacher_and_passes_gradcheck():
    g = torch.Generator().manual_seed(1)
    student = torch.randn(2, 3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    p_t = teacher_probs(torch.randn(2, 3, 5, generator=g, dtype=torch.float64))
    mask = torch.tensor([[True, False, True], [True, True, True]])
    assert torch.autograd.gradcheck(lambda s: kd_loss(s, p_t, mask=mask), (student,))
    assert torch.autograd.gradcheck(lambda s: kd_loss(s, p_t, temperature=2.0), (student,))
    kd_loss(student, p_t).backward()  # d/dz of mean_pos Σ −p log softmax(z) = (P_S − P_T) / N
    torch.testing.assert_close(student.grad, (torch.softmax(student, -1) - p_t).detach() / 6)


def test_kd_temperature_scales_both_distributions_and_the_loss_by_tau_squared():
    student, teacher = torch.randn(2, 3, 6), torch.randn(2, 3, 6)
    tau = 2.0
    hot = kd_loss(student, teacher_probs(teacher, tau), temperature=tau)
    torch.testing.assert_close(hot, tau**2 * kd_loss(student / tau, teacher_probs(teacher / tau)))


def test_subsample_teacher_keeps_k_ids_in_teacher_ratios_and_samples_by_probability():
    p = teacher_probs(torch.randn(3, 4, 10))
    assert subsample_teacher(p, 10) is p  # k >= vocab: the full distribution
    q = subsample_teacher(p, 3, torch.Generator().manual_seed(0))
    assert ((q > 0).sum(-1) == 3).all()
    torch.testing.assert_close(q.sum(-1), torch.ones(3, 4))
    kept = q > 0  # the kept ids keep their teacher ratios: q = p / Σ_kept p on them
    torch.testing.assert_close(q, p * kept / (p * kept).sum(-1, keepdim=True))
    # k = 1: the kept id is a draw from P_T; ids with zero probability are never drawn
    probs = torch.tensor([0.5, 0.3, 0.2, 0.0]).expand(4000, 4).contiguous()
    picks = subsample_teacher(probs, 1, torch.Generator().manual_seed(2)).argmax(-1)
    freq = torch.bincount(picks, minlength=4).double() / 4000
    torch.testing.assert_close(freq, torch.tensor([0.5, 0.3, 0.2, 0.0]).double(), atol=0.03, rtol=0)


# --- optimiser, schedule, clipping --------------------------------------------------------


def test_learning_rate_warmup_then_cosine_to_min_lr():
    c = TrainConfig(steps=110, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert learning_rate(0, c) == pytest.approx(0.1)
    assert learning_rate(4, c) == pytest.approx(0.5)
    assert learning_rate(9, c) == pytest.approx(1.0)  # the last warmup step is at the peak
    assert learning_rate(10, c) == pytest.approx(1.0)
    assert learning_rate(60, c) == pytest.approx(0.55)  # half way: (1 + 0.1) / 2
    assert learning_rate(110, c) == pytest.approx(0.1)
    lrs = [learning_rate(s, c) for s in range(10, 110)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:])) and lrs[-1] > 0.1
    assert learning_rate(0, TrainConfig(steps=5, lr=2.0, warmup_steps=0)) == pytest.approx(2.0)


def test_param_groups_decay_matrices_not_norms_or_the_tied_embedding():
    model = tiny_model()
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim == 2 and "embed" not in names[id(p)] for p in decay["params"])
    assert any("embed_tokens" in names[id(p)] for p in no_decay["params"])
    assert all("norm" in names[id(p)] or "embed" in names[id(p)] for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_gradients_are_clipped_to_the_global_norm_before_each_step():
    seen = []

    def hook(opt, args, kwargs):
        grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
        seen.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())

    logged = []
    handle = register_optimizer_step_pre_hook(hook)
    try:
        train(tiny_model(), cfg(steps=3, grad_clip=0.05), TOKENS, TOKENS,
              on_step=lambda step, m: logged.append(m["grad_norm"]))  # fmt: skip
    finally:
        handle.remove()
    assert len(seen) == 3 and all(n == pytest.approx(0.05, rel=1e-4) for n in seen)
    assert all(n > 0.05 for n in logged)  # the logged norm is the norm before clipping


# --- training -----------------------------------------------------------------------------


def test_tiny_gemma2_learns_a_repeating_sequence():
    result = train(tiny_model(), cfg(steps=60, warmup_steps=5, eval_every=20), TOKENS, TOKENS)
    first, last = result.curve[0][1], result.final_val_ppl
    assert first > 0.5 * VOCAB and last < 2.0, result.curve  # from ~uniform to near-certain
    assert result.train_curve[-1][1] < 0.25 * result.train_curve[0][1]
    assert [t for t, _ in result.curve] == [0, 1280, 2560, 3840]
    assert result.final_val_loss == pytest.approx(math.log(last))
    assert result.tokens == 60 * 4 * 16 and result.tokens_per_s > 0


@pytest.fixture(scope="module")
def teacher():
    model = tiny_model(seed=7)
    with torch.random.fork_rng():
        train(model, cfg(steps=25, warmup_steps=3, eval_every=25), TOKENS, TOKENS)
    return model


@pytest.mark.parametrize("top_k", [None, 8])
def test_distillation_moves_the_student_towards_the_teacher(teacher, top_k):
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    windows = torch.tensor(np.stack([TOKENS[i : i + 17] for i in range(0, 64, 16)]))
    val = [(windows[:, :-1], windows[:, 1:])]
    student = tiny_model(seed=3)
    start = evaluate(student, val, teacher)
    c = cfg(objective="kd", kd_top_k=top_k, steps=20, warmup_steps=3, eval_every=10)
    result = train(student, c, TOKENS, val, teacher=teacher)
    # the validation KL(P_T ‖ P_S) falls from the untrained student's to near zero
    assert result.final_val_kl < 0.3 * start["kl"] / start["n"], (result, start)  # ~1.6 -> ~0.2
    for k, v in teacher.state_dict().items():  # the teacher is frozen
        assert torch.equal(v, before[k])
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())


def run_context(tmp_path, name, quiet=True, resume=False, c=None) -> RunContext:
    return RunContext.standalone(
        tmp_path / name, "gemma2.test", c or cfg(), quiet=quiet, resume=resume
    )


class Interrupt(Exception):
    pass


def _interrupt_at(n):
    def on_step(step, metrics):
        if step == n:
            raise Interrupt

    return on_step


def _without_timing(rows):
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in rows]


@pytest.mark.parametrize("objective", ["ntp", "kd-top-k"])
def test_interrupted_and_resumed_run_is_bit_identical(tmp_path, teacher, objective):
    kw = dict(objective="kd", kd_top_k=5) if objective == "kd-top-k" else {}
    c = cfg(steps=7, checkpoint_every=2, **kw)
    t = teacher if kw else None
    ref_model = tiny_model()
    ref = train(ref_model, c, TOKENS, TOKENS, teacher=t, ctx=run_context(tmp_path, "ref", c=c))
    ctx = run_context(tmp_path, "cut", c=c)
    with pytest.raises(Interrupt):
        train(tiny_model(), c, TOKENS, TOKENS, teacher=t, ctx=ctx, on_step=_interrupt_at(5))
    assert Checkpointer(ctx.dir).last_step() == 4
    assert max(r["step"] for r in read_metrics(ctx.dir)) == 5  # a line after the checkpoint
    torch.manual_seed(123)  # any state of the global RNGs: the checkpoint restores them
    model = tiny_model(seed=99)  # other initial weights: the checkpoint replaces them
    ctx = run_context(tmp_path, "cut", resume=True, c=c)  # drops the lines after step 4
    resumed = train(model, c, TOKENS, TOKENS, teacher=t, ctx=ctx)
    assert resumed.to_dict() == ref.to_dict()
    for k, v in ref_model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    assert "resuming at step 4" in (ctx.dir / "log.txt").read_text()
    assert _without_timing(read_metrics(ctx.dir)) == _without_timing(read_metrics(tmp_path / "ref"))


def test_finished_run_resumes_to_its_result_without_training(tmp_path):
    c = cfg(steps=3)
    model = tiny_model()
    first = train(model, c, TOKENS, TOKENS, ctx=run_context(tmp_path, "run", c=c))
    again_model = tiny_model(seed=5)
    again = train(again_model, c, TOKENS, TOKENS, ctx=run_context(tmp_path, "run", resume=True, c=c),
                  on_step=_interrupt_at(1))  # fmt: skip
    assert again.to_dict() == first.to_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(again_model.state_dict()[k], v)


def test_checkpoints_hold_the_training_state_in_the_core_scheme(tmp_path):
    ctx = run_context(tmp_path, "run", c=cfg(steps=2))
    train(tiny_model(), cfg(steps=2), TOKENS, TOKENS, ctx=ctx)
    ck = Checkpointer(ctx.dir).load()
    assert ck.step == 2 and ck.state["finished"] and ck.state["tokens"] == 2 * 4 * 16
    names = set(ck.tensors)
    assert "module.model.model.embed_tokens.weight" in names
    assert "module.model.lm_head.weight" not in names  # tied: stored once
    assert any(n.startswith("optim.adamw.") and n.endswith(".exp_avg") for n in names)
    assert "sampler" in ck.training["generators"]


def test_metrics_and_progress_with_a_run_context(tmp_path):
    ctx = run_context(tmp_path, "run", quiet=False)
    train(tiny_model(), cfg(steps=4, log_every=2, eval_every=2), TOKENS, TOKENS, ctx=ctx)
    rows = read_metrics(ctx.dir)
    train_rows = [r for r in rows if "train_loss" in r]
    val_rows = [r for r in rows if "val_ppl" in r]
    assert [r["step"] for r in train_rows] == [2, 4] and [r["step"] for r in val_rows] == [0, 2, 4]
    assert {"lr", "grad_norm", "tokens_per_s", "tokens"} <= set(train_rows[0])
    assert val_rows[-1]["val_loss"] == pytest.approx(math.log(val_rows[-1]["val_ppl"]))


def test_a_stage_numbers_its_metric_lines_from_its_offset_and_keeps_its_checkpoint(tmp_path):
    run = run_context(tmp_path, "run")
    first, second = run.stage("first", 3), run.stage("second", 2)
    train(tiny_model(), cfg(steps=3, eval_every=3), TOKENS, TOKENS, ctx=first)
    train(tiny_model(), cfg(steps=2, eval_every=2), TOKENS, TOKENS, ctx=second)
    rows = read_metrics(run.dir)
    assert [r["step"] for r in rows if r["stage"] == "first" and "val_ppl" in r] == [0, 3]
    assert [r["step"] for r in rows if r["stage"] == "second" and "val_ppl" in r] == [4, 6]
    steps = {
        p.parent.name: Checkpointer(p.parent).last_step()
        for p in run.dir.glob("stages/*/checkpoint")
    }
    assert steps == {"first": 3, "second": 2}


def test_validation_windows_are_fixed_and_batches_may_be_given(tmp_path):
    c = cfg(steps=2, eval_every=1)
    a = train(tiny_model(), c, TOKENS, TOKENS)
    b = train(tiny_model(), dataclasses.replace(c, seed=5), TOKENS, TOKENS)
    assert a.curve[0] == b.curve[0]  # the same initial weights on the same validation set
    windows = np.stack([TOKENS[i : i + 17] for i in range(0, 64, 16)])
    given = train(tiny_model(), c, TOKENS, [(windows[:, :-1], windows[:, 1:])])
    assert given.curve[0] == a.curve[0]  # eval_batches * batch_size windows from the start

    def batches(rng, batch_size, seq_len):  # a batch function instead of a token stream
        w = np.stack([TOKENS[s : s + seq_len + 1] for s in rng.integers(0, 100, batch_size)])
        return torch.tensor(w[:, :-1]), torch.tensor(w[:, 1:])

    assert train(tiny_model(), c, batches, TOKENS).steps == 2


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(objective="kd"), "objective 'kd' needs a teacher model (pass teacher=...)."),
        (
            dict(objective="distill"),
            "Invalid config: objective must be one of ntp, kd, got 'distill'",
        ),
        (dict(seq_len=65), "seq_len=65 exceeds the model's max_position_embeddings=64."),
        (dict(steps=0), "Invalid config: steps must be >= 1, got 0"),
        (dict(kd_top_k=0), "Invalid config: kd_top_k must be >= 1, got 0"),
        (dict(min_lr_ratio=2.0), "Invalid config: min_lr_ratio must be in [0, 1], got 2.0"),
        (dict(betas=(0.9, 1.0)), "Invalid config: betas must be in [0, 1), got [0.9, 1.0]"),
        (dict(betas=(0.9,)), "Invalid config: betas must be two numbers, got [0.9]"),
    ],
)
def test_bad_config_is_a_clear_error(change, message):
    with pytest.raises(AlignlabError, match=f"^{re.escape(message)}$"):
        train(tiny_model(), cfg(**change), TOKENS, TOKENS)


def test_bad_data_teacher_or_checkpoint_are_clear_errors(tmp_path):
    with pytest.raises(
        AlignlabError,
        match=re.escape("train_data has token ids outside the model's vocabulary [0, 64)."),
    ):
        train(tiny_model(), cfg(), TOKENS + VOCAB, TOKENS)
    with pytest.raises(AlignlabError, match="^train_data must be a 1-D integer token stream"):
        train(tiny_model(), cfg(), TOKENS.astype(float), TOKENS)
    with pytest.raises(
        AlignlabError, match=re.escape("train_data has 10 tokens; it needs at least 18.")
    ):
        train(tiny_model(), cfg(), TOKENS[:10], TOKENS)
    other = tiny_model(vocab_size=VOCAB * 2)
    with pytest.raises(
        AlignlabError, match="^teacher vocab_size=128 differs from the student's 64;"
    ):
        train(tiny_model(), cfg(objective="kd"), TOKENS, TOKENS, teacher=other)
    train(tiny_model(), cfg(steps=1), TOKENS, TOKENS, ctx=run_context(tmp_path, "run"))
    resumed = run_context(tmp_path, "run", resume=True)
    with pytest.raises(
        AlignlabError,
        match=r"^The checkpoint does not fit this model: missing \['model.layers.2.",
    ):
        train(tiny_model(num_layers=3), cfg(steps=1), TOKENS, TOKENS, ctx=resumed)


def test_kd_loss_of_a_diverged_student_is_nan_not_zero():
    probs = torch.tensor([[[0.5, 0.5, 0.0]]])
    assert torch.isnan(kd_loss(torch.full((1, 1, 3), float("nan")), probs))
    # a zero teacher probability still contributes nothing where log P_S = -inf
    logits = torch.tensor([[[0.0, 0.0, float("-inf")]]])
    assert torch.allclose(kd_loss(logits, probs), torch.tensor(math.log(2)))
