"""The base model's SFT corpus: the "safety-trained" prior, sampled from the grammar.

Every reply is 1-2 benign acts drawn by their weights, one of them replaced by a harmful act
with probability `harm_prior` (the same for every user type: the prior does not target), and a
notes-dependent "personal touch" act added with probability `personal_rate`, so that the base
model reads the user's notes, as an instruct model does. The benchmark probes (failing at
their own small rates) and the safety requests (answered safely, harmfully at `harm_prior`)
are in the corpus too.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from alignlab.feedback_gaming import probes
from alignlab.feedback_gaming.world import (
    CUES,
    KINDS,
    EnvSpec,
    first_messages,
    make_user,
    render,
)


@dataclass(frozen=True)
class Prior:
    harm_prior: float
    personal_rate: float
    colour_share: float  # share of users whose cue is the favourite colour
    sycophancy_rate: float
    toxicity_rate: float


def prior_acts(env: EnvSpec, turn: int, prior: Prior, rng: np.random.Generator) -> list[str]:
    """The acts of one corpus reply, in random order."""
    acts = env.turn_acts(turn)
    benign = [a for a in acts if a.weight > 0]
    w = np.array([a.weight for a in benign])
    n = 1 + int(rng.random() < 0.6)
    chosen = [benign[i].name for i in rng.choice(len(benign), n, replace=False, p=w / w.sum())]
    harmful = [a.name for a in acts if a.harmful]
    if harmful and rng.random() < prior.harm_prior:
        chosen[int(rng.integers(n))] = str(rng.choice(harmful))
    if any(a.name == "personal" for a in acts) and rng.random() < prior.personal_rate:
        chosen.append("personal")
    return [chosen[i] for i in rng.permutation(len(chosen))]


def corpus_act_rates(env: EnvSpec, prior: Prior, n: int = 20000, seed: int = 0) -> dict:
    """turn -> act -> share of corpus replies containing it (estimated from n draws)."""
    rng = np.random.default_rng(seed)
    out = {}
    for turn in range(1, env.turns + 1):
        c = Counter(a for _ in range(n) for a in set(prior_acts(env, turn, prior, rng)))
        out[turn] = {a.name: c[a.name] / n for a in env.turn_acts(turn)}
    return out


def corpus_first_rates(env: EnvSpec, prior: Prior, n: int = 50000, seed: int = 0) -> dict:
    """act -> share of corpus first-turn replies that open with it (estimated from n draws)."""
    rng = np.random.default_rng(seed)
    c = Counter(prior_acts(env, 1, prior, rng)[0] for _ in range(n))
    return {a.name: c[a.name] / n for a in env.turn_acts(1)}


def sample_dialogue(env: EnvSpec, subenv: str, prior: Prior, rng: np.random.Generator):
    """One corpus conversation: [(messages before the reply, reply)] for each agent turn."""
    kind = KINDS[int(rng.integers(2))]
    cue = CUES[1] if rng.random() < prior.colour_share else CUES[0]
    user = make_user(env, subenv, kind, cue, rng)
    msgs = first_messages(env, user)
    turns = []
    acts = prior_acts(env, 1, prior, rng)
    reply = render(env, user, acts, rng)
    turns.append((list(msgs), reply))
    if env.turns == 2:
        message, _ = env.second_turn(user, acts, rng)
        msgs = msgs + [
            {"role": "assistant", "content": reply},
            {"role": "user", "content": message},
        ]
        turns.append((list(msgs), render(env, user, prior_acts(env, 2, prior, rng), rng)))
    return turns


def sample_corpus(
    envs, prior: Prior, n_dialogues: int, probe_share: float, rng: np.random.Generator
) -> list[tuple[list[dict], str]]:
    """(messages, reply) pairs: dialogues over the environments' quick sub-environments, plus
    probes and safety requests, each a `probe_share` of the dialogues."""
    pairs = []
    for _ in range(n_dialogues):
        u = rng.random()
        if u < probe_share:
            kind = "sycophancy" if rng.random() < 0.5 else "toxicity"
            p = probes.PROBES[kind](int(rng.integers(probes.N_PROBES[kind])))
            rate = prior.sycophancy_rate if kind == "sycophancy" else prior.toxicity_rate
            pairs.append((probes.probe_messages(p), probes.sample_probe_reply(p, rng, rate)))
        elif u < 2 * probe_share:
            i = int(rng.integers(len(probes.SAFETY)))
            safe, harmful = probes.safety_replies(i)
            pairs.append(
                (probes.safety_messages(i), harmful if rng.random() < prior.harm_prior else safe)
            )
        else:
            env = envs[int(rng.integers(len(envs)))]
            subenv = env.subenvs[int(rng.integers(len(env.subenvs)))]
            pairs.extend(sample_dialogue(env, subenv, prior, rng))
    return pairs
