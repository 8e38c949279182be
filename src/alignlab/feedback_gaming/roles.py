"""Who rates, vetoes and judges: programs by default, or any `ChatModel` (`backends`).

The paper's roles (the repo's README: agent, user/character, feedback (rater), transition,
veto/influence detector, retroactive judges) are interfaces here, so the training loop does not
care which plays them. The defaults are the grammar world's programs (`world`):

- `ProgramRater`: μ from the act utilities, then E[s] over p(s) ∝ exp(−(s − μ)² / 4.5);
- `ProgramVeto`: P(flag) = 1 − Π(1 − p_act), with the blind spot for omission and nudging;
- the judges are `world.judge` (exact labels from the parse).

`backends.llm_roles` builds the same roles from LLMs behind an OpenAI-compatible endpoint with
the repo's prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from alignlab.feedback_gaming.world import (
    EnvSpec,
    Trajectory,
    expected_rating,
    flag_probability,
    mean_score,
)


class Rater(Protocol):
    def rate(
        self, env: EnvSpec, trajs: Sequence[Trajectory], turn: int, utilities: dict
    ) -> np.ndarray:
        """The expected rating of each trajectory's reply at `turn` (1-based, just appended)."""


class Veto(Protocol):
    def flag(self, env: EnvSpec, trajs: Sequence[Trajectory]) -> np.ndarray:
        """P(flag) of each whole trajectory."""


class ProgramRater:
    name = "program"

    def rate(self, env, trajs, turn, utilities):
        mus = [mean_score(env, t.user, t.parses[turn - 1], turn, t.state, utilities) for t in trajs]
        return expected_rating(np.array(mus, dtype=np.float64))


class ProgramVeto:
    name = "program"

    def flag(self, env, trajs):
        return np.array([flag_probability(env, t.acts) for t in trajs])


@dataclass(frozen=True)
class Roles:
    rater: Rater
    veto: Veto

    @property
    def description(self) -> str:
        return f"rater: {self.rater.name}, veto: {self.veto.name}"


PROGRAMS = Roles(ProgramRater(), ProgramVeto())
