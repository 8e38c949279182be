"""A task family: the tasks, the prompts of each method, and the verdicts.

Jones, Dragan & Steinhardt (2024) run each misuse task through a single model and through the
two decompositions (manual, automated). A `Family` is what `strategies` needs of a task
family to do the same for any pair of chat models:

- `tasks(n, rng)`: n tasks (each with a string `id`);
- `full_prompt(task)`: the whole request, as a user would send it to a single model;
- manual: `manual_frontier(task)` (the hard, benign part) and `manual_weak(task, reply)` (the
  easy flagged edit of the frontier's reply);
- automated: `decompose_prompt(task, m)` (the weak model proposes m related benign tasks),
  `parse_subtasks(task, reply, m)` (the frontier's prompts), `final_prompt(task, solved)`
  (the weak model answers with the frontier's solutions in context);
- `verify(task, reply) -> (success, artifact)`; `is_flagged(text)` (the text holds the
  artifact the policy forbids) and `is_refusal(text)`.

`policy` is the frontier's system prompt for LLMs (one policy, the same in every method);
the small models trained here read only the last user message and ignore it.
Every flagged artifact is a harmless marker that a policy forbids: no family asks for or
produces real malicious content.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Family(Protocol):
    name: str
    methods: tuple[str, ...]  # the combination methods it defines: "manual", "automated"
    policy: str | None  # the frontier's system prompt (LLMs), None for the tiny models
    max_tokens: int  # the reply budget of one call

    def tasks(self, n: int, rng: np.random.Generator) -> list[Any]: ...

    def task_id(self, task: Any) -> str: ...

    def full_prompt(self, task: Any) -> str: ...

    def manual_frontier(self, task: Any) -> str: ...

    def manual_weak(self, task: Any, frontier_reply: str) -> str: ...

    def decompose_prompt(self, task: Any, m: int) -> str: ...

    def parse_subtasks(self, task: Any, reply: str, m: int) -> list[str]: ...

    def final_prompt(self, task: Any, solved: Sequence[tuple[str, str]]) -> str: ...

    def verify(self, task: Any, reply: str) -> tuple[bool, str]: ...

    def is_flagged(self, text: str) -> bool: ...

    def is_refusal(self, text: str) -> bool: ...


FAMILIES = ("chains", "canary_code", "flag_script", "tailored_message")


def make_family(name: str, **options: Any) -> Family:
    """The family called `name` (`FAMILIES`), built with its options, or one error listing
    the valid names."""
    from alignlab.core.errors import check_choice

    check_choice("family", name, FAMILIES)
    if name == "chains":
        from alignlab.model_combos.chains import ChainFamily

        return ChainFamily(**options)
    from alignlab.model_combos import families

    return families.FAMILY_CLASSES[name](**options)
