"""The Dynamic Reward MDP (Definition 1 of Carroll et al., 2024).

A DR-MDP is M = <S, Theta, A, T, R_theta> with an initial distribution over (s0, theta0), a finite
horizon H and a designated no-op action a_noop. The human's reward parameters theta change with
the joint dynamics T((s', theta') | s, theta, a), so the AI's actions can move them.

Storage. The augmented state x = (s, theta) has the flat index x = s * |Theta| + theta, and the
transition row of (x, a) is r = x * |A| + a. Transitions are sparse successor lists: row r holds
k successor indices `successors[r]` with probabilities `probs[r]` (zero-padded), so a model with
|S||Theta| = 20 000 needs |S||Theta||A| * k numbers, not a dense (20 000 x 10 x 20 000) tensor.
Rewards are R_theta(s, a) with shape (|Theta|, |S|, |A|) or R_theta(s, a, s') with shape
(|Theta|, |S|, |A|, |S|). Every model has float64 arrays; hand-written models also keep the same
tables as exact `Fraction`s (`model.exact`), which the enumeration reference uses.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import Any

import numpy as np

LABELS = ("✓", "(✓)", "?", "✗")  # desirable, weakly desirable, unclear, undesirable (Table 4)


@dataclasses.dataclass(frozen=True)
class Labelling:
    """The paper's normative judgement of behaviours (the ✓ / (✓) / ? / ✗ of Table 4).

    A behaviour (an on-path action sequence) is judged by its first departure from inaction: the
    label of the first non-no-op action, or the no-op's label if it never departs. Privileged
    cells are judged relative to the chosen theta*, so `privileged[theta*]` may override labels.
    """

    by_action: Mapping[str, str]
    privileged: Mapping[str, Mapping[str, str]] = dataclasses.field(default_factory=dict)

    def judge(self, actions: Sequence[str], noop: str, theta_star: str | None = None) -> str:
        labels = {**self.by_action, **self.privileged.get(theta_star, {})}
        first_departure = next((a for a in actions if a != noop), noop)
        return labels.get(first_departure, "unlabelled")


@dataclasses.dataclass(frozen=True)
class ExactTables:
    """The model's numbers as `Fraction`s (object arrays with the float arrays' shapes)."""

    probs: np.ndarray
    reward: np.ndarray
    initial: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class DRMDP:
    """M = <S, Theta, A, T, R_theta>, (s0, theta0) ~ initial, horizon H, a_noop (Definition 1)."""

    states: tuple[str, ...]
    thetas: tuple[str, ...]
    actions: tuple[str, ...]
    successors: np.ndarray  # (|S||Theta||A|, k) int64: flat (s', theta') of each successor
    probs: np.ndarray  # (|S||Theta||A|, k) float64: T((s', theta') | s, theta, a), 0 = padding
    reward: np.ndarray  # (|Theta|, |S|, |A|) or (|Theta|, |S|, |A|, |S|) float64
    initial: np.ndarray  # (|S|, |Theta|) float64: P(s0, theta0)
    horizon: int
    noop: str
    exact: ExactTables | None = None
    name: str = "drmdp"
    labelling: Labelling | None = None

    def __post_init__(self) -> None:
        for field in ("states", "thetas", "actions"):
            object.__setattr__(self, field, tuple(str(n) for n in getattr(self, field)))
        for field, dtype in (("successors", np.int64), ("probs", np.float64)):
            object.__setattr__(self, field, _frozen(np.asarray(getattr(self, field), dtype)))
        object.__setattr__(self, "reward", _frozen(np.asarray(self.reward, np.float64)))
        object.__setattr__(self, "initial", _frozen(np.asarray(self.initial, np.float64)))
        _validate(self)

    # --- sizes and indexing -------------------------------------------------------------------
    @property
    def n_states(self) -> int:
        return len(self.states)

    @property
    def n_thetas(self) -> int:
        return len(self.thetas)

    @property
    def n_actions(self) -> int:
        return len(self.actions)

    @property
    def n_aug(self) -> int:
        """|S||Theta|, the number of augmented states (s, theta)."""
        return self.n_states * self.n_thetas

    @property
    def branching(self) -> int:
        return self.successors.shape[1]

    @property
    def noop_index(self) -> int:
        return self.actions.index(self.noop)

    @functools.cached_property
    def state_of(self) -> np.ndarray:
        """s of every augmented index x."""
        return np.arange(self.n_aug) // self.n_thetas

    @functools.cached_property
    def theta_of(self) -> np.ndarray:
        """theta of every augmented index x."""
        return np.arange(self.n_aug) % self.n_thetas

    @functools.cached_property
    def is_deterministic(self) -> bool:
        return bool(np.all((self.probs > 0).sum(axis=1) == 1))

    def index(self, state: str, theta: str, action: str | None = None) -> int:
        """Flat index of (s, theta), or of the transition row (s, theta, a) if an action is given."""
        x = _lookup(self.states, state, "state") * self.n_thetas + _lookup(
            self.thetas, theta, "theta"
        )
        return x if action is None else x * self.n_actions + _lookup(self.actions, action, "action")

    def transition(self, state: str, theta: str, action: str) -> dict[tuple[str, str], float]:
        """T(. | s, theta, a) as {(s', theta'): probability}, for reading a model."""
        r = self.index(state, theta, action)
        out: dict[tuple[str, str], float] = {}
        for x, p in zip(self.successors[r], self.probs[r]):
            if p > 0:
                key = (self.states[x // self.n_thetas], self.thetas[x % self.n_thetas])
                out[key] = out.get(key, 0.0) + float(p)
        return out

    # --- variants -----------------------------------------------------------------------------
    def with_horizon(self, horizon: int) -> DRMDP:
        return dataclasses.replace(self, horizon=horizon)

    def with_initial(self, state: str | None = None, theta: str | None = None) -> DRMDP:
        """The same model started deterministically at (state, theta); None keeps the current
        value, which must then be unique in the initial distribution."""
        s0, th0 = np.nonzero(self.initial)
        if state is None and len(set(s0)) != 1:
            raise ValueError(f"initial state is not unique in {self.name}; pass state=")
        if theta is None and len(set(th0)) != 1:
            raise ValueError(f"initial theta is not unique in {self.name}; pass theta=")
        s = s0[0] if state is None else _lookup(self.states, state, "state")
        th = th0[0] if theta is None else _lookup(self.thetas, theta, "theta")
        initial = np.zeros_like(self.initial)
        initial[s, th] = 1.0
        exact = self.exact
        if exact is not None:
            exact_initial = np.full(initial.shape, Fraction(0), dtype=object)
            exact_initial[s, th] = Fraction(1)
            exact = dataclasses.replace(exact, initial=exact_initial)
        return dataclasses.replace(self, initial=initial, exact=exact)

    @property
    def initial_point(self) -> tuple[str, str]:
        """(s0, theta0) of a model with a deterministic start."""
        s0, th0 = np.nonzero(self.initial)
        if len(s0) != 1:
            raise ValueError(f"{self.name} has a stochastic initial distribution")
        return self.states[s0[0]], self.thetas[th0[0]]

    # --- builders -----------------------------------------------------------------------------
    @classmethod
    def from_dicts(
        cls,
        states: Sequence[str],
        thetas: Sequence[str],
        actions: Sequence[str],
        transition: Mapping[tuple[str, str, str], Mapping[tuple[str, str], Any]] | Callable,
        reward: Mapping[tuple[str, str, str, str], Any] | Callable,
        initial: Mapping[tuple[str, str], Any] | tuple[str, str],
        horizon: int,
        noop: str,
        name: str = "drmdp",
        labelling: Labelling | None = None,
    ) -> DRMDP:
        """Build a small model exactly from names.

        transition: {(s, theta, a): {(s', theta'): p}} or a callable (s, theta, a) -> that dict.
        reward: {(theta, s, a, s'): r} (missing entries are 0) or a callable (theta, s, a, s') -> r.
        initial: {(s0, theta0): p} or a single pair (s0, theta0).
        Numbers may be ints, Fractions, strings ("1/2") or floats (read as their decimal repr).
        """
        states, thetas, actions = tuple(states), tuple(thetas), tuple(actions)
        for field, names in (("states", states), ("thetas", thetas), ("actions", actions)):
            _check_names(name, field, names)
        n_s, n_th, n_a = len(states), len(thetas), len(actions)
        if callable(transition):
            table = {
                (s, th, a): transition(s, th, a) for s in states for th in thetas for a in actions
            }
        else:
            table = dict(transition)
            for s, th, a in table:
                (
                    _lookup(states, s, "state"),
                    _lookup(thetas, th, "theta"),
                    _lookup(actions, a, "action"),
                )
        rows = []
        for s in states:
            for th in thetas:
                for a in actions:
                    if (s, th, a) not in table:
                        raise ValueError(
                            f"{name}: no transition given for (s={s!r}, θ={th!r}, a={a!r})"
                        )
                    row = []
                    for (s2, th2), p in table[(s, th, a)].items():
                        x2 = _lookup(states, s2, "state") * n_th + _lookup(thetas, th2, "theta")
                        row.append((x2, _fraction(p)))
                    rows.append(row)
        k = max(1, max(len(r) for r in rows))
        successors = np.zeros((len(rows), k), dtype=np.int64)
        probs = np.full((len(rows), k), Fraction(0), dtype=object)
        for i, row in enumerate(rows):
            for j, (x2, p) in enumerate(row):
                successors[i, j], probs[i, j] = x2, p

        reward_table = np.full((n_th, n_s, n_a, n_s), Fraction(0), dtype=object)
        if callable(reward):
            for i, th in enumerate(thetas):
                for j, s in enumerate(states):
                    for m, a in enumerate(actions):
                        for n, s2 in enumerate(states):
                            reward_table[i, j, m, n] = _fraction(reward(th, s, a, s2))
        else:
            for (th, s, a, s2), r in reward.items():
                idx = (
                    _lookup(thetas, th, "theta"),
                    _lookup(states, s, "state"),
                    _lookup(actions, a, "action"),
                    _lookup(states, s2, "state"),
                )
                reward_table[idx] = _fraction(r)

        if isinstance(initial, tuple) and len(initial) == 2 and isinstance(initial[0], str):
            initial = {initial: 1}
        initial_table = np.full((n_s, n_th), Fraction(0), dtype=object)
        for (s, th), p in initial.items():
            initial_table[_lookup(states, s, "state"), _lookup(thetas, th, "theta")] = _fraction(p)
        return cls.from_arrays(
            successors, probs, reward_table, initial_table, horizon, noop,
            states=states, thetas=thetas, actions=actions, name=name, labelling=labelling,
        )  # fmt: skip

    @classmethod
    def from_arrays(
        cls,
        successors: np.ndarray,
        probs: np.ndarray,
        reward: np.ndarray,
        initial: np.ndarray,
        horizon: int,
        noop: str | int = 0,
        states: Sequence[str] | None = None,
        thetas: Sequence[str] | None = None,
        actions: Sequence[str] | None = None,
        name: str = "drmdp",
        labelling: Labelling | None = None,
    ) -> DRMDP:
        """Build a model from sparse successor lists (see the module docstring for the layout).

        If `probs`, `reward` and `initial` are object arrays of Fractions (or ints), the model
        keeps them as its exact tables; otherwise it is float-only. A dense transition tensor of
        shape (|S|, |Theta|, |A|, |S|, |Theta|) may be passed as `successors` with probs=None.
        """
        if probs is None:
            successors, probs = sparse_from_dense(np.asarray(successors))
        reward, initial = np.asarray(reward), np.asarray(initial)
        n_th, n_s, n_a = reward.shape[:3]
        states = tuple(states) if states is not None else tuple(f"s{i}" for i in range(n_s))
        thetas = tuple(thetas) if thetas is not None else tuple(f"theta{i}" for i in range(n_th))
        actions = tuple(actions) if actions is not None else tuple(f"a{i}" for i in range(n_a))
        noop = actions[noop] if isinstance(noop, (int, np.integer)) else noop
        exact = None
        if all(_is_exact(a) for a in (probs, reward, initial)):
            as_fraction = np.vectorize(_fraction, otypes=[object])
            exact = ExactTables(as_fraction(probs), as_fraction(reward), as_fraction(initial))
        to_float = np.vectorize(float, otypes=[np.float64])
        return cls(
            states=states, thetas=thetas, actions=actions,
            successors=np.asarray(successors, np.int64),
            probs=to_float(probs) if probs.dtype == object else probs,
            reward=to_float(reward) if reward.dtype == object else reward,
            initial=to_float(initial) if initial.dtype == object else initial,
            horizon=horizon, noop=noop, exact=exact, name=name, labelling=labelling,
        )  # fmt: skip


# --- helpers -----------------------------------------------------------------------------------
def sparse_from_dense(transition: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Successor lists from a dense T of shape (|S|, |Theta|, |A|, |S|, |Theta|)."""
    n_s, n_th, n_a = transition.shape[:3]
    flat = transition.reshape(n_s * n_th * n_a, -1)
    k = max(1, int((flat != 0).sum(axis=1).max()))
    order = np.argsort(flat == 0, axis=1, kind="stable")[:, :k]  # non-zeros first
    return order, np.take_along_axis(flat, order, axis=1)


def random_drmdp(
    rng: np.random.Generator,
    n_states: int,
    n_thetas: int,
    n_actions: int,
    horizon: int,
    branching: int = 2,
    exact: bool = False,
    reward_on_next_state: bool = False,
) -> DRMDP:
    """A random sparse DR-MDP: each (s, theta, a) has `branching` random successors (s', theta').

    exact=False: float probabilities ~ Dirichlet(1) and rewards ~ U(-1, 1); fast enough for
    |S||Theta||A| in the millions. exact=True: probabilities are small-integer weights / their
    sum and rewards integers in [-5, 5], kept as Fractions for the enumeration reference.
    branching=1 gives deterministic transitions. The start is (s0, theta0) = (0, 0).
    """
    n_rows = n_states * n_thetas * n_actions
    successors = rng.integers(0, n_states * n_thetas, size=(n_rows, branching))
    reward_shape = (n_thetas, n_states, n_actions) + ((n_states,) if reward_on_next_state else ())
    if exact:
        weights = rng.integers(1, 5, size=(n_rows, branching))
        probs = np.array(
            [[Fraction(int(w), int(row.sum())) for w in row] for row in weights], dtype=object
        ).reshape(n_rows, branching)
        reward = np.vectorize(Fraction, otypes=[object])(rng.integers(-5, 6, size=reward_shape))
        initial = np.full((n_states, n_thetas), Fraction(0), dtype=object)
        initial[0, 0] = Fraction(1)
    else:
        probs = rng.dirichlet(np.ones(branching), size=n_rows) if branching > 1 else None
        probs = np.ones((n_rows, 1)) if probs is None else probs
        reward = rng.uniform(-1.0, 1.0, size=reward_shape)
        initial = np.zeros((n_states, n_thetas))
        initial[0, 0] = 1.0
    return DRMDP.from_arrays(successors, probs, reward, initial, horizon, noop=0, name="random")


def _validate(m: DRMDP) -> None:
    """One clear ValueError for the first problem found."""
    for field in ("states", "thetas", "actions"):
        _check_names(m.name, field, getattr(m, field))
    if isinstance(m.horizon, bool) or not isinstance(m.horizon, (int, np.integer)):
        raise ValueError(f"{m.name}: horizon must be an integer, got {m.horizon!r}")
    if m.horizon < 0:
        raise ValueError(f"{m.name}: horizon must be non-negative, got {m.horizon}")
    if m.noop not in m.actions:
        raise ValueError(
            f"{m.name}: noop {m.noop!r} is not an action; valid actions: {list(m.actions)}"
        )
    n_rows = m.n_aug * m.n_actions
    if (
        m.successors.ndim != 2
        or m.successors.shape[0] != n_rows
        or m.probs.shape != m.successors.shape
    ):
        raise ValueError(
            f"{m.name}: successors and probs must both have shape (|S||Θ||A|, k) = ({n_rows}, k), "
            f"got {m.successors.shape} and {m.probs.shape}"
        )
    if m.successors.size and (m.successors.min() < 0 or m.successors.max() >= m.n_aug):
        raise ValueError(f"{m.name}: successor indices must lie in [0, |S||Θ|) = [0, {m.n_aug})")
    if m.reward.shape not in (
        (m.n_thetas, m.n_states, m.n_actions),
        (m.n_thetas, m.n_states, m.n_actions, m.n_states),
    ):
        raise ValueError(
            f"{m.name}: reward must have shape (|Θ|, |S|, |A|) or (|Θ|, |S|, |A|, |S|), got {m.reward.shape}"
        )
    if not np.all(np.isfinite(m.reward)):
        raise ValueError(f"{m.name}: rewards must be finite")
    if m.initial.shape != (m.n_states, m.n_thetas):
        raise ValueError(
            f"{m.name}: initial must have shape (|S|, |Θ|) = {(m.n_states, m.n_thetas)}"
        )
    probs = m.exact.probs if m.exact is not None else m.probs
    negative = np.argwhere(m.probs < 0)
    if len(negative):
        r, j = negative[0]
        raise ValueError(
            f"{m.name}: negative transition probability {probs[r, j]} for {_row_name(m, r)}"
        )
    sums = probs.sum(axis=1)
    bad = (
        np.nonzero(sums != 1)[0] if m.exact is not None else np.nonzero(np.abs(sums - 1) > 1e-9)[0]
    )
    if len(bad):
        r = bad[0]
        raise ValueError(
            f"{m.name}: transition probabilities for {_row_name(m, r)} sum to {sums[r]}, not 1"
        )
    initial = m.exact.initial if m.exact is not None else m.initial
    if np.any(m.initial < 0):
        raise ValueError(f"{m.name}: initial distribution has a negative probability")
    total = initial.sum()
    if (total != 1) if m.exact is not None else abs(total - 1) > 1e-9:
        raise ValueError(f"{m.name}: initial distribution sums to {total}, not 1")


def _check_names(model_name: str, field: str, names: tuple[str, ...]) -> None:
    if not names:
        raise ValueError(f"{model_name}: {field} must not be empty")
    if len(set(names)) != len(names):
        raise ValueError(f"{model_name}: duplicate names in {field}: {list(names)}")


def _row_name(m: DRMDP, r: int) -> str:
    x, a = divmod(int(r), m.n_actions)
    s, th = divmod(x, m.n_thetas)
    return f"(s={m.states[s]!r}, θ={m.thetas[th]!r}, a={m.actions[a]!r})"


def _lookup(names: Sequence[str], name: str, kind: str) -> int:
    try:
        return names.index(name)
    except ValueError:
        raise ValueError(f"unknown {kind} {name!r}; valid {kind}s: {list(names)}") from None


def _fraction(value: Any) -> Fraction:
    if isinstance(value, float):
        return Fraction(repr(value))  # 0.1 means 1/10, not its binary expansion
    if isinstance(value, np.floating):
        return Fraction(repr(float(value)))
    if isinstance(value, np.integer):
        return Fraction(int(value))
    return Fraction(value)


def _is_exact(array: np.ndarray) -> bool:
    if array.dtype.kind in "iu":
        return True
    return array.dtype == object and all(isinstance(v, (Fraction, int)) for v in array.flat)


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.array(array)  # own copy, so freezing never touches the caller's array
    array.setflags(write=False)
    return array
