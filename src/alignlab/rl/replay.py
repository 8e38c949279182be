"""A circular replay buffer of single transitions, with Stable-Baselines3's semantics.

SB3's `ReplayBuffer` (stable_baselines3/common/buffers.py) keeps the latest `buffer_size`
transitions in a ring and samples minibatches uniformly from the filled part. With
`handle_timeout_termination=True` (its default) a transition that ends an episode only by a
time limit is not a terminal one: the soft Q target still bootstraps from its next state. Here
that is the caller's side: `add` takes gymnasium's `terminated`, never `truncated`, and
`dones` is exactly that flag.

All five fields sit side by side in one float32 array (one row per transition), so a minibatch
is one fancy index and one torch view, with no copy between numpy and torch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch


@dataclass
class ReplayBatch:
    """A minibatch, field for field SB3's `ReplayBufferSamples`: float32 tensors, observations
    (B, obs_dim), actions (B, action_dim) in the actor's [-1, 1] scale, next_observations
    (B, obs_dim), dones (B, 1) (1.0 where the episode terminated) and rewards (B, 1)."""

    observations: torch.Tensor
    actions: torch.Tensor
    next_observations: torch.Tensor
    dones: torch.Tensor
    rewards: torch.Tensor

    def to(self, device: torch.device | str) -> ReplayBatch:
        if torch.device(device) == self.observations.device:
            return self
        return ReplayBatch(
            **{f.name: getattr(self, f.name).to(device, non_blocking=True) for f in fields(self)}
        )


FIELDS = ("observations", "actions", "next_observations", "rewards", "dones")


class ReplayBuffer:
    """The latest `capacity` transitions (obs, next_obs, action, reward, terminated) in a ring.

    `add` writes at the current position and moves it on, wrapping round and overwriting the
    oldest transitions once the buffer is full (SB3's `pos` and `full`); `sample` draws
    `batch_size` indices uniformly, with replacement, from the filled part.
    """

    def __init__(self, capacity: int, obs_dim: int, action_dim: int):
        for name, value, least in (
            ("capacity", capacity, 1),
            ("obs_dim", obs_dim, 1),
            ("action_dim", action_dim, 1),
        ):
            if int(value) != value or value < least:
                raise ValueError(
                    f"ReplayBuffer {name} must be an integer >= {least}, got {value!r}"
                )
        self.capacity, self.obs_dim, self.action_dim = int(capacity), int(obs_dim), int(action_dim)
        o, a = self.obs_dim, self.action_dim
        # column ranges of the fields in a row
        self._cols = {
            "observations": (0, o),
            "actions": (o, o + a),
            "next_observations": (o + a, 2 * o + a),
            "rewards": (2 * o + a, 2 * o + a + 1),
            "dones": (2 * o + a + 1, 2 * o + a + 2),
        }
        self.width = 2 * o + a + 2
        # np.zeros maps untouched pages lazily: a large, mostly empty buffer costs little memory
        self._data = np.zeros((self.capacity, self.width), dtype=np.float32)
        self.pos, self.full = 0, False

    def __len__(self) -> int:
        return self.capacity if self.full else self.pos

    def add(self, obs, next_obs, action, reward, terminated) -> None:
        """Store one transition, or a batch of them along a leading dimension. `action` is in
        the actor's [-1, 1] scale; `terminated` is gymnasium's flag (a time-limit truncation
        is not a termination)."""
        obs = np.asarray(obs, dtype=np.float32)
        n = 1 if obs.ndim == 1 else obs.shape[0]
        rows = np.empty((n, self.width), dtype=np.float32)
        parts = {
            "observations": obs,
            "actions": action,
            "next_observations": next_obs,
            "rewards": reward,
            "dones": terminated,
        }
        for name, (lo, hi) in self._cols.items():
            value = np.asarray(parts[name], dtype=np.float32)
            if value.size != n * (hi - lo):
                raise ValueError(
                    f"ReplayBuffer.add: {name} must hold {hi - lo} value(s) for each of {n} "
                    f"transition(s), got shape {value.shape}"
                )
            rows[:, lo:hi] = value.reshape(n, hi - lo)
        if n > self.capacity:  # only the newest `capacity` rows survive
            self.pos = (self.pos + n - self.capacity) % self.capacity
            rows, n = rows[-self.capacity :], self.capacity
            self.full = True
        end = self.pos + n
        if end <= self.capacity:
            self._data[self.pos : end] = rows
        else:
            first = self.capacity - self.pos
            self._data[self.pos :] = rows[:first]
            self._data[: n - first] = rows[first:]
        self.full = self.full or end >= self.capacity
        self.pos = end % self.capacity

    def sample(self, batch_size: int, rng: np.random.Generator) -> ReplayBatch:
        """`batch_size` transitions drawn uniformly with replacement from the filled part."""
        size = len(self)
        if size == 0:
            raise ValueError("ReplayBuffer.sample: the buffer is empty")
        idx = rng.integers(0, size, size=batch_size)
        return self.batch(idx)

    def batch(self, idx: np.ndarray) -> ReplayBatch:
        """The transitions at storage indices `idx` (views of one float32 block)."""
        block = torch.from_numpy(self._data.take(idx, axis=0))
        return ReplayBatch(**{name: block[:, lo:hi] for name, (lo, hi) in self._cols.items()})

    def field(self, name: str) -> np.ndarray:
        """One field of the filled part, in storage order: (len, dim) float32 (a view)."""
        lo, hi = self._cols[name]
        return self._data[: len(self), lo:hi]

    def state(self) -> dict[str, np.ndarray]:
        """The filled part field by field (storage order) and the ring's position, as arrays
        (safetensors-friendly); `load_state` restores them into a buffer of the same shape."""
        out = {name: np.ascontiguousarray(self.field(name)) for name in FIELDS}
        out["pos"] = np.array([self.pos], dtype=np.int64)
        out["full"] = np.array([int(self.full)], dtype=np.int64)
        out["capacity"] = np.array([self.capacity], dtype=np.int64)
        return out

    def load_state(self, state) -> None:
        capacity = int(np.asarray(state["capacity"]).reshape(-1)[0])
        if capacity != self.capacity:
            raise ValueError(
                f"ReplayBuffer.load_state: the state holds a buffer of capacity {capacity}, "
                f"this one has {self.capacity}"
            )
        pos = int(np.asarray(state["pos"]).reshape(-1)[0])
        full = bool(np.asarray(state["full"]).reshape(-1)[0])
        size = self.capacity if full else pos
        for name, (lo, hi) in self._cols.items():
            value = np.asarray(state[name], dtype=np.float32)
            if value.shape != (size, hi - lo):
                raise ValueError(
                    f"ReplayBuffer.load_state: {name} must have shape {(size, hi - lo)}, "
                    f"got {value.shape}"
                )
        for name, (lo, hi) in self._cols.items():
            self._data[:size, lo:hi] = np.asarray(state[name], dtype=np.float32)
        self.pos, self.full = pos, full
