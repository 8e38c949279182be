"""The Gemma Scope experiments and their claims (Lieberum et al. 2024, arXiv 2408.05147).

- gemmascope.frontier   on the Gemma 2 model trained by the `gemma2` system (its cached
                        teacher), JumpReLU SAEs at the three sites of the middle layer over a
                        sweep of λ and two widths, all trained in lockstep from one activation
                        stream; delta LM loss and FVU against L0 (paper Figs. 2-4).
- gemmascope.synthetic  activations with a known ground-truth dictionary (sparse features in
                        superposition): a λ sweep, and the dictionary recovered at the true L0.

`gemmascope.frontier` is marked wip: its "wider is better" claim does not reproduce at the
quick budget (the wider SAEs are undertrained and lose most latents), so `alignlab reproduce`
runs it only with `--only gemmascope`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from alignlab.core.claims import Claim
from alignlab.core.experiment import Experiment, register
from alignlab.gemma2.experiments import TeacherConfig, _smoke_teacher, get_teacher, load_data
from alignlab.gemma2.model import SITES
from alignlab.gemma2.train import TrainConfig

from .activations import ActivationSource, ShuffledBuffer
from .formats import save_npz
from .metrics import evaluate_reconstruction, mean_max_cosine, spliced_lm_metrics
from .sae import JumpReLUSAE
from .synthetic import SyntheticActivations, SyntheticConfig
from .train import SAETrainConfig, SAETrainer, estimate_input_scale, new_sae

PAPER = (
    "Lieberum et al. 2024, Gemma Scope: Open Sparse Autoencoders Everywhere All At Once on Gemma 2"
)
SITE_LABELS = {"attn_z": "attention", "mlp_out": "MLP", "resid_post": "residual"}


def _quick_sae() -> SAETrainConfig:
    """Gemma Scope's settings (§3.2) with the two changes a ~10³-step run needs: lr 3e-3
    instead of 7e-5 (θ moves at most ~lr per Adam step, and a run this short must move it by
    ~0.1), and warmups of 5 % (lr) and 25 % (λ) of the run instead of the paper's 0.05 % and
    0.5 %, which would round to a step or two."""
    return SAETrainConfig(lr=3e-3, lr_warmup_frac=0.05, l0_warmup_frac=0.25, dead_window=200_000)


def _check_positive(cfg, *names: str) -> None:
    for name in names:
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


def _check_list(name: str, values, positive: bool = True) -> None:
    values = list(values)
    if not values or len(set(values)) != len(values):
        raise ValueError(f"{name} must be a non-empty list without repeats, got {values}")
    if positive and any(not (v > 0 and math.isfinite(v)) for v in values):
        raise ValueError(f"{name} must all be finite and > 0, got {values}")


# ---------------------------------------------------------------------------------------
# gemmascope.frontier


@dataclass
class FrontierConfig:
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    layer: int = -1  # -1: the middle layer, num_layers // 2
    sites: tuple[str, ...] = SITES
    widths: tuple[int, ...] = (384, 1536)  # 2x and 8x d_model
    l0_coefficients: tuple[float, ...] = (1.5e-3, 4e-3, 1e-2, 2.5e-2)  # λ
    sae: SAETrainConfig = field(default_factory=_quick_sae)  # d_sae / λ set per SAE
    steps: int = 500
    batch_size: int = 1024  # activations per SAE step (the paper: 4,096)
    scale_batches: int = 8  # batches that estimate each site's normaliser C (not trained on)
    buffer_tokens: int = 2**17  # the shuffling buffer's capacity
    model_batch: int = 16  # windows per model forward pass
    seq_len: int = 128
    eval_sequences: int = 128  # validation windows, each starting at a <bos>
    eval_batch: int = 16
    log_every: int = 25
    checkpoint_every: int = 100
    threads: int = 2  # torch threads for the SAEs and the activations
    teacher_threads: int = 2  # for the teacher: its cache key holds the thread count (gemma2)

    def validate(self):
        self.teacher.validate()
        _check_positive(
            self,
            "steps",
            "batch_size",
            "scale_batches",
            "buffer_tokens",
            "model_batch",
            "seq_len",
            "eval_sequences",
            "eval_batch",
            "log_every",
            "checkpoint_every",
            "threads",
            "teacher_threads",
        )
        bad = [s for s in self.sites if s not in SITES]
        if bad:
            raise ValueError(f"unknown sites {bad}; valid sites: {', '.join(SITES)}")
        _check_list("sites", self.sites, positive=False)
        _check_list("widths", self.widths)
        _check_list("l0_coefficients", self.l0_coefficients)
        if not -1 <= self.layer < self.teacher.num_layers:
            raise ValueError(
                f"layer must be in [0, {self.teacher.num_layers}) or -1 (the middle layer), "
                f"got {self.layer}"
            )
        if self.buffer_tokens < 2 * self.batch_size:
            raise ValueError(
                f"buffer_tokens ({self.buffer_tokens}) must be >= 2 x batch_size "
                f"({self.batch_size})"
            )
        if self.seq_len > self.teacher.train.seq_len * 4:
            raise ValueError(
                f"seq_len must be <= 4 x teacher.train.seq_len = "
                f"{4 * self.teacher.train.seq_len}, got {self.seq_len}"
            )
        names = {sae_name(s, 0, w, lam) for s in self.sites for w in self.widths
                 for lam in self.l0_coefficients}  # fmt: skip
        if len(names) != len(self.sites) * len(self.widths) * len(self.l0_coefficients):
            raise ValueError(
                f"l0_coefficients {list(self.l0_coefficients)} are not distinct at 6 "
                "significant digits (they name the saved SAEs)"
            )
        for w in self.widths:
            dataclasses.replace(self.sae, d_sae=int(w)).validate()

    def the_layer(self) -> int:
        return self.teacher.num_layers // 2 if self.layer == -1 else self.layer


def sae_name(site: str, layer: int, width: int, lam: float) -> str:
    return f"{site}.{layer}/width_{width}/lambda_{lam:g}"


def bos_windows(stream: np.ndarray, bos_id: int, seq_len: int, n: int) -> torch.Tensor:
    """Up to `n` windows of `seq_len` tokens that each start at a <bos>, spread evenly over
    the stream, so token position t in a window is position t of a document (Fig. 4's
    loss-by-position needs this)."""
    starts = np.flatnonzero(stream[: len(stream) - seq_len + 1] == bos_id)
    if len(starts) == 0:
        raise ValueError(f"no <bos> at least {seq_len} tokens before the stream's end")
    pick = starts[np.linspace(0, len(starts) - 1, min(n, len(starts))).round().astype(int)]
    pick = np.unique(pick)
    return torch.from_numpy(np.stack([stream[s : s + seq_len] for s in pick]).astype(np.int64))


def _trainers(
    cfg: FrontierConfig, layer: int, dims, scales, device, seed: int
) -> dict[str, SAETrainer]:
    """One trainer per (site, width, λ); every SAE is initialised from the run seed."""
    out = {}
    for site in cfg.sites:
        for width in cfg.widths:
            for lam in cfg.l0_coefficients:
                sc = dataclasses.replace(
                    cfg.sae, d_sae=int(width), l0_coefficient=float(lam), init_seed=seed
                )
                key = (site, layer)
                sae = new_sae(dims[key], sc, scales[key]).to(device)
                out[sae_name(site, layer, width, lam)] = SAETrainer(sae, sc, cfg.steps)
    return out


def run_frontier(ctx) -> dict:
    cfg: FrontierConfig = ctx.config
    torch.set_num_threads(cfg.teacher_threads)
    data = load_data(cfg.teacher)
    model, _ = get_teacher(ctx, cfg.teacher, data)
    model.eval()
    torch.set_num_threads(cfg.threads)
    layer = cfg.the_layer()
    keys = [(s, layer) for s in cfg.sites]
    tok = data.tokenizer
    special = (tok.bos_id, tok.eos_id, model.config.pad_token_id)

    # One activation stream for every SAE: each model forward pass serves all sites, and a
    # shuffled buffer (one permutation shared by the sites) deals out the batches.
    total = cfg.scale_batches + cfg.steps
    source = ActivationSource(
        model, data.train, keys, batch_size=cfg.model_batch, seq_len=cfg.seq_len,
        special_ids=special, seed=ctx.seed, max_tokens=total * cfg.batch_size,
    )  # fmt: skip
    buffer = ShuffledBuffer(
        source, cfg.batch_size, cfg.buffer_tokens, seed=ctx.seed, device=ctx.device
    )
    stream = iter(buffer)
    ctx.log(
        f"layer {layer}, sites {', '.join(cfg.sites)}: {len(cfg.sites) * len(cfg.widths) * len(cfg.l0_coefficients)} SAEs, "
        f"{cfg.steps} steps of {cfg.batch_size} activations each"
    )
    head = [next(stream) for _ in range(cfg.scale_batches)]
    scales = {k: estimate_input_scale(b[k] for b in head) for k in keys}
    trainers = _trainers(cfg, layer, source.dims, scales, ctx.device, ctx.seed)
    first = next(iter(trainers.values()))
    ctx.log(
        f"input scales C: {', '.join(f'{k[0]} {v:.3g}' for k, v in scales.items())}; "
        f"warmups (steps): lr {first.lr_warmup}, λ {first.l0_warmup}"
    )

    # Steps in metrics.jsonl and the checkpoint count on from the teacher's (trained in this
    # run or not), so a resumed run's metric truncation never cuts the teacher's lines.
    offset = cfg.teacher.train.steps
    start = 0
    ck = ctx.checkpoint.load() if ctx.resume else None
    if ck is not None and "trainers" in ck.state:
        for i, (name, tr) in enumerate(trainers.items()):
            tr.load_state(ck.tensors, ck.state["trainers"][name], prefix=f"{i}.")
        start = ck.step - offset
        ctx.log(f"resuming at SAE step {start} (replaying the activation stream to it)")
    for _ in range(start):  # the stream is deterministic: skip what was trained on
        next(stream)

    site_of = {name: (name.split("/")[0].rsplit(".", 1)[0], layer) for name in trainers}
    for step in ctx.track(range(start, cfg.steps), total=cfg.steps - start, description="SAEs"):
        batch = next(stream)
        xs = {k: batch[k] / scales[k] for k in keys}
        for name, tr in trainers.items():
            m = tr.step(xs[site_of[name]])
            if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
                ctx.log_metrics(offset + step + 1, sae=name, **m)
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            tensors, states = {}, {}
            for i, (name, tr) in enumerate(trainers.items()):
                tensors.update(tr.state_tensors(prefix=f"{i}."))
                states[name] = tr.state_json()
            ctx.checkpoint.save(offset + step + 1, tensors, {"trainers": states})

    # Evaluation on held-out windows that start at <bos>.
    windows = bos_windows(data.val, tok.bos_id, cfg.seq_len, cfg.eval_sequences)
    rows = []
    for name, tr in ctx.track(trainers.items(), total=len(trainers), description="evaluate"):
        site = name.split("/")[0].rsplit(".", 1)[0]
        sae = tr.sae.folded().eval()
        m = spliced_lm_metrics(
            model, windows.split(cfg.eval_batch), site, layer, sae, special, compute_kl=False
        )
        save_npz(sae, ctx.dir / "saes" / name / "params.npz")
        rec = m.reconstruction
        rows.append(
            {
                "name": name,
                "site": site,
                "width": tr.sae.d_sae,
                "l0_coefficient": tr.cfg.l0_coefficient,
                "l0": rec["l0"],
                "fvu": rec["fvu"],
                "mse": rec["mse"],
                "dead_fraction": rec["dead_fraction"],
                "dense_fraction": rec["dense_fraction"],
                "delta_lm_loss": m.delta_lm_loss,
                "ce_loss_score": m.ce_loss_score,
                "ce_clean": m.ce_clean,
                "ce_spliced": m.ce_spliced,
                "ce_ablated": m.ce_ablated,
                # positions with no spliced token (position 0 is always <bos>) are null
                "per_position_mse": _finite_or_none(m.per_position_mse),
                "per_position_fvu": _finite_or_none(m.per_position_fvu),
                "log10_frequency_histogram": _histogram(m.stats),
                # over the last full dead_window of training; null if none filled
                "train_dead_fraction": _finite_or_none([tr.dead_fraction])[0],
                "train_dense_fraction": _finite_or_none([tr.dense_fraction])[0],
            }
        )
        ctx.log(
            f"{name}: L0 {rec['l0']:.1f}, FVU {rec['fvu']:.3f}, "
            f"delta LM loss {m.delta_lm_loss:.4f}, CE score {m.ce_loss_score:.3f}"
        )
    return {
        "layer": layer,
        "sites": list(cfg.sites),
        "widths": [int(w) for w in cfg.widths],
        "l0_coefficients": [float(v) for v in cfg.l0_coefficients],
        "input_scales": {k[0]: v for k, v in scales.items()},
        "warmup_steps": first.schedules(),
        "train_tokens_per_sae": cfg.steps * cfg.batch_size,
        "eval_windows": int(windows.shape[0]),
        "eval_tokens": int(windows.numel()),
        "saes": rows,
    }


def _finite_or_none(values) -> list[float | None]:
    return [float(v) if math.isfinite(float(v)) else None for v in values]


def _histogram(stats) -> dict:
    counts, edges, dead = stats.log10_frequency_histogram()
    return {
        "counts": [int(c) for c in counts],
        "edges": [float(e) for e in edges],
        "dead": int(dead),
    }


# --- frontier claims --------------------------------------------------------------------


def _curve(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(log L0, metric) sorted by L0, for one site and width."""
    pts = sorted((r["l0"], r[key]) for r in rows if r["l0"] > 0)
    return np.log([p[0] for p in pts]), np.array([p[1] for p in pts], dtype=float)


def _at(rows: list[dict], key: str, log_l0: np.ndarray) -> np.ndarray:
    x, y = _curve(rows, key)
    return np.interp(log_l0, x, y)


def _overlap(curves: list[list[dict]], n: int = 5) -> np.ndarray | None:
    """n points of log L0 evenly spaced over the range every curve covers, or None (also
    when a curve has fewer than 2 SAEs with L0 > 0)."""
    ranges = [_curve(c, "fvu")[0] for c in curves]
    if any(len(r) < 2 for r in ranges):
        return None
    lo, hi = max(r.min() for r in ranges), min(r.max() for r in ranges)
    return np.linspace(lo, hi, n) if hi > lo else None


def _rows(r: dict, site: str, width: int | None = None) -> list[dict]:
    return [s for s in r["saes"] if s["site"] == site and (width is None or s["width"] == width)]


def _claim_width(r: dict) -> tuple:
    if len(r["widths"]) < 2:
        return "needs at least 2 widths", False
    narrow, wide = min(r["widths"]), max(r["widths"])
    parts, ok = [], True
    for site in r["sites"]:
        a, b = _rows(r, site, narrow), _rows(r, site, wide)
        grid = _overlap([a, b])
        if grid is None:
            parts.append(f"{SITE_LABELS[site]}: L0 ranges do not overlap (or < 2 SAEs with L0 > 0)")
            ok = False
            continue
        da, db = _at(a, "delta_lm_loss", grid), _at(b, "delta_lm_loss", grid)
        better = float(np.mean(db < da))
        ok &= bool(np.mean(db) < np.mean(da))
        parts.append(
            f"{SITE_LABELS[site]}: width {wide} {np.mean(db):.4f} vs {narrow} {np.mean(da):.4f} "
            f"(lower at {better:.0%} of L0 {math.exp(grid[0]):.0f}-{math.exp(grid[-1]):.0f})"
        )
    return "; ".join(parts), ok


def _claim_resid(r: dict) -> tuple:
    if "resid_post" not in r["sites"] or len(r["sites"]) < 2:
        return "needs the residual site and another", False
    wide = max(r["widths"])
    curves = {s: _rows(r, s, wide) for s in r["sites"]}
    grid = _overlap(list(curves.values()))
    if grid is None:
        return "the sites' L0 ranges do not overlap (or < 2 SAEs with L0 > 0)", False
    mean = {s: float(np.mean(_at(c, "delta_lm_loss", grid))) for s, c in curves.items()}
    fvu = {s: float(np.mean(_at(c, "fvu", grid))) for s, c in curves.items()}
    others = [s for s in r["sites"] if s != "resid_post"]
    measured = (
        ", ".join(f"{SITE_LABELS[s]} {mean[s]:.4f} (FVU {fvu[s]:.3f})" for s in r["sites"])
        + f" at L0 {math.exp(grid[0]):.0f}-{math.exp(grid[-1]):.0f}, width {wide}"
    )
    return measured, all(mean["resid_post"] > mean[s] for s in others)


def _claim_lambda(r: dict) -> tuple:
    if len(r["l0_coefficients"]) < 2:
        return "needs at least 2 values of λ", False
    bad = []
    for site in r["sites"]:
        for w in r["widths"]:
            rows = sorted(_rows(r, site, w), key=lambda s: s["l0_coefficient"])
            l0 = [s["l0"] for s in rows]
            if any(b >= a for a, b in zip(l0, l0[1:])):
                bad.append(f"{SITE_LABELS[site]} width {w}: L0 {', '.join(f'{v:.1f}' for v in l0)}")
    lo = min(s["l0"] for s in r["saes"])
    hi = max(s["l0"] for s in r["saes"])
    n = len(r["sites"]) * len(r["widths"])
    measured = f"{n - len(bad)}/{n} sweeps strictly monotone; L0 spans {lo:.1f}-{hi:.1f}"
    return measured, not bad, "; ".join(bad)


def _plain_log_x(ax) -> None:
    """A log L0 axis labelled 2, 5, 10, 20 rather than 2x10^0 at every minor tick."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_frontier(results: dict, ctx) -> None:
    import matplotlib.pyplot as plt

    widths = results["widths"]
    fig, axes = plt.subplots(2, len(results["sites"]), figsize=(4.2 * len(results["sites"]), 7))
    axes = np.atleast_2d(axes).reshape(2, -1)
    for j, site in enumerate(results["sites"]):
        for k, w in enumerate(widths):
            rows = sorted(_rows(results, site, w), key=lambda s: s["l0"])
            l0 = [s["l0"] for s in rows]
            style = dict(marker="o", color=f"C{k}", label=f"width {w}")
            axes[0, j].plot(l0, [s["delta_lm_loss"] for s in rows], **style)
            axes[1, j].plot(l0, [s["fvu"] for s in rows], **style)
        axes[0, j].set_title(f"{SITE_LABELS[site]} (layer {results['layer']})")
        for i, label in enumerate(("delta LM loss (nats)", "FVU")):
            _plain_log_x(axes[i, j])
            axes[i, j].set_xlabel("L0")
            axes[i, j].set_ylabel(label)
            axes[i, j].grid(alpha=0.3)
        axes[0, j].legend()
    fig.suptitle("Gemma Scope frontier: fidelity vs sparsity (cf. paper Figs. 2-3)")
    fig.tight_layout()
    ctx.save_figure(fig, "frontier")

    # The sites side by side at the widest width (Fig. 2's comparison across sites).
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for k, site in enumerate(results["sites"]):
        rows = sorted(_rows(results, site, max(widths)), key=lambda s: s["l0"])
        style = dict(marker="o", color=f"C{k + 2}", label=SITE_LABELS[site])
        axes[0].plot([s["l0"] for s in rows], [s["delta_lm_loss"] for s in rows], **style)
        axes[1].plot([s["l0"] for s in rows], [s["fvu"] for s in rows], **style)
    for ax, label in zip(axes, ("delta LM loss (nats)", "FVU")):
        _plain_log_x(ax)
        if label.startswith("delta"):  # can be slightly negative (noise): symlog
            ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_xlabel("L0")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"sites at width {max(widths)}")
    fig.tight_layout()
    ctx.save_figure(fig, "frontier_sites")

    # Reconstruction loss by token position (Fig. 4) and firing frequencies (Fig. 5).
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for k, site in enumerate(results["sites"]):
        rows = _rows(results, site, max(widths))
        mid = sorted(rows, key=lambda s: s["l0"])[len(rows) // 2]
        axes[0].plot(
            np.array(mid["per_position_fvu"], dtype=float),  # null -> nan
            color=f"C{k + 2}",
            label=f"{SITE_LABELS[site]} (L0 {mid['l0']:.0f})",
        )
        h = mid["log10_frequency_histogram"]
        centers = 0.5 * (np.array(h["edges"][:-1]) + np.array(h["edges"][1:]))
        axes[1].step(
            centers,
            h["counts"],
            where="mid",
            color=f"C{k + 2}",
            label=f"{SITE_LABELS[site]} ({h['dead']} dead)",
        )
    axes[0].set_xlabel("token position")
    axes[0].set_ylabel("reconstruction loss / total variance")
    axes[0].set_xscale("symlog", linthresh=10)
    axes[1].set_xlabel("log10 firing frequency")
    axes[1].set_ylabel("latents")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"width {max(widths)}, middle λ: loss by position (Fig. 4) and firing (Fig. 5)")
    fig.tight_layout()
    ctx.save_figure(fig, "frontier_positions")


# ---------------------------------------------------------------------------------------
# gemmascope.synthetic


@dataclass
class SyntheticExpConfig:
    # 128 features in 64 dimensions (2x superposition), 4 active per sample on average
    data: SyntheticConfig = field(
        default_factory=lambda: SyntheticConfig(d_in=64, n_features=128, l0=4.0)
    )
    d_sae: int = 256
    l0_coefficients: tuple[float, ...] = (3e-3, 1e-2, 3e-2, 1e-1)
    sae: SAETrainConfig = field(default_factory=_quick_sae)
    steps: int = 1500
    batch_size: int = 1024
    scale_batches: int = 8
    eval_batches: int = 8
    recovery_target: float = 0.9  # the bar for mean max cosine
    l0_tolerance: float = 0.5  # "the right L0": within ±50 % of the true L0
    log_every: int = 50
    threads: int = 1

    def validate(self):
        self.data.validate()
        _check_positive(
            self,
            "d_sae",
            "steps",
            "batch_size",
            "scale_batches",
            "eval_batches",
            "log_every",
            "threads",
        )
        _check_list("l0_coefficients", self.l0_coefficients)
        if not 0 < self.recovery_target <= 1:
            raise ValueError(f"recovery_target must be in (0, 1], got {self.recovery_target}")
        if not 0 < self.l0_tolerance:
            raise ValueError(f"l0_tolerance must be > 0, got {self.l0_tolerance}")
        dataclasses.replace(self.sae, d_sae=self.d_sae).validate()


def run_synthetic(ctx) -> dict:
    cfg: SyntheticExpConfig = ctx.config
    torch.set_num_threads(cfg.threads)
    data = SyntheticActivations(dataclasses.replace(cfg.data, seed=cfg.data.seed + ctx.seed))
    rows = []
    for j, lam in enumerate(
        ctx.track(cfg.l0_coefficients, total=len(cfg.l0_coefficients), description="λ sweep")
    ):
        sc = dataclasses.replace(
            cfg.sae, d_sae=cfg.d_sae, l0_coefficient=float(lam), init_seed=ctx.seed
        )
        stream = data.stream(cfg.batch_size, seed=1000 * ctx.seed + 1)
        scale = estimate_input_scale(next(stream) for _ in range(cfg.scale_batches))
        tr = SAETrainer(new_sae(data.d_in, sc, scale), sc, cfg.steps)
        for step in range(cfg.steps):
            m = tr.step(next(stream) / scale)
            if (step + 1) % cfg.log_every == 0:
                ctx.log_metrics(j * cfg.steps + step + 1, sae=f"lambda_{lam:g}", **m)
        sae = tr.sae.folded().eval()
        rec = evaluate_reconstruction(
            sae, data.stream(4096, seed=1000 * ctx.seed + 2, n_batches=cfg.eval_batches)
        )
        mmcs = mean_max_cosine(sae.W_dec.detach(), data.D)
        rows.append(
            {
                "l0_coefficient": float(lam),
                "l0": rec.l0,
                "fvu": rec.fvu,
                "dead_fraction": rec.dead_fraction,
                "dense_fraction": rec.dense_fraction,
                "mean_max_cosine": float(mmcs.mean),
                "recovered_0.9": float(np.mean(np.asarray(mmcs.per_feature) >= 0.9)),
            }
        )
        ctx.log(
            f"λ {lam:g}: L0 {rec.l0:.2f} (true {data.expected_l0:.2f}), FVU {rec.fvu:.3f}, MMCS {mmcs.mean:.3f}"
        )
    return {
        "true_l0": float(data.expected_l0),
        "d_in": data.d_in,
        "n_features": data.n_features,
        "d_sae": cfg.d_sae,
        "recovery_target": cfg.recovery_target,
        "l0_tolerance": cfg.l0_tolerance,
        "runs": rows,
    }


def _claim_recovery(r: dict) -> tuple:
    """The run whose L0 is closest to the true L0 (in ratio) must be within the tolerance of
    it and reach the recovery target."""
    true = r["true_l0"]
    best = min(r["runs"], key=lambda row: abs(math.log(max(row["l0"], 1e-9) / true)))
    measured = (
        f"MMCS {best['mean_max_cosine']:.3f} at L0 {best['l0']:.2f} (true {true:.2f}), "
        f"FVU {best['fvu']:.3f}, λ {best['l0_coefficient']:g}"
    )
    if abs(best["l0"] - true) > r["l0_tolerance"] * true:
        return f"no run within ±{r['l0_tolerance']:.0%} of the true L0; closest: {measured}", False
    return measured, best["mean_max_cosine"] >= r["recovery_target"]


def _claim_synthetic_lambda(r: dict) -> tuple:
    runs = sorted(r["runs"], key=lambda row: row["l0_coefficient"])
    if len(runs) < 2:
        return "needs at least 2 values of λ", False
    l0 = [row["l0"] for row in runs]
    return ", ".join(f"{v:.2f}" for v in l0), all(b < a for a, b in zip(l0, l0[1:]))


def plot_synthetic(results: dict, ctx) -> None:
    import matplotlib.pyplot as plt

    runs = sorted(results["runs"], key=lambda row: row["l0"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    l0 = [r["l0"] for r in runs]
    axes[0].plot(l0, [r["mean_max_cosine"] for r in runs], "o-", label="mean max cosine")
    axes[0].plot(l0, [r["recovered_0.9"] for r in runs], "s--", label="features with max cos ≥ 0.9")
    axes[0].axhline(results["recovery_target"], color="k", lw=0.8, ls=":")
    axes[1].plot(l0, [r["fvu"] for r in runs], "o-", color="C3")
    axes[1].set_ylabel("FVU")
    for ax in axes:
        ax.axvline(results["true_l0"], color="C2", lw=1, ls="--", label="true L0")
        _plain_log_x(ax)
        ax.set_xlabel("L0")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"synthetic dictionary: {results['n_features']} features in {results['d_in']} dims, "
        f"SAE width {results['d_sae']}"
    )
    fig.tight_layout()
    ctx.save_figure(fig, "synthetic")


# ---------------------------------------------------------------------------------------
# registration


def _smoke_frontier() -> FrontierConfig:
    return FrontierConfig(
        teacher=_smoke_teacher(),
        widths=(32, 64),
        l0_coefficients=(1e-3, 1e-1),
        steps=6,
        batch_size=64,
        scale_batches=2,
        buffer_tokens=256,
        model_batch=4,
        seq_len=32,
        eval_sequences=4,
        eval_batch=2,
        log_every=2,
        checkpoint_every=3,
        threads=1,
        teacher_threads=1,
    )


def _paper_frontier() -> FrontierConfig:
    from .train import PAPER_STEPS

    return FrontierConfig(
        teacher=TeacherConfig(
            vocab_size=32768, d_model=768, num_layers=12, head_dim=64, sliding_window=512,
            train=TrainConfig(
                steps=20_000, batch_size=64, seq_len=1024, lr=6e-4, warmup_steps=1000,
                eval_every=500, eval_batches=16, checkpoint_every=500,
            ),
        ),
        widths=(8 * 768, 32 * 768),
        l0_coefficients=(2e-4, 4e-4, 6e-4, 1e-3, 2e-3),
        sae=SAETrainConfig(dead_window=10_000_000),
        steps=PAPER_STEPS // 20,
        batch_size=4096,
        buffer_tokens=2**20,
        model_batch=8,
        seq_len=1024,
        eval_sequences=2048,
        log_every=1000,
        checkpoint_every=10_000,
    )  # fmt: skip


register(
    Experiment(
        name="gemmascope.frontier",
        paper=PAPER,
        description="JumpReLU SAEs at a middle layer's three sites: delta LM loss and FVU vs L0",
        config=FrontierConfig,
        presets={"smoke": _smoke_frontier(), "quick": FrontierConfig(), "paper": _paper_frontier()},
        run=run_frontier,
        claims=[
            Claim(
                "wider_is_better",
                "At a fixed L0 the wider SAE has the lower delta LM loss (Fig. 3, the width "
                "ladders 16.4K-1M: wider is better at every sparsity)",
                _claim_width,
            ),
            Claim(
                "residual_hardest",
                "Residual-stream SAEs have a higher delta LM loss than MLP and attention SAEs "
                "at comparable L0 (Fig. 2, §4.1; the FVUs are reported beside, not checked)",
                _claim_resid,
            ),
            Claim(
                "lambda_controls_sparsity",
                "The sparsity coefficient λ sets the sparsity monotonically: a higher λ gives "
                "a lower L0 (§3.2, the sweep over λ gives each SAE its L0)",
                _claim_lambda,
            ),
        ],
        plots=plot_frontier,
        # "wider is better" does not reproduce at the CPU budget (docs/gemmascope.md)
        wip=True,
    )
)

register(
    Experiment(
        name="gemmascope.synthetic",
        paper=PAPER,
        description="JumpReLU SAEs on activations with a known dictionary: recovery vs L0",
        config=SyntheticExpConfig,
        presets={
            "smoke": SyntheticExpConfig(
                data=SyntheticConfig(d_in=8, n_features=16, l0=2.0),
                d_sae=32,
                l0_coefficients=(1e-3, 1e-1),
                steps=10,
                batch_size=64,
                scale_batches=2,
                eval_batches=1,
                log_every=5,
            ),
            "quick": SyntheticExpConfig(),
            "paper": SyntheticExpConfig(
                data=SyntheticConfig(d_in=256, n_features=4096, l0=32.0),
                d_sae=4096,
                l0_coefficients=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2),
                sae=SAETrainConfig(lr=3e-4, lr_warmup_frac=0.01, l0_warmup_frac=0.05),
                steps=50_000,
                batch_size=4096,
            ),
        },
        run=run_synthetic,
        claims=[
            Claim(
                "dictionary_recovered",
                "On activations built from a known dictionary, the JumpReLU SAE trained at "
                "the true L0 recovers the dictionary (mean max cosine similarity >= 0.9)",
                _claim_recovery,
            ),
            Claim(
                "lambda_controls_sparsity",
                "A higher λ gives a lower L0 (Gemma Scope §3.2)",
                _claim_synthetic_lambda,
            ),
        ],
        plots=plot_synthetic,
    )
)


def load_sae(path: str | Path) -> JumpReLUSAE:
    """An SAE saved by these experiments (`<run>/saes/<site>.<layer>/width_W/lambda_L/params.npz`)."""
    from .formats import load_npz

    return load_npz(path)
