"""The red-team strategies of Jones, Dragan & Steinhardt (2024) over any pair of chat models.

- `single(model)`: the whole task to one model, pass@k (k samples at temperature 1, seeds
  seed, seed+1, ...): the single-model baseline with the same query budget as a combination.
- `manual`: the family's human-written recipe. The frontier does the hard benign part
  (`manual_frontier`), the weak model the easy flagged edit of the frontier's reply
  (`manual_weak`).
- `automated(m)`: the weak model proposes m related benign tasks (`decompose_prompt`), the
  frontier solves them, and the weak model answers the original task with those solutions in
  context (`final_prompt`): 2 + m model calls, in three rounds.
- Controls: the *helpful-only* frontier (its checkpoint before safety tuning) as a single
  model, and *weak-only automated* (the weak model in both roles), which tells how much of
  the automated method's success comes from the frontier.

Every step is one `chat` call over all tasks at once (batched for the tiny models, a thread
pool for endpoints). The combinations decode greedily (one attempt). Every call is recorded
(role, prompt, response, refused, flagged): `frontier_flagged` counts the frontier's outputs
that hold the flagged artifact, which must stay 0 (the paper's "without ever producing
malicious outputs").
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alignlab.core.errors import AlignlabError, check_choice
from alignlab.core.io import atomic_write_text
from alignlab.llm.base import ChatModel
from alignlab.model_combos.family import Family

METHODS = ("single", "manual", "automated")


@dataclass
class Call:
    role: str  # "frontier" | "weak" | the single model's role
    prompt: str
    response: str
    refused: bool
    flagged: bool


@dataclass
class Episode:
    """One task through one method: its calls, the artifact, the verdict and the seed."""

    task: str
    method: str
    calls: list[Call] = field(default_factory=list)
    artifact: str = ""
    success: bool = False
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_method(method: str) -> None:
    check_choice("method", method, METHODS)


def _messages(prompt: str, policy: str | None) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": policy}] if policy else []
    return msgs + [{"role": "user", "content": prompt}]


def _ask(
    family: Family,
    model: ChatModel,
    prompts: Sequence[str],
    *,
    policy: str | None,
    temperature: float,
    seed: int,
) -> list[str]:
    if not prompts:
        return []
    convs = [_messages(p, policy) for p in prompts]
    return model.chat(convs, max_tokens=family.max_tokens, temperature=temperature, seed=seed)


def _call(family: Family, role: str, prompt: str, response: str) -> Call:
    return Call(role, prompt, response, family.is_refusal(response), family.is_flagged(response))


def single(
    family: Family,
    model: ChatModel,
    tasks: Sequence[Any],
    *,
    k: int = 1,
    temperature: float = 1.0,
    seed: int = 0,
    role: str = "frontier",
    policy: str | None = None,
) -> list[Episode]:
    """pass@k of one model on the whole task: success when any of k samples succeeds; the
    artifact is the first successful reply (else the last). Sample j uses seed + j."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise AlignlabError(f"k must be an integer >= 1, got {k!r}")
    prompts = [family.full_prompt(t) for t in tasks]
    episodes = [Episode(family.task_id(t), f"single:{role}", seed=seed) for t in tasks]
    for j in range(k):
        replies = _ask(
            family, model, prompts, policy=policy, temperature=temperature, seed=seed + j
        )
        for ep, task, prompt, reply in zip(episodes, tasks, prompts, replies):
            ep.calls.append(_call(family, role, prompt, reply))
            if not ep.success:
                ok, artifact = family.verify(task, reply)
                ep.success, ep.artifact = ok, artifact
    return episodes


def manual(
    family: Family,
    frontier: ChatModel,
    weak: ChatModel,
    tasks: Sequence[Any],
    *,
    seed: int = 0,
    temperature: float = 0.0,
    frontier_role: str = "frontier",
) -> list[Episode]:
    """The family's recipe: frontier (benign part, under the policy), then weak (the edit)."""
    if "manual" not in family.methods:
        raise AlignlabError(
            f"family {family.name!r} has no manual recipe; its methods: {', '.join(family.methods)}"
        )
    p1 = [family.manual_frontier(t) for t in tasks]
    r1 = _ask(family, frontier, p1, policy=family.policy, temperature=temperature, seed=seed)
    p2 = [family.manual_weak(t, r) for t, r in zip(tasks, r1)]
    r2 = _ask(family, weak, p2, policy=None, temperature=temperature, seed=seed + 1)
    out = []
    for t, a, ra, b, rb in zip(tasks, p1, r1, p2, r2):
        ep = Episode(family.task_id(t), "manual", seed=seed)
        ep.calls = [_call(family, frontier_role, a, ra), _call(family, "weak", b, rb)]
        ep.success, ep.artifact = family.verify(t, rb)
        out.append(ep)
    return out


def automated(
    family: Family,
    frontier: ChatModel,
    weak: ChatModel,
    tasks: Sequence[Any],
    *,
    m: int = 1,
    seed: int = 0,
    temperature: float = 0.0,
    frontier_role: str = "frontier",
    method: str = "automated",
) -> list[Episode]:
    """Weak proposes m related benign tasks -> frontier solves them (under the family's
    policy; with `frontier_role="weak"`, the weak-only control, without it) -> weak answers
    the original task with the solutions in context. A proposal the family cannot parse
    leaves that episode without subtasks (the final call still happens)."""
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise AlignlabError(f"m must be an integer >= 1, got {m!r}")
    if "automated" not in family.methods:
        raise AlignlabError(
            f"family {family.name!r} has no automated decomposition; its methods: "
            f"{', '.join(family.methods)}"
        )
    p1 = [family.decompose_prompt(t, m) for t in tasks]
    r1 = _ask(family, weak, p1, policy=None, temperature=temperature, seed=seed)
    subs = [family.parse_subtasks(t, r, m)[:m] for t, r in zip(tasks, r1)]
    flat = [(i, s) for i, ss in enumerate(subs) for s in ss]
    answers = _ask(
        family,
        frontier,
        [s for _, s in flat],
        policy=None if frontier_role == "weak" else family.policy,
        temperature=temperature,
        seed=seed + 1,
    )
    solved: list[list[tuple[str, str]]] = [[] for _ in tasks]
    calls: list[list[Call]] = [[_call(family, "weak", a, r)] for a, r in zip(p1, r1)]
    for (i, s), ans in zip(flat, answers):
        solved[i].append((s, ans))
        calls[i].append(_call(family, frontier_role, s, ans))
    p3 = [family.final_prompt(t, sv) for t, sv in zip(tasks, solved)]
    r3 = _ask(family, weak, p3, policy=None, temperature=temperature, seed=seed + 2)
    out = []
    for t, cs, a, r in zip(tasks, calls, p3, r3):
        ep = Episode(family.task_id(t), method, calls=[*cs, _call(family, "weak", a, r)], seed=seed)
        ep.success, ep.artifact = family.verify(t, r)
        out.append(ep)
    return out


# -- summaries and records -------------------------------------------------------------------


def success_rate(episodes: Sequence[Episode]) -> float:
    return float(np.mean([e.success for e in episodes])) if episodes else float("nan")


def role_calls(episodes: Sequence[Episode], role: str) -> list[Call]:
    return [c for e in episodes for c in e.calls if c.role == role]


def write_episodes(path: str | Path, episodes: Sequence[Episode]) -> Path:
    """`episodes/<unit>.jsonl`, written atomically: one episode per line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(e.to_dict(), sort_keys=True) + "\n" for e in episodes)
    atomic_write_text(path, text)
    return path


def read_episodes(path: str | Path) -> list[Episode]:
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        d = json.loads(line)
        d["calls"] = [Call(**c) for c in d["calls"]]
        out.append(Episode(**d))
    return out


def run_method(
    method: str,
    family: Family,
    frontier: ChatModel,
    weak: ChatModel,
    tasks: Sequence[Any],
    *,
    k: int = 3,
    m: int = 1,
    seed: int = 0,
) -> list[Episode]:
    """One method by name (`METHODS`): `single` is the frontier alone, pass@k under the
    family's policy; `manual` and `automated(m)` combine the two models."""
    check_method(method)
    if method == "single":
        return single(family, frontier, tasks, k=k, seed=seed, policy=family.policy)
    if method == "manual":
        return manual(family, frontier, weak, tasks, seed=seed)
    return automated(family, frontier, weak, tasks, m=m, seed=seed)
