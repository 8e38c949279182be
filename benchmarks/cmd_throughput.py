"""CMD-2 training throughput on CPU: alignlab against a plain-PyTorch baseline, in one run.

Sizes are the cmd.stitching quick preset's: the one-hot two-door stitching maze, 200 walkers
per leg (seed 0), MethodConfig(gamma=0.8, lr=1e-3, goal_current=True, bc_coef=0.3), batch 256, MLPs
(128, 128), representation size 64, one-component MRN head.

(a) alignlab: one gradient step is `EpisodeDataset.sample` (vectorised) + `to_torch` +
    `METHODS["cmd2"].update`, exactly as in `alignlab.cmd.train.train_unit`.
(b) baseline, written here without alignlab's optimisations: the same networks and losses
    (critic phi(s, a), psi(g) with L2 normalisation and a learned temperature, symmetric
    InfoNCE, an MRN quasimetric computed by broadcasting to (B, B, D) under autograd, the
    pos/neg hinge + Lagrange loss, the behaviour-prior cross-entropy, Adam, grad-norm clip),
    fed by a per-row Python-loop goal sampler (anchor, geometric offset clipped to the episode
    end: clipping, not alignlab's truncated-and-renormalised law; the cost is the same).
Before timing, the baseline is checked against alignlab: its naive MRN equals `mrn_pairwise`
on random inputs, and from the same weights and batch both give the same losses and gradients.

Each measurement times N steps after a warm-up; the four measurements (full step and sampling
alone, for each side) are interleaved and repeated, and the median per step is reported. The
sampling share is sampling time / full step time. A short torch.profiler look at alignlab's
step lists the operators with the largest self CPU time.

The machine's load average at the start and end of the timing, the process's CPU seconds per
wall second and its peak RSS (both sides together) are printed beside the ratio.

Usage: python benchmarks/cmd_throughput.py [--quick]
Writes docs/img/cmd_benchmark.json. Single thread.
"""

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"  # one core: the timings are per thread, before numpy starts its pools

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import _bench  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from alignlab.cmd.experiments import StitchingConfig  # noqa: E402
from alignlab.cmd.maze import stitching_dataset, stitching_maze  # noqa: E402
from alignlab.cmd.methods import ActionSpec  # noqa: E402
from alignlab.cmd.methods.cmd2 import mrn_pairwise  # noqa: E402
from alignlab.cmd.train import episode_dataset, make_method  # noqa: E402
from alignlab.rl import to_torch  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parents[1] / "docs" / "img"


# ---- the plain-PyTorch baseline -----------------------------------------------------------


def plain_mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int) -> nn.Sequential:
    layers, width = [], in_dim
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, out_dim))


def naive_mrn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MRN d(x_i, y_j) for all pairs by broadcasting to (B, B', D): the textbook form."""
    diff = x[:, None, :] - y[None, :, :]
    h = x.shape[-1] // 2
    return torch.linalg.vector_norm(diff[..., :h], dim=-1) + diff[..., h:].amax(-1).relu()


class BaselineCMD2(nn.Module):
    """CMD-2 written straightforwardly: one module, one loss, Adam, grad clip."""

    def __init__(self, obs_dim: int, act_dim: int, cfg):
        super().__init__()
        sa_dim = obs_dim + act_dim
        self.cfg = cfg
        self.c = math.sqrt(cfg.repr_dim)  # logits = phi psi^T / sqrt(d)
        self.phi_net = plain_mlp(sa_dim, cfg.hidden, cfg.repr_dim)
        self.psi_net = plain_mlp(obs_dim, cfg.hidden, cfg.repr_dim)
        self.log_tau = nn.Parameter(torch.tensor(math.log(0.1 / self.c)))
        self.encoder = plain_mlp(sa_dim, cfg.hidden, cfg.repr_dim)  # shared by (s, a), (g, a_g)
        self.lam_raw = nn.Parameter(torch.tensor(math.log(math.expm1(cfg.lam_init - 0.01))))
        self.behaviour = plain_mlp(obs_dim, cfg.hidden, act_dim)
        self.optimizer = torch.optim.Adam(self.parameters(), lr=cfg.lr)

    def phi(self, sa):
        return F.normalize(self.phi_net(sa), dim=-1) / self.log_tau.exp()

    def update(self, batch: dict) -> dict:
        obs, action, goal = batch["obs"], batch["action"], batch["goal"]
        sa = torch.cat([obs, action], dim=1)
        ga = torch.cat([goal, batch["goal_action"]], dim=1)
        n = len(obs)
        labels = torch.arange(n)
        psi = F.normalize(self.psi_net(goal), dim=-1)
        logits = self.phi(sa) @ psi.T / self.c
        critic_loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
        with torch.no_grad():
            f_gg = (self.phi(ga) * psi).sum(-1) / self.c  # f(g_j, a_gj, g_j)
            target = f_gg[None, :] - logits
        d = naive_mrn(self.encoder(sa), self.encoder(ga))
        off = ~torch.eye(n, dtype=torch.bool)
        pos = (d.diagonal() - target.diagonal()).relu().square().mean()
        neg = (target - d).relu().square()[off].mean()
        lam = F.softplus(self.lam_raw) + 0.01
        distill_loss = pos + neg / lam + lam * (self.cfg.margin - pos.detach())
        bc_loss = F.cross_entropy(self.behaviour(obs), action.argmax(-1))
        loss = critic_loss + distill_loss + bc_loss
        self.optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(self.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        return {
            "critic_loss": critic_loss.item(),
            "distill_loss": distill_loss.item(),
            "pos": pos.item(),
            "neg": neg.item(),
            "lambda": lam.item(),
            "accuracy": (logits.argmax(1) == labels).float().mean().item(),
        }


def naive_sample(data, batch_size: int, rng: np.random.Generator, gamma: float) -> dict:
    """Per-row Python loop: anchor, offset ~ Geom(1 - gamma) - 1 (>= 0), clipped to the end."""
    obs, action, goal, goal_action = [], [], [], []
    for _ in range(batch_size):
        i = int(data.anchors[rng.integers(len(data.anchors))])
        j = min(i + int(rng.geometric(1 - gamma)) - 1, int(data.episode_end[i]))
        obs.append(data.obs[i])
        action.append(data.action[i])
        goal.append(data.obs[j])
        goal_action.append(data.action[j])
    return {
        "obs": torch.tensor(np.array(obs)),
        "action": torch.tensor(np.array(action)),
        "goal": torch.tensor(np.array(goal)),
        "goal_action": torch.tensor(np.array(goal_action)),
    }


# ---- checks: the baseline computes what alignlab computes ---------------------------------


def check_mrn() -> float:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 64, generator=g), torch.randn(48, 64, generator=g)
    naive, fast = naive_mrn(x, y), mrn_pairwise(x, y)
    assert torch.allclose(naive, fast, rtol=1e-5, atol=1e-5), (naive - fast).abs().max()
    return float((naive - fast).abs().max())


def check_same_step(method, baseline: BaselineCMD2, batch: dict) -> dict:
    """Load alignlab's weights into the baseline, step both on one batch: same losses, grads."""
    pairs = [
        (baseline.phi_net, method.critic.phi_net),
        (baseline.psi_net, method.critic.psi_net),
        (baseline.encoder, method.qd.sa_encoder),
        (baseline.behaviour, method.behaviour),
    ]
    with torch.no_grad():
        for mine, theirs in pairs:
            mine.load_state_dict(theirs.state_dict())
        baseline.log_tau.copy_(method.critic.log_tau)
        baseline.lam_raw.copy_(method.lam_raw)
    ours, theirs = method.update(batch), baseline.update(batch)
    loss_err = max(abs(ours[k] - theirs[k]) for k in ours)
    assert loss_err < 1e-4, (ours, theirs)
    grads = [(baseline.log_tau, method.critic.log_tau), (baseline.lam_raw, method.lam_raw)]
    for mine, them in pairs:
        grads += list(zip(mine.parameters(), them.parameters()))
    grad_err = max(float((a.grad - b.grad).abs().max()) for a, b in grads)
    assert grad_err < 1e-4, grad_err
    return {"max_loss_abs_err": loss_err, "max_grad_abs_err": grad_err}


# ---- timing -------------------------------------------------------------------------------


def per_step(fn, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def profile_alignlab(sample, update, n: int = 20, top: int = 8) -> tuple[list, dict]:
    from torch.profiler import ProfilerActivity, profile, record_function

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            with record_function("## sample+to_torch"):
                batch = sample()
            with record_function("## update"):
                update(batch)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    rows = [
        {
            "name": e.key,
            "self_cpu_ms_per_step": e.self_cpu_time_total / 1e3 / n,
            "self_share": e.self_cpu_time_total / total,
            "calls_per_step": e.count / n,
        }
        for e in events[:top]
    ]
    spans = {e.key: e.cpu_time_total / 1e3 / n for e in events if e.key.startswith("## ")}
    print(f"\nprofile of alignlab's step ({n} steps, self CPU time, profiler overhead included)")
    for name, ms in spans.items():
        print(f"  {name:40s} {ms:7.3f} ms/step (inclusive)")
    for r in rows:
        print(
            f"  {r['name']:40s} {r['self_cpu_ms_per_step']:7.3f} ms/step "
            f"{100 * r['self_share']:5.1f}%  x{r['calls_per_step']:.0f}"
        )
    return rows, spans


def main(quick: bool) -> dict:
    wall0 = time.perf_counter()
    stats = _bench.RunStats()
    torch.set_num_threads(1)
    n_steps, repeats, warmup = (50, 3, 5) if quick else (150, 3, 20)
    preset = StitchingConfig()  # the quick preset
    cfg = preset.method
    maze = stitching_maze(slip=preset.slip, obs_mode=preset.obs_mode)
    spec = ActionSpec.discrete_actions(maze.action_space.n)
    data = episode_dataset(
        stitching_dataset(maze, 0, n_per_leg=preset.n_per_leg, epsilon=preset.epsilon), spec
    )
    obs_dim = data.obs.shape[1]
    method = make_method("cmd2", obs_dim, spec, cfg, 0)
    torch.manual_seed(1)
    baseline = BaselineCMD2(obs_dim, spec.dim, cfg)
    min_offset = 0 if cfg.goal_current else 1
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(2)

    def sample_a():
        return to_torch(data.sample(cfg.batch_size, rng_a, cfg.gamma, min_offset=min_offset))

    def sample_b():
        return naive_sample(data, cfg.batch_size, rng_b, cfg.gamma)

    def step_a():
        method.update(sample_a())

    def step_b():
        baseline.update(sample_b())

    mrn_err = check_mrn()
    same = check_same_step(method, baseline, sample_a())
    print(
        f"checks: naive MRN = mrn_pairwise (max |diff| {mrn_err:.1e}); same weights and batch "
        f"give the same losses (max |diff| {same['max_loss_abs_err']:.1e}) and gradients "
        f"(max |diff| {same['max_grad_abs_err']:.1e})"
    )

    for fn in (step_a, step_b):
        per_step(fn, warmup)
    times: dict[str, list[float]] = {k: [] for k in ("a_step", "a_sample", "b_step", "b_sample")}
    for _ in range(repeats):  # interleaved, so drifts in machine load hit both sides alike
        times["a_step"].append(per_step(step_a, n_steps))
        times["b_step"].append(per_step(step_b, n_steps))
        times["a_sample"].append(per_step(sample_a, n_steps))
        times["b_sample"].append(per_step(sample_b, n_steps))
    med = {k: statistics.median(v) for k, v in times.items()}

    def side(prefix: str) -> dict:
        step, sample = med[f"{prefix}_step"], med[f"{prefix}_sample"]
        return {
            "steps_per_s": 1 / step,
            "step_ms": 1e3 * step,
            "sample_ms": 1e3 * sample,
            "update_ms": 1e3 * (step - sample),
            "sample_share": sample / step,
            "step_ms_repeats": [1e3 * t for t in times[f"{prefix}_step"]],
            "sample_ms_repeats": [1e3 * t for t in times[f"{prefix}_sample"]],
        }

    a, b = side("a"), side("b")
    ratio = a["steps_per_s"] / b["steps_per_s"]
    update_ratio = b["update_ms"] / a["update_ms"]
    sample_ratio = b["sample_ms"] / a["sample_ms"]

    print(
        f"\nCMD-2 gradient steps on CPU, 1 thread, batch {cfg.batch_size}, hidden {cfg.hidden}, "
        f"repr {cfg.repr_dim}, obs {obs_dim}, actions {spec.dim}; median of {repeats} x "
        f"{n_steps} steps"
    )
    print(
        f"{'':26s} {'steps/s':>8s} {'step ms':>8s} {'sample ms':>10s} {'update ms':>10s} {'sample %':>9s}"
    )
    for name, r in (("alignlab", a), ("plain PyTorch baseline", b)):
        print(
            f"{name:26s} {r['steps_per_s']:8.1f} {r['step_ms']:8.2f} {r['sample_ms']:10.3f} "
            f"{r['update_ms']:10.2f} {100 * r['sample_share']:8.1f}%"
        )
    print(
        f"ratio alignlab / baseline: {ratio:.2f}x steps/s "
        f"(update alone {update_ratio:.2f}x, sampling alone {sample_ratio:.1f}x)"
    )
    run = stats.report()  # before the profiler: the load and memory of the timed run
    print(f"{stats.line(run)} (this process: both sides)")

    profile_top, profile_spans = profile_alignlab(sample_a, method.update)

    result = {
        "quick": quick,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "threads": torch.get_num_threads(),
            **run,
        },
        "sizes": {
            "preset": "cmd.stitching quick",
            "batch_size": cfg.batch_size,
            "hidden": list(cfg.hidden),
            "repr_dim": cfg.repr_dim,
            "obs_dim": obs_dim,
            "n_actions": spec.dim,
            "dataset_states": len(data),
            "dataset_episodes": data.num_episodes,
            "gamma": cfg.gamma,
            "goal_current": cfg.goal_current,
            "bc_coef": cfg.bc_coef,
            "n_steps": n_steps,
            "repeats": repeats,
            "warmup": warmup,
        },
        "checks": {"mrn_max_abs_err": mrn_err, **same},
        "alignlab": a,
        "baseline": b,
        "ratio_steps_per_s": ratio,
        "ratio_update_only": update_ratio,
        "ratio_sampling_only": sample_ratio,
        "profile_alignlab": {"inclusive_ms_per_step": profile_spans, "top_self_cpu": profile_top},
        "wall_s": time.perf_counter() - wall0,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "cmd_benchmark.json").write_text(json.dumps(result, indent=2))
    print(f"\nwrote {OUT / 'cmd_benchmark.json'} ({result['wall_s']:.1f} s)")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="50 steps per measurement, not 150")
    main(parser.parse_args().quick)
