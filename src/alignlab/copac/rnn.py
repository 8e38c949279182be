"""The Michaels brain as a patient: cloned once from the healthy SAC brain, cached, lesioned per
patient (`michaels.MichaelsBrain`, `michaels.train_dagger`).

The paper trains its modular RNN brain by recurrent SAC on the task (500k steps); quick
presets clone the world's trained SAC brain, tanh(mu(s)), into it by DAgger instead (a
deviation, docs/copac.md). Q* stays the SAC brain's critic: it values world actions, whoever
produces them.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from alignlab.copac.brain import CACHE_KIND, SACBrain, brain_key
from alignlab.copac.envs import make_world
from alignlab.copac.michaels import MichaelsBrain, train_dagger
from alignlab.copac.patient import Evaluator
from alignlab.core.cache import artifact_dir, cached_folder, content_key, is_complete
from alignlab.core.errors import AlignlabError
from alignlab.core.seeding import int_seed


def michaels_key(pc) -> str:
    spec = {
        "sac_brain": brain_key(pc.world, pc.brain_training),
        "n": pc.michaels_n,
        "iterations": pc.michaels_iterations,
        "stim_dim": pc.stim_dim,
        "torch": torch.__version__.split("+")[0],
        "v": 1,
    }
    return content_key(spec)


def _new(pc, obs_dim: int, action_dim: int) -> MichaelsBrain:
    return MichaelsBrain(
        obs_dim, action_dim, pc.stim_dim, n=pc.michaels_n, seed=pc.brain_training.seed
    )


def _dims(world: str) -> tuple[int, int]:
    env = make_world(world)
    dims = env.observation_space.shape[0], env.action_space.shape[0]
    env.close()
    return dims


def load_michaels(pc) -> MichaelsBrain:
    from safetensors.torch import load_file

    folder = artifact_dir(CACHE_KIND, "michaels-" + michaels_key(pc))
    path = folder / "michaels.safetensors"
    try:
        brain = _new(pc, *_dims(pc.world))
        brain.load_state_dict(load_file(str(path)))
    except Exception as e:
        raise AlignlabError(
            f"the cached Michaels brain at {path} is corrupt or missing ({type(e).__name__}: "
            f"{e}); delete {folder} to clone it again"
        ) from e
    return brain.eval()


def healthy_michaels(ctx, pc, healthy_sac) -> dict:
    """Clone the healthy SAC brain into a Michaels brain (DAgger), once, and cache it; returns
    the clone's record (losses, returns of teacher and clone, CPU time)."""
    key = "michaels-" + michaels_key(pc)
    folder = artifact_dir(CACHE_KIND, key)
    iterations = pc.michaels_iterations
    stage = ctx.stage(f"michaels-{pc.world}", iterations)
    if is_complete(folder):
        ctx.log(f"brain: reusing the cached Michaels brain {folder}")
        return json.loads((folder / "michaels.json").read_text(encoding="utf-8"))
    obs_dim, action_dim = _dims(pc.world)
    brain = _new(pc, obs_dim, action_dim)
    teacher = lambda s: healthy_sac.actor.deterministic(s)  # noqa: E731
    rng = np.random.default_rng(int_seed(pc.brain_training.seed, "copac-dagger", pc.world))
    ctx.log(f"brain: cloning the SAC brain into a 3x{pc.michaels_n} Michaels brain by DAgger")
    with stage.bar(iterations, f"Michaels brain {pc.world}") as bar:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int_seed(pc.brain_training.seed, "copac-dagger-torch"))
            record = train_dagger(
                brain,
                lambda: make_world(pc.world),
                teacher,
                iterations=iterations,
                episodes_per_iter=16,
                epochs=40,
                lr=1e-3,
                eval_episodes=32,
                rng=rng,
                progress=lambda i: bar.advance(1),
            )
    seeds = [int_seed(pc.brain_training.seed, "copac-clone-eval", i) % 2**31 for i in range(10)]
    brain.eval()
    zero = lambda s: torch.zeros(len(s), pc.stim_dim)  # noqa: E731
    teacher_brain = SACBrain(healthy_sac.actor, p=0.0, stim_dim=pc.stim_dim)
    info = {
        "key": key,
        "n": pc.michaels_n,
        "training": asdict(pc.brain_training),
        "clone_return": float(np.mean(Evaluator(pc.world, brain, seeds)(zero))),
        "teacher_return": float(np.mean(Evaluator(pc.world, teacher_brain, seeds)(zero))),
        "final_loss": float(record["loss"][-1]) if record["loss"] else float("nan"),
        "cpu_seconds": float(record.get("cpu_seconds", float("nan"))),
    }
    ctx.log(
        f"brain: Michaels clone returns {info['clone_return']:.2f} "
        f"(teacher {info['teacher_return']:.2f})"
    )

    def build(tmp: Path) -> None:
        from safetensors.torch import save_file

        save_file(
            {k: v.contiguous() for k, v in brain.state_dict().items()}, tmp / "michaels.safetensors"
        )
        (tmp / "michaels.json").write_text(json.dumps(info, indent=1), encoding="utf-8")

    cached_folder(CACHE_KIND, key, build)
    return info


def patient_michaels(pc, p: float, injury_seed: int, stim_seed: int) -> MichaelsBrain:
    """A patient: the cached clone with a fraction p of M1 silenced (the injury seed picks
    which). The electrodes sit at fixed kernel centres, so `stim_seed` is not used."""
    brain = load_michaels(pc)
    brain.lesion(p, np.random.default_rng(injury_seed))
    for q in brain.parameters():
        q.requires_grad_(False)
    return brain
