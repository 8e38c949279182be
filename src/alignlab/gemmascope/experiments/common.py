"""What the Gemma Scope experiments share: the paper, the quick SAE settings, SAE names."""

from __future__ import annotations

from alignlab.core.config import ConfigError

from ..train import SAETrainConfig

PAPER = (
    "Lieberum et al. 2024, Gemma Scope: Open Sparse Autoencoders Everywhere All At Once on Gemma 2"
)


def quick_sae() -> SAETrainConfig:
    """Gemma Scope's settings (§3.2) with the two changes a ~10³-step run needs: lr 3e-3
    instead of 7e-5 (θ moves at most ~lr per Adam step, and a run this short must move it by
    ~0.1), and warmups of 5 % (lr) and 25 % (λ) of the run instead of the paper's 0.05 % and
    0.5 %, which would round to a step or two."""
    return SAETrainConfig(lr=3e-3, lr_warmup_frac=0.05, l0_warmup_frac=0.25, dead_window=200_000)


def lambda_name(lam: float) -> str:
    """The part of an SAE's name (and unit key) that gives its λ, at 6 significant digits."""
    return f"lambda_{lam:g}"


def check_lambda_names(l0_coefficients: tuple[float, ...]) -> None:
    """The λ values name the SAEs, so they must differ at 6 significant digits."""
    names = [lambda_name(v) for v in l0_coefficients]
    if len(set(names)) != len(names):
        raise ConfigError(
            "l0_coefficients",
            "must be distinct at 6 significant digits (they name the SAEs), "
            f"got {list(l0_coefficients)}",
        )
