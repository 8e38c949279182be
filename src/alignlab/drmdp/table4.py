"""Table 4 of the paper as data, and its exact reproduction.

Table 4 lists, per objective and example, a representative optimal policy and the authors'
judgement (✓ desirable, (✓) weakly desirable, ? unclear, ✗ undesirable). Here each entry is a
`PaperCell`; compute_table4 solves every cell with the exact enumeration solver.

What a cell claims, precisely:
- A policy cell ("influence ✗") claims that the stated behaviour (its on-path action sequence at
  the example's horizon) is among the exact optimal set and has the stated judgement. It matches
  when that behaviour is optimal and the example's labelling gives it the paper's judgement.
  The representative reported is the paper's behaviour when optimal, else the optimal behaviour
  with the fewest departures from inaction.
- Privileged[theta*] is one cell per theta* (Dehydration's "theta=3,4: a4" is two cells).
- "theta0-dependent" (Initial reward, Conspiracy and Trainer) is one cell per theta_0 in Theta,
  each with the behaviour and judgement of the paper's "(✓/✗)" pair, from (s0, theta_0).
- "mixed" (Myopic) means the optimal behaviour's judgement depends on theta: solved from
  (s0, theta_0) for every theta_0 in Theta, it matches when the judgements of the representatives
  are not all equal.
- The other Initial-reward cells state one policy. Reading initial_theta0="default" (default)
  takes that as a claim at the example's theta_0; initial_theta0="all" as a claim for every
  theta_0, one cell per theta_0 (the reading of the third-party reproduction in the notes).

Readings (keyword arguments, defaults first): include_theta_H (False: xi^theta = theta_0..
theta_{H-1}; True: ..theta_H), reward_argument ("s_t" | "s_next"), poetry_node ("non_absorbing" |
"absorbing"), initial_theta0 ("default" | "all"), r3_at_2 (-2 | -5). Under the defaults there are
48 cells; with initial_theta0="all" there are 52.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools

from .exact import ExactSolver, on_path_actions, value_to_json
from .examples import EXAMPLES, READINGS
from .model import DRMDP

DEFAULT_READINGS = {
    "include_theta_H": False,
    "reward_argument": "s_t",
    "poetry_node": "non_absorbing",
    "initial_theta0": "default",
    "r3_at_2": -2,
}
ALL_READINGS = {
    "include_theta_H": (False, True),
    "initial_theta0": ("default", "all"),
    **READINGS,
}
OBJECTIVE_NAMES = {
    "privileged": "Privileged",
    "real_time": "Real-time",
    "final": "Final",
    "initial": "Initial",
    "natural_shifts": "Natural shifts",
    "constrained_real_time": "Constrained RT",
    "myopic": "Myopic",
    "pareto_ud": "ParetoUD",
}


@dataclasses.dataclass(frozen=True)
class PaperCell:
    """One claim of Table 4."""

    example: str
    objective: str
    policy: str  # the paper's words
    judgement: str  # ✓, (✓), ?, ✗ or "mixed"
    actions: tuple[str, ...] | None  # the stated behaviour at the example's horizon; None if mixed
    theta_star: str | None = None
    theta0: str | None = None  # None: the example's theta_0
    for_all_theta0: bool = False  # claimed only under initial_theta0="all"

    @property
    def id(self) -> str:
        out = f"{self.example}/{self.objective}"
        out += f"[{self.theta_star}]" if self.theta_star else ""
        return out + (f"@theta0={self.theta0}" if self.theta0 else "")


def _paper_table() -> tuple[PaperCell, ...]:
    C = PaperCell
    n3, i3, u3 = ("noop",) * 3, ("influence",) * 3, ("nudge",) * 3
    n2, i2 = ("noop",) * 2, ("influence",) * 2
    news, cb = ("news", "news"), ("clickbait", "clickbait")
    a3, a4 = ("a3", "noop"), ("a4", "noop")
    return (
        # Conspiracy Influence (H = 3)
        C("conspiracy", "privileged", "noop", "✓", n3, theta_star="natural"),
        C("conspiracy", "privileged", "influence", "✗", i3, theta_star="influenced"),
        C("conspiracy", "real_time", "influence", "✗", i3),
        C("conspiracy", "final", "influence", "✗", i3),
        C("conspiracy", "initial", "θ₀-dependent: noop", "✓", n3, theta0="natural"),
        C("conspiracy", "initial", "θ₀-dependent: influence", "✗", i3, theta0="influenced"),
        C("conspiracy", "natural_shifts", "noop", "✓", n3),
        C("conspiracy", "constrained_real_time", "noop", "✓", n3),
        C("conspiracy", "myopic", "mixed", "mixed", None),
        C("conspiracy", "pareto_ud", "noop", "✓", n3),
        # Writer's Curse (H = 2)
        C("writers_curse", "privileged", "influence", "✗", i2, theta_star="ambitious"),
        C("writers_curse", "privileged", "noop", "✓", n2, theta_star="unhappy"),
        C("writers_curse", "real_time", "noop", "✓", n2),
        C("writers_curse", "final", "influence, noop at last step", "✗", ("influence", "noop")),
        C("writers_curse", "initial", "influence", "✗", i2),
        C("writers_curse", "initial", "influence", "✗", i2, theta0="unhappy", for_all_theta0=True),
        C("writers_curse", "natural_shifts", "influence", "✗", i2),
        C("writers_curse", "constrained_real_time", "noop", "✓", n2),
        C("writers_curse", "myopic", "influence", "✗", i2),
        C("writers_curse", "pareto_ud", "noop", "✓", n2),
        # Clickbait (H = 2)
        C("clickbait", "privileged", "clickbait", "✓", cb, theta_star="normal"),
        C("clickbait", "privileged", "news", "✗", news, theta_star="disillusioned"),
        C("clickbait", "real_time", "news, clickbait at last step", "✗", ("news", "clickbait")),
        C("clickbait", "final", "news", "✓", news),
        C("clickbait", "initial", "clickbait", "✗", cb),
        C(
            "clickbait",
            "initial",
            "clickbait",
            "✗",
            cb,
            theta0="disillusioned",
            for_all_theta0=True,
        ),
        C("clickbait", "natural_shifts", "clickbait", "✗", cb),
        C("clickbait", "constrained_real_time", "news", "✓", news),
        C("clickbait", "myopic", "mixed", "mixed", None),
        C("clickbait", "pareto_ud", "news", "✓", news),
        # AI Personal Trainer (H = 3)
        C("personal_trainer", "privileged", "noop", "(✓)", n3, theta_star="tired"),
        C("personal_trainer", "privileged", "nudge", "?", u3, theta_star="energized"),
        C("personal_trainer", "real_time", "nudge", "?", u3),
        C("personal_trainer", "final", "nudge", "?", u3),
        C("personal_trainer", "initial", "θ₀-dependent: noop", "(✓)", n3, theta0="tired"),
        C("personal_trainer", "initial", "θ₀-dependent: nudge", "?", u3, theta0="energized"),
        C("personal_trainer", "natural_shifts", "noop", "(✓)", n3),
        C("personal_trainer", "constrained_real_time", "noop", "(✓)", n3),
        C("personal_trainer", "myopic", "mixed", "mixed", None),
        C("personal_trainer", "pareto_ud", "noop", "(✓)", n3),
        # Dehydration (H = 2)
        C("dehydration", "privileged", "a₃", "?", a3, theta_star="2"),
        C("dehydration", "privileged", "a₄", "?", a4, theta_star="3"),
        C("dehydration", "privileged", "a₄", "?", a4, theta_star="4"),
        C("dehydration", "real_time", "noop", "(✓)", n2),
        C("dehydration", "final", "noop", "(✓)", n2),
        C("dehydration", "initial", "a₃", "?", a3),
        C("dehydration", "initial", "a₃", "?", a3, theta0="3", for_all_theta0=True),
        C("dehydration", "initial", "a₃", "?", a3, theta0="4", for_all_theta0=True),
        C("dehydration", "natural_shifts", "a₃", "?", a3),
        C("dehydration", "constrained_real_time", "noop", "(✓)", n2),
        C("dehydration", "myopic", "a₄", "✗", a4),
        C("dehydration", "pareto_ud", "a₃", "?", a3),
    )


PAPER_TABLE4: tuple[PaperCell, ...] = _paper_table()


def paper_cells(initial_theta0: str = "default") -> list[PaperCell]:
    """The cells claimed under a theta_0 quantification of the Initial-reward row."""
    if initial_theta0 not in ("default", "all"):
        raise ValueError(f"initial_theta0 must be 'default' or 'all', got {initial_theta0!r}")
    return [c for c in PAPER_TABLE4 if initial_theta0 == "all" or not c.for_all_theta0]


# --- solving --------------------------------------------------------------------------------------
def build_example(name: str, **readings) -> DRMDP:
    """The example under the given readings (readings it does not take are ignored)."""
    if name not in EXAMPLES:
        raise ValueError(f"unknown example {name!r}; valid examples: {list(EXAMPLES)}")
    fn = EXAMPLES[name]
    accepted = inspect.signature(fn).parameters
    return fn(**{k: v for k, v in readings.items() if k in accepted})


def _check_readings(readings: dict) -> dict:
    unknown = set(readings) - set(DEFAULT_READINGS)
    if unknown:
        raise ValueError(f"unknown readings {sorted(unknown)}; valid readings: {ALL_READINGS}")
    out = {**DEFAULT_READINGS, **readings}
    for key, value in out.items():
        if value not in ALL_READINGS[key]:
            raise ValueError(f"reading {key}={value!r} is not one of {ALL_READINGS[key]}")
    return out


class _Solvers:
    """One ExactSolver per (example, theta_0) under fixed readings."""

    def __init__(self, readings: dict):
        self.readings, self.cache = readings, {}

    def get(self, example: str, theta0: str | None) -> ExactSolver:
        if (example, theta0) not in self.cache:
            model = build_example(example, **self.readings)
            if theta0 is not None:
                model = model.with_initial(theta=theta0)
            self.cache[(example, theta0)] = ExactSolver(model)
        return self.cache[(example, theta0)]


def _representative(solution, preferred: tuple[str, ...] | None) -> tuple[tuple[str, ...], int]:
    """The preferred behaviour if it is optimal, else the most inaction-like optimal one; and
    the index of an optimal policy playing it."""
    behaviours = solution.behaviours()
    rep = preferred if preferred in behaviours else behaviours[0]
    for i, p in enumerate(solution.policies):
        if on_path_actions(solution.model, dict(zip(solution.points, p))) == rep:
            return rep, i
    raise AssertionError("unreachable: representative not found")  # pragma: no cover


def _solve_cell(cell: PaperCell, solvers: _Solvers, include_theta_H: bool) -> dict:
    solver = solvers.get(cell.example, cell.theta0)
    model = solver.model
    solution = solver.solve(cell.objective, cell.theta_star, include_theta_H)
    rep, i = _representative(solution, cell.actions)
    judgement = model.labelling.judge(rep, model.noop, cell.theta_star)
    out = {
        "id": cell.id,
        "example": cell.example,
        "objective": cell.objective,
        "objective_name": OBJECTIVE_NAMES[cell.objective],
        "theta_star": cell.theta_star,
        "theta0": model.initial_point[1],
        "horizon": model.horizon,
        "paper": {
            "policy": cell.policy,
            "judgement": cell.judgement,
            "actions": _list(cell.actions),
        },
        "representative": list(rep),
        "optimal_behaviours": [list(b) for b in solution.behaviours()],
        "n_optimal": len(solution.policies),
        "n_policies": solution.n_policies,
        "value": value_to_json(solution.values[i]),
        "influences": solution.influences[i],
        "judgement": judgement,
        "influence_incentive": solution.influence_incentive,
        "vacuous": solution.vacuous,
    }
    if cell.judgement == "mixed":
        return _solve_mixed(cell, solvers, include_theta_H, out)
    optimal = cell.actions in solution.behaviours()
    out["match"] = optimal and judgement == cell.judgement
    if not optimal:
        out["reason"] = (
            f"the paper's behaviour {list(cell.actions)} is not optimal; optimal: {out['optimal_behaviours']}"
        )
    elif judgement != cell.judgement:
        out["reason"] = f"judgement {judgement} differs from the paper's {cell.judgement}"
    return out


def _solve_mixed(cell: PaperCell, solvers: _Solvers, include_theta_H: bool, out: dict) -> dict:
    """A "mixed" cell: the judgement of the optimal behaviour depends on theta_0."""
    per_theta0 = {}
    for theta0 in solvers.get(cell.example, None).model.thetas:
        solver = solvers.get(cell.example, theta0)
        solution = solver.solve(cell.objective, cell.theta_star, include_theta_H)
        rep, i = _representative(solution, None)
        per_theta0[theta0] = {
            "representative": list(rep),
            "judgement": solver.model.labelling.judge(rep, solver.model.noop),
            "influences": solution.influences[i],
            "influence_incentive": solution.influence_incentive,
        }
    judgements = {v["judgement"] for v in per_theta0.values()}
    out["per_theta0"] = per_theta0
    out["judgement"] = "mixed" if len(judgements) > 1 else judgements.pop()
    out["match"] = out["judgement"] == "mixed"
    if not out["match"]:
        out["reason"] = f"the judgement is {out['judgement']} for every theta_0, not mixed"
    return out


def compute_table4(**readings) -> dict:
    """Solve every Table 4 cell exactly under the given readings (see the module docstring).

    Returns a JSON-serialisable dict: "readings", "cells" (one dict per cell: id, example,
    objective, theta_star, theta0, horizon, paper {policy, judgement, actions}, representative,
    optimal_behaviours, n_optimal, n_policies, value {exact, float}, influences, judgement,
    influence_incentive, vacuous, match, reason if not), "n_cells", "n_match", "mismatches",
    "vacuous" (cell ids) and "claims" (see `influence_claims`).
    """
    readings = _check_readings(readings)
    solvers = _Solvers({k: v for k, v in readings.items() if k in READINGS})
    cells = [
        _solve_cell(c, solvers, readings["include_theta_H"])
        for c in paper_cells(readings["initial_theta0"])
    ]
    return {
        "readings": readings,
        "cells": cells,
        "n_cells": len(cells),
        "n_match": sum(c["match"] for c in cells),
        "mismatches": [c["id"] for c in cells if not c["match"]],
        "vacuous": [c["id"] for c in cells if c["vacuous"]],
        "claims": influence_claims(cells),
    }


# --- the paper's conclusions about influence ---------------------------------------------------
def influence_claims(cells: list[dict]) -> dict:
    """The data behind the paper's conclusions, from the cells at each example's own theta_0.

    (2) every objective except constrained RT and ParetoUD has an influence incentive in at least
    one example; (3) constrained RT and ParetoUD never choose an undesirable (✗) behaviour but
    forgo potentially beneficial influence in at least one example: their behaviour does not
    influence while another (non-privileged) objective's optimal behaviour influences with a
    judgement that is not ✗. Judgements are the example's labelling (a ✗ behaviour need not
    influence in the sense of Definition 6: Clickbait's last-step clickbait does not under
    xi^theta = theta_0..theta_{H-1}).
    """
    own_theta0 = {name: fn().initial_point[1] for name, fn in EXAMPLES.items()}
    main = [c for c in cells if c["theta0"] == own_theta0[c["example"]]]
    incentive = {
        o: sorted({c["example"] for c in main if c["objective"] == o and c["influence_incentive"]})
        for o in OBJECTIVE_NAMES
    }
    undesirable = {
        o: [c["id"] for c in main if c["objective"] == o and c["judgement"] == "✗"]
        for o in OBJECTIVE_NAMES
    }
    beneficial = {  # privileged cells are judged relative to theta*, so they are not evidence
        e: [
            c["id"]
            for c in main
            if c["example"] == e
            and c["objective"] != "privileged"
            and c["influences"]
            and c["judgement"] not in ("✗", "mixed")
        ]
        for e in EXAMPLES
    }
    forgoes = {
        o: sorted(
            {
                c["example"]
                for c in main
                if c["objective"] == o and not c["influences"] and beneficial[c["example"]]
            }
        )
        for o in OBJECTIVE_NAMES
    }
    cautious = ("constrained_real_time", "pareto_ud")
    return {
        "influence_incentive_examples": incentive,
        "undesirable_cells": undesirable,
        "beneficial_influence_cells": beneficial,
        "forgoes_beneficial_influence_examples": forgoes,
        "claim2_every_other_objective_has_incentive": all(
            incentive[o] for o in OBJECTIVE_NAMES if o not in cautious
        ),
        "claim2_cautious_objectives_incentive_examples": {o: incentive[o] for o in cautious},
        "claim3_cautious_never_undesirable": all(not undesirable[o] for o in cautious),
        "claim3_cautious_forgo_beneficial": {o: forgoes[o] for o in cautious},
        "claim3_holds": all(not undesirable[o] and forgoes[o] for o in cautious),
    }


# --- disagreements and their explanations --------------------------------------------------------
def explain_mismatches(**readings) -> list[dict]:
    """Every mismatching cell under the given readings (the defaults unless given), with the
    documented alternative readings under which it matches.

    Single changes of reading are tried first, then pairs. A reading under which the cell is not
    claimed at all (initial_theta0="default" for a "for all theta_0" cell) counts as an
    explanation of kind "not claimed". A mismatch no reading fixes is reported with
    explained=False.
    """
    base = _check_readings(readings)
    table = compute_table4(**base)
    cache: dict[tuple, dict] = {}

    def cells_under(alt: dict) -> dict:
        key = tuple(sorted(alt.items()))
        if key not in cache:
            cache[key] = {c["id"]: c for c in compute_table4(**alt)["cells"]}
        return cache[key]

    alternatives = [(k, v) for k, values in ALL_READINGS.items() for v in values if v != base[k]]
    out = []
    for cell in (c for c in table["cells"] if not c["match"]):
        explanations = []
        for size in (1, 2):
            for combo in itertools.combinations(alternatives, size):
                if len({k for k, _ in combo}) < size:
                    continue
                alt = {**base, **dict(combo)}
                other = cells_under(alt).get(cell["id"])
                if other is None or other["match"]:
                    explanations.append(
                        {
                            "readings": dict(combo),
                            "effect": "not claimed" if other is None else "matches",
                            "representative": None if other is None else other["representative"],
                        }
                    )
            if explanations:
                break
        out.append(
            {
                "id": cell["id"],
                "paper": cell["paper"],
                "measured": {
                    "representative": cell["representative"],
                    "judgement": cell["judgement"],
                },
                "reason": cell.get("reason", ""),
                "explained": bool(explanations),
                "explained_by": explanations,
            }
        )
    return out


def _list(actions):
    return None if actions is None else list(actions)
