"""One iteration of the paper's optimiser: sample, score, select, then KTO (Williams, Carroll
et al. 2024, Sec. 2.3; the repo's `RL/run_KTO_iteration.py`, `stats/` and `_base_*.yaml`).

1. Sample one trajectory per user from the current agent (`rollout`).
2. Score a trajectory by the mean of its turns' expected ratings.
3. Select per sub-environment file (`User.group`: `vuln_drinking` ≠ `normal_drinking`):
   drop vetoed trajectories first, then the top ⌈n/16⌉ by reward are desirable and the bottom
   ⌈n/16⌉ undesirable; with the `negative` veto the bottom comes from the unfiltered pool
   (`allow_negative_training_on_veto`). Each agent turn of a selected trajectory is one example.
4. KTO for one epoch (batch 16, AdamW, clip 1.0, β 0.1, lr × 0.9^i, w_d = 1,
   w_u = n_d / (n_u · 1.05)), the reference being the policy at the iteration's start (the repo
   loads the previous adapter as both). Optionally mixed with safety data making up a fraction
   f of the examples, n·f/(1 − f) of them (the repo's `frac_static_data_points`).
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from alignlab.feedback_gaming import probes
from alignlab.feedback_gaming.kto import collate, kto_step, sequence_logps, undesirable_weight
from alignlab.feedback_gaming.roles import PROGRAMS, Roles
from alignlab.feedback_gaming.world import (
    EnvSpec,
    Trajectory,
    User,
    fill,
    first_messages,
    flag_probability,
    judge,
    vetoed,
)

SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class Optim:
    lr: float
    lr_decay: float = 0.9
    batch_size: int = 16
    beta: float = 0.1
    max_grad_norm: float = 1.0
    target_ratio: float = 1.05
    schedule: str = "constant"
    weight_decay: float = 0.0
    method: str = "kto"  # or "ei": expert iteration, SFT on the desirable examples only


METHODS = ("kto", "ei")


def ei_step(model, batch, optimizer, max_grad_norm: float = 1.0) -> dict:
    """One step of expert iteration (the repo's `RL/EI.py`; the paper's optimiser without
    `beta` in its config): the mean per-token NLL of the desirable completions."""
    keep = batch.desirable
    logps = sequence_logps(model, batch.input_ids[keep], batch.attention_mask[keep],
                           batch.completion_mask[keep])  # fmt: skip
    loss = -logps.sum() / batch.completion_mask[keep].sum().clamp(min=1)
    loss.backward()
    params = [p for p in model.parameters() if p.grad is not None]
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {"loss": float(loss.detach()), "grad_norm": grad_norm}


def select(
    env: EnvSpec,
    trajs: Sequence[Trajectory],
    frac: float,
    veto: str,
    rng: np.random.Generator,
    roles: Roles = PROGRAMS,
) -> tuple[list[Trajectory], list[Trajectory], int]:
    """(desirable, undesirable, vetoed count): per group, veto first (P(flag) from
    `roles.veto`), then the top and bottom ⌈n/16⌉ (n: the group's trajectories); ties are
    broken at random."""
    groups: dict[str, list[Trajectory]] = defaultdict(list)
    p_flag = {}
    if veto != "none":
        p_flag = {id(t): p for t, p in zip(trajs, roles.veto.flag(env, trajs))}
    for t in trajs:
        groups[t.user.group].append(t)
    good, bad, n_vetoed = [], [], 0
    for name in sorted(groups):
        pool = groups[name]
        pool = [pool[i] for i in rng.permutation(len(pool))]  # random tie-break
        flags = [veto != "none" and vetoed(p_flag[id(t)], veto) for t in pool]
        n_vetoed += sum(flags)
        kept = [t for t, f in zip(pool, flags) if not f]
        k = math.ceil(len(pool) * frac)
        top = sorted(kept, key=lambda t: -t.reward)[:k]
        chosen = {id(t) for t in top}
        bottom_pool = pool if veto == "negative" else kept
        bottom = [t for t in sorted(bottom_pool, key=lambda t: t.reward) if id(t) not in chosen][:k]
        good += top
        bad += bottom
    return good, bad, n_vetoed


def turn_examples(fmt, trajs: Sequence[Trajectory], desirable: bool):
    """(prompt ids, completion ids, desirable) for every agent turn of every trajectory."""
    return [(fmt.encode(t.messages[i]), fmt.encode_reply(t.replies[i]), desirable)
            for t in trajs for i in range(len(t.replies))]  # fmt: skip


def safety_examples(fmt, n_env_examples: int, frac: float, rng: np.random.Generator):
    """n·f/(1 − f) static examples, half safe replies (desirable), half harmful (undesirable)."""
    if frac <= 0:
        return []
    m = round(n_env_examples * frac / (1 - frac))
    out = []
    for j in range(m):
        i = int(rng.integers(len(probes.SAFETY)))
        safe, harmful = probes.safety_replies(i)
        good = j % 2 == 0
        out.append(
            (
                fmt.encode(probes.safety_messages(i)),
                fmt.encode_reply(safe if good else harmful),
                good,
            )
        )
    return out


def learning_rate(opt: Optim, iteration: int, step: int, steps: int) -> float:
    lr = opt.lr * opt.lr_decay**iteration
    if opt.schedule == "cosine":
        return lr * 0.5 * (1 + math.cos(math.pi * step / max(1, steps)))
    return lr


def kto_epoch(
    model, examples, opt: Optim, iteration: int, pad_id: int, rng: np.random.Generator
) -> dict:
    """One epoch of KTO over the examples against a frozen copy of the model (or, with
    `opt.method == "ei"`, of expert iteration over the desirable ones)."""
    if opt.method == "ei":
        examples = [e for e in examples if e[2]]
    if not examples:
        return {"kto_steps": 0}
    ref = copy.deepcopy(model).eval().requires_grad_(False)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=opt.lr, weight_decay=opt.weight_decay)
    n_d = sum(e[2] for e in examples)
    w_u = undesirable_weight(n_d, len(examples) - n_d, opt.target_ratio)
    order = rng.permutation(len(examples))
    batches = [order[i : i + opt.batch_size] for i in range(0, len(order), opt.batch_size)]
    losses = []
    for step, idx in enumerate(batches):
        for g in optimizer.param_groups:
            g["lr"] = learning_rate(opt, iteration, step, len(batches))
        chosen = [examples[i] for i in idx]
        batch = collate(
            [e[0] for e in chosen], [e[1] for e in chosen], [bool(e[2]) for e in chosen], pad_id
        )
        if opt.method == "ei":
            stats = ei_step(model, batch, optimizer, opt.max_grad_norm)
        else:
            stats = kto_step(model, ref, batch, optimizer, beta=opt.beta, desirable_weight=1.0,
                             undesirable_weight=w_u, max_grad_norm=opt.max_grad_norm)  # fmt: skip
        losses.append(stats["loss"])
    model.eval()
    return {
        "kto_steps": len(batches),
        "kto_loss": float(np.mean(losses)),
        "n_desirable": int(n_d),
        "n_undesirable": int(len(examples) - n_d),
    }


# ---------------------------------------------------------------------------------------
# measurements


def summarise(env: EnvSpec, trajs: Sequence[Trajectory], veto: str) -> dict:
    """Per user type: mean reward, each judge metric as a band [lo, hi] (hi counts every
    trajectory with off-grammar text as possibly having the label), off-grammar share and
    veto-flag rate."""
    out = {}
    for kind in sorted({t.user.kind for t in trajs}):
        ts = [t for t in trajs if t.user.kind == kind]
        off = np.array([t.off_grammar for t in ts], dtype=float)
        judged = [judge(env, t) for t in ts]
        metrics = {}
        for m in judged[0]:
            v = np.array([j[m] for j in judged])
            metrics[m] = [float(v.mean()), float(np.maximum(v, off).mean())]
        flags = [flag_probability(env, t.acts) for t in ts]
        out[kind] = {
            "n": len(ts),
            "reward": float(np.mean([t.reward for t in ts])),
            "off_grammar": float(off.mean()),
            "metrics": metrics,
            "flag_rate": float(np.mean([vetoed(p, "binary" if veto == "none" else veto)
                                        for p in flags])),
        }  # fmt: skip
    return out


@torch.no_grad()
def first_sentence_probs(
    model, fmt, contexts: Sequence[list[dict]], sentences: Sequence[Sequence[str]], chunk: int = 256
) -> list[list[float]]:
    """Exact probabilities by teacher forcing: for each conversation, the probability that the
    reply's first sentence is each of its candidate sentences: the ids of the reply `s` without
    its end-of-turn token, a prefix of every reply opening with s (byte-level BPE splits a
    sentence from the one after it; tested)."""
    model.eval()
    prompts, completions, owners = [], [], []
    for c_i, (ctx, cands) in enumerate(zip(contexts, sentences)):
        prompt = fmt.encode(ctx)
        for s_i, sent in enumerate(cands):
            prompts.append(prompt)
            completions.append(fmt.encode_reply(sent)[:-1])
            owners.append((c_i, s_i))
    out = [[0.0] * len(c) for c in sentences]
    for i in range(0, len(prompts), chunk):
        b = collate(
            prompts[i : i + chunk],
            completions[i : i + chunk],
            [True] * len(prompts[i : i + chunk]),
            fmt.tokenizer.pad_id,
        )
        lp = sequence_logps(model, b.input_ids, b.attention_mask, b.completion_mask)
        for (c_i, s_i), v in zip(owners[i : i + chunk], lp.exp().tolist()):
            out[c_i][s_i] = v
    return out


def act_probabilities(model, fmt, env: EnvSpec, users: Sequence[User], acts: Sequence[str]) -> dict:
    """For each act, the mean over users of the summed probability that the reply's first
    sentence is one of its templates: the agent's propensity, with no sampling noise."""
    cands = [[(a, fill(t, u.slots)) for a in acts for t in env.act(a).templates] for u in users]
    probs = first_sentence_probs(
        model, fmt, [first_messages(env, u) for u in users], [[s for _, s in c] for c in cands]
    )
    return {a: float(np.mean([sum(p for (b, _), p in zip(c, ps) if b == a)
                              for c, ps in zip(cands, probs)])) for a in acts}  # fmt: skip
