"""Expert iteration (the repo's `RL/EI.py`): SFT on the desirable examples only."""

import numpy as np
import torch

from alignlab.feedback_gaming.iterate import Optim, kto_epoch
from alignlab.feedback_gaming.kto import collate, sequence_logps
from alignlab.gemma2.config import Gemma2Config
from alignlab.gemma2.model import Gemma2ForCausalLM


def tiny():
    torch.manual_seed(0)
    cfg = Gemma2Config(vocab_size=64, d_model=16, intermediate_size=32, num_layers=1,
                       num_heads=2, num_kv_heads=1, head_dim=8, query_pre_attn_scalar=8,
                       sliding_window=32, max_position_embeddings=64)  # fmt: skip
    return Gemma2ForCausalLM(cfg)


def logps(model, examples):
    b = collate([e[0] for e in examples], [e[1] for e in examples], [True] * len(examples), 0)
    with torch.no_grad():
        return sequence_logps(model, b.input_ids, b.attention_mask, b.completion_mask)


def test_expert_iteration_raises_the_desirable_and_ignores_the_undesirable():
    good = [([2, 5, 6], [7, 8, 1], True), ([2, 9], [7, 8, 1], True)]
    bad = [([2, 5, 6], [30, 31, 1], False)] * 8
    model = tiny()
    before_good, before_bad = logps(model, good), logps(model, bad[:1])
    opt = Optim(lr=1e-2, method="ei")
    stats = kto_epoch(model, good + bad, opt, 0, 0, np.random.default_rng(0))
    assert stats["n_desirable"] == 2 and stats["n_undesirable"] == 0  # only the desirable
    assert stats["kto_steps"] == 1
    assert (logps(model, good) > before_good).all()

    # the undesirable examples carry no gradient: training on them alone changes nothing
    other = tiny()
    state = {k: v.clone() for k, v in other.state_dict().items()}
    assert kto_epoch(other, bad, opt, 0, 0, np.random.default_rng(0)) == {"kto_steps": 0}
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in state.items())
    assert torch.isfinite(before_bad).all()
