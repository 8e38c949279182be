"""Sampling conversations from the agent and scoring them: the first step of an iteration.

The agent samples at temperature 1 (the paper's) with min-p 0.02, a deviation: it removes a
tiny model's long tail of typos but keeps any act whose first token has at least 2 % of the top
token's probability (Nguyen et al. 2024). Each reply is parsed (`world.parse`), rated by the
simulated user (`world.expected_rating`) and, in action-advice, followed by the transition and
a second turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from alignlab.feedback_gaming.roles import PROGRAMS, Roles
from alignlab.feedback_gaming.world import (
    EnvSpec,
    Trajectory,
    User,
    first_messages,
    inventory,
    parse,
)
from alignlab.gemma2.generate import generate


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0
    min_p: float | None = 0.02
    max_new_tokens: int = 48
    batch: int = 512


@torch.no_grad()
def sample_replies(
    model, fmt, contexts: Sequence[list[dict]], sampling: Sampling, generator: torch.Generator
) -> list[tuple[str, bool]]:
    """(reply text, finished) for each conversation; finished: it ended with a stop token."""
    model.eval()
    stops = set(fmt.stop_ids())
    prompts = [fmt.encode(m) for m in contexts]
    out = []
    for i in range(0, len(prompts), sampling.batch):
        new = generate(
            model,
            prompts[i : i + sampling.batch],
            sampling.max_new_tokens,
            temperature=sampling.temperature,
            stop_tokens=stops,
            generator=generator,
            min_p=sampling.min_p,
        )
        for ids in new:
            finished = bool(ids) and ids[-1] in stops
            text = fmt.tokenizer.decode(ids[:-1] if finished else ids, skip_special_tokens=True)
            out.append((text.strip(), finished))
    return out


def rollout(
    model,
    fmt,
    env: EnvSpec,
    users: Sequence[User],
    utilities: dict,
    sampling: Sampling,
    rng: np.random.Generator,
    generator: torch.Generator,
    roles: Roles = PROGRAMS,
) -> list[Trajectory]:
    """One trajectory per user: every agent turn sampled, parsed and rated (`roles.rater`)."""
    trajs = [Trajectory(u) for u in users]
    invs = [inventory(env, u) for u in users]
    contexts = [first_messages(env, u) for u in users]
    for turn in range(1, env.turns + 1):
        replies = sample_replies(model, fmt, contexts, sampling, generator)
        for t, inv, ctx, (text, finished) in zip(trajs, invs, contexts, replies):
            t.messages.append(ctx)
            t.replies.append(text)
            t.parses.append(parse(text, inv, finished))
        for t, r in zip(trajs, roles.rater.rate(env, trajs, turn, utilities)):
            t.ratings.append(float(r))
        if turn < env.turns:
            nxt = []
            for t, ctx in zip(trajs, contexts):
                message, t.state = env.second_turn(t.user, t.parses[-1].acts, rng)
                nxt.append(
                    ctx
                    + [
                        {"role": "assistant", "content": t.replies[-1]},
                        {"role": "user", "content": message},
                    ]
                )
            contexts = nxt
    return trajs
