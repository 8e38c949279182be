"""The experiment registry: a name, a paper, three presets, a run function and its claims.

A system registers its experiments in `<system>/experiments.py`:

    register(Experiment(
        name="drmdp.table4", paper="Carroll et al. 2024", description="...",
        config=Table4Config, presets={"smoke": ..., "quick": ..., "paper": ...},
        run=run_table4, claims=[Claim(...)], plots=plot_table4))

`run(ctx)` receives a `RunContext` (`core.context`: config, seed, rng, device, metrics log,
checkpoints, progress, stages) and returns a JSON-serialisable results dict; `core.units`
runs its independent units. `plots(results, ctx)` is optional and draws figures from results
alone, so a report can be rebuilt without re-running.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from alignlab.core.claims import Claim
from alignlab.core.config import PRESETS
from alignlab.core.errors import AlignlabError, did_you_mean

#: the system packages, in the order of ARCHITECTURE.md; a package registers its
#: experiments when its `experiments` module is imported.
SYSTEMS = (
    "drmdp",
    "cmd",
    "esr",
    "gemma2",
    "gemmascope",
    "feedback_gaming",
    "langfeedback",
    "copac",
    "t2i",
    "model_combos",
)


@dataclass(frozen=True)
class Experiment:
    name: str  # "<system>.<short name>"
    paper: str
    description: str  # one line
    config: type  # a dataclass type
    presets: dict[str, Any]  # preset name -> config instance
    run: Callable[[Any], dict[str, Any]]
    claims: list[Claim] = field(default_factory=list)
    plots: Callable[[dict[str, Any], Any], None] | None = None
    #: work in progress: its claims do not reproduce yet, so `alignlab reproduce` leaves it
    #: out unless `--only` names its system; `alignlab list` marks it
    wip: bool = False
    #: checks what the run needs from outside the project (e.g. endpoint variables) and
    #: raises one AlignlabError naming it; called before anything is written, and by
    #: `alignlab reproduce`, which leaves out (and names) an experiment whose check fails
    preflight: Callable[[Any], None] | None = None
    #: a study (a grid of runs for one question, hours long): `alignlab reproduce` never runs
    #: it, not even with `--only`, and names it; `alignlab run` does, a slice at a time
    study: bool = False

    def __post_init__(self):
        if "." not in self.name:
            raise ValueError(f"experiment name {self.name!r} must be '<system>.<name>'")
        missing = [p for p in PRESETS if p not in self.presets]
        if missing:
            raise ValueError(f"experiment {self.name} lacks presets {missing}")
        for p, cfg in self.presets.items():
            if not isinstance(cfg, self.config):
                raise ValueError(f"{self.name}: preset {p!r} is not a {self.config.__name__}")

    @property
    def system(self) -> str:
        return self.name.split(".", 1)[0]

    def preset(self, name: str) -> Any:
        if name not in self.presets:
            raise AlignlabError(
                f"Unknown preset {name!r} for {self.name}. Valid presets: {', '.join(self.presets)}."
            )
        return dataclasses.replace(self.presets[name])


_REGISTRY: dict[str, Experiment] = {}


def register(exp: Experiment) -> Experiment:
    if exp.name in _REGISTRY and _REGISTRY[exp.name] is not exp:
        raise ValueError(f"experiment {exp.name} is registered twice")
    _REGISTRY[exp.name] = exp
    return exp


def unregister(name: str) -> None:
    """Remove an experiment from the registry (tests and examples that register their own)."""
    _REGISTRY.pop(name, None)


def load_systems(systems: tuple[str, ...] = SYSTEMS) -> None:
    """Import each implemented system's `experiments` module (absent ones are skipped)."""
    for system in systems:
        try:
            importlib.import_module(f"alignlab.{system}.experiments")
        except ModuleNotFoundError as e:
            if e.name not in (f"alignlab.{system}", f"alignlab.{system}.experiments"):
                raise


def experiments(system: str | None = None) -> list[Experiment]:
    load_systems()
    return [e for e in _REGISTRY.values() if system is None or e.system == system]


def implemented_systems() -> list[str]:
    order = {s: i for i, s in enumerate(SYSTEMS)}
    return sorted({e.system for e in experiments()}, key=lambda s: (order.get(s, len(order)), s))


def get(name: str) -> Experiment:
    load_systems()
    if name not in _REGISTRY:
        hint = did_you_mean(name, _REGISTRY)
        raise AlignlabError(
            f"Unknown experiment {name!r}.{hint} Run `alignlab list` to see all "
            f"({len(_REGISTRY)} registered)."
        )
    return _REGISTRY[name]
