"""The gemma2 experiments beyond the run contract (tests/test_contract.py): their claims on
hand-made results, the sliding window cut at inference, and their cross-field config rules."""

import re

import pytest
import torch

from alignlab.core.errors import AlignlabError
from alignlab.core.run import RunSpec, execute
from alignlab.gemma2 import Gemma2Config, Gemma2ForCausalLM
from alignlab.gemma2 import experiments as ex


def test_distill_claim_needs_kd_below_ntp_at_every_size():
    def result(pairs):
        students = [{"params": 1e6, "ntp": {"val_ppl": n}, "kd": {"val_ppl": k}} for n, k in pairs]
        return {"students": students, "teacher": {"val_ppl": 10.0}}

    assert ex.claim_distill(result([(30, 25), (20, 18)]))[1]
    assert not ex.claim_distill(result([(30, 25), (20, 21)]))[1]
    assert not ex.claim_distill(result([(30, 30)]))[1]  # a tie is not an improvement


def test_window_claim_checks_halved_and_quartered_windows_only():
    def result(changes):
        rows = [
            {"divisor": d, "window": 64 // d, "val_ppl": 10 * (1 + c), "rel_change": c}
            for d, c in changes
        ]
        return {"rows": rows}

    # Table 10's bars: ln(1.635 / 1.625) halved, ln(1.645 / 1.625) quartered
    assert ex.TABLE10_BOUND[2] == pytest.approx(0.0061350, abs=1e-6)
    assert ex.TABLE10_BOUND[4] == pytest.approx(0.0122326, abs=1e-6)
    assert ex.claim_window(result([(1, 0), (2, 0.006), (4, 0.012), (16, 0.5)]))[1]
    assert not ex.claim_window(result([(1, 0), (2, 0.007), (4, 0.0)]))[1]
    assert not ex.claim_window(result([(1, 0), (2, 0.0), (4, 0.0125)]))[1]
    assert not ex.claim_window(result([(1, 0), (2, -0.007), (4, 0.0)]))[1]  # either direction
    assert not ex.claim_window(result([(1, 0), (16, 0.0)]))[1]


@pytest.mark.parametrize("attn_impl", ["eager", "fast"])
def test_set_sliding_window_equals_a_model_built_with_that_window(attn_impl):
    cfg = Gemma2Config.preset("tiny", sliding_window=16, attn_impl=attn_impl)
    torch.manual_seed(0)
    model = Gemma2ForCausalLM(cfg).eval()
    narrow = Gemma2ForCausalLM(Gemma2Config.preset("tiny", sliding_window=4, attn_impl=attn_impl))
    narrow.load_state_dict(model.state_dict())
    ids = torch.randint(0, cfg.vocab_size, (2, 40))
    with torch.no_grad():
        wide = model(ids)
        model.set_sliding_window(4)
        assert torch.equal(model(ids), narrow.eval()(ids))
        assert (model(ids) - wide).abs().max() > 1e-4  # the window binds at this length
        model.set_sliding_window(16)
        assert torch.equal(model(ids), wide)


@pytest.mark.parametrize(
    "experiment, override, message",
    [
        (
            "gemma2.distill",
            "student_layers=[1]",
            "student_layers must have one entry per student width (2), got [1]",
        ),
        (
            "gemma2.distill",
            "student_widths=[15, 32]",
            "student_widths must be even where below teacher.head_dim (a student's head_dim is "
            "the smaller of the two, and rotary embeddings need it even), got [15, 32]",
        ),
        ("gemma2.distill", "teacher.head_dim=15", "teacher.head_dim must be even (rotary "
         "embeddings), got 15"),
        ("gemma2.window", "divisors=[2, 4]", "divisors must include 1 (the trained window), "
         "got [2, 4]"),
        ("gemma2.window", "divisors=[1, 2, 2]", "divisors must be non-empty, no repeats, >= 1, "
         "got [1, 2, 2]"),
    ],
)  # fmt: skip
def test_cross_field_rules_are_one_error_naming_the_key(tmp_path, experiment, override, message):
    spec = RunSpec(experiment, "smoke", out=str(tmp_path / "run"), overrides=(override,))
    with pytest.raises(AlignlabError, match=f"^{re.escape('Invalid config: ' + message)}$"):
        execute(spec)
    assert not (tmp_path / "run").exists()
