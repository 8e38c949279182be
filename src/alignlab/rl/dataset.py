"""Whole episodes in flat arrays, with future-state (hindsight) goal sampling.

Used as an offline dataset (CMD) and as a replay buffer that rollouts are appended to (ESR).
States of all episodes sit back to back: obs[n], action[n] is state n and the action recorded
there, and every state knows its episode, its step within it and the flat index of the
episode's last state, so sampling never crosses an episode boundary.

Goals (CMD notes, "Successor distance"; ESR notes, "Contrastive loss"): for an anchor at step
t of an episode whose last state is at step t + K, the goal is the state at t + Delta with

    P(Delta = k) = gamma^(k-1) (1 - gamma) / (1 - gamma^K),   k = 1 .. K,

the discounted future-state distribution Geom(1 - gamma) truncated to the K steps the episode
has left and renormalised (not clipped: clipping would pile the tail mass on the last state).
"""

from __future__ import annotations

import numpy as np
import torch


class EpisodeDataset:
    """States and actions of whole episodes; `sample` draws (s, a, s', g, a_g) batches.

    Per state n: `obs[n]`, `action[n]` (the action taken at obs[n]), `reward[n]` (the reward
    of the transition from state n; 0 where none was given, and for an episode's last state),
    `episode_id[n]`,
    `step[n]` (index within the episode) and `episode_end[n]` (flat index of the episode's
    last state); `anchors` lists the states with a successor. `capacity` (states), if set,
    makes it a FIFO replay buffer that drops its oldest whole episodes.
    """

    def __init__(self, capacity: int | None = None):
        self.capacity = capacity
        self.obs: np.ndarray | None = None
        self.action: np.ndarray | None = None
        self.reward = np.zeros(0, dtype=np.float32)
        self.episode_id = np.zeros(0, dtype=np.int64)
        self.step = np.zeros(0, dtype=np.int64)
        self.episode_end = np.zeros(0, dtype=np.int64)
        self.anchors = np.zeros(0, dtype=np.int64)  # states with a successor in their episode
        self._next_episode_id = 0

    @classmethod
    def from_episodes(cls, episodes: list[dict], capacity: int | None = None) -> EpisodeDataset:
        """From dicts with "obs" (T, ...) and "action" (T, ...) or (T - 1, ...); see add_episodes."""
        data = cls(capacity)
        data.add_episodes(episodes)
        return data

    @classmethod
    def from_arrays(
        cls, obs: np.ndarray, action: np.ndarray, lengths, capacity: int | None = None
    ) -> EpisodeDataset:
        """From flat, aligned obs (N, ...) and action (N, ...) and episode lengths summing to N."""
        data = cls(capacity)
        data.add_arrays(obs, action, lengths)
        return data

    def __len__(self) -> int:
        return len(self.episode_id)

    @property
    def num_episodes(self) -> int:
        return len(np.unique(self.episode_id))

    def add_episodes(self, episodes: list[dict]) -> None:
        """Append episodes given as dicts with "obs" (T, ...), "action" and optionally "reward"
        (T or T - 1 transition rewards; the last state's is 0).

        "action" has T rows (one per state, as in D4RL/OGBench datasets) or T - 1 rows (the
        final state has no action, as in a rollout). In the second case the final state gets a
        copy of the last action taken: the action at a goal state feeds the critic at
        f(g, a_g, g) (CMD's change of variables), and the behaviour policy's previous action
        is an in-distribution stand-in, where zeros would not be.
        """
        obs, action, reward = [], [], []
        for i, episode in enumerate(episodes):
            o, a = np.asarray(episode["obs"]), np.asarray(episode["action"])
            r = np.asarray(episode.get("reward", np.zeros(len(o))), dtype=np.float32)
            if len(r) == len(o) - 1:
                r = np.concatenate([r, np.zeros(1, np.float32)])  # the last state has none
            if len(a) == len(o) - 1 and len(o) > 1:
                a = np.concatenate([a, a[-1:]])  # the final state repeats the last action
            if len(a) != len(o):
                raise ValueError(
                    f"episode {i}: {len(o)} observations need {len(o)} or {len(o) - 1} actions, "
                    f"got {len(a)}"
                )
            obs.append(o)
            action.append(a)
            reward.append(r)
        self.add_arrays(
            np.concatenate(obs),
            np.concatenate(action),
            [len(o) for o in obs],
            np.concatenate(reward),
        )

    def add_arrays(self, obs: np.ndarray, action: np.ndarray, lengths, reward=None) -> None:
        """Append flat, aligned obs (N, ...) and action (N, ...) cut into episodes of `lengths`;
        `reward` (N,), if given, is each state's transition reward (0 for last states)."""
        obs, action = np.asarray(obs), np.asarray(action)
        reward = np.zeros(len(obs), np.float32) if reward is None else np.asarray(reward)
        if reward.shape != (len(obs),) or not np.all(np.isfinite(reward)):
            raise ValueError(
                f"reward must be finite with shape ({len(obs)},), got shape {reward.shape}"
            )
        lengths = np.asarray(lengths, dtype=np.int64)
        if len(obs) != len(action) or lengths.sum() != len(obs) or np.any(lengths < 1):
            raise ValueError(
                f"need len(obs) == len(action) == sum(lengths) and every length >= 1; got "
                f"{len(obs)} observations, {len(action)} actions, lengths summing to "
                f"{lengths.sum()} (min {lengths.min(initial=0)})"
            )
        if self.capacity is not None and lengths.max(initial=0) > self.capacity:
            raise ValueError(
                f"an episode of {lengths.max()} states exceeds capacity {self.capacity}"
            )
        ids = self._next_episode_id + np.arange(len(lengths))
        self._next_episode_id += len(lengths)
        starts = np.cumsum(lengths) - lengths  # of each new episode, within the new arrays
        ends = len(self) + starts + lengths - 1  # flat index of each new episode's last state
        self.episode_id = np.concatenate([self.episode_id, np.repeat(ids, lengths)])
        self.step = np.concatenate([self.step, np.arange(len(obs)) - np.repeat(starts, lengths)])
        self.episode_end = np.concatenate([self.episode_end, np.repeat(ends, lengths)])
        self.obs = obs if self.obs is None else np.concatenate([self.obs, obs])
        self.action = action if self.action is None else np.concatenate([self.action, action])
        self.reward = np.concatenate([self.reward, reward.astype(np.float32)])
        if self.capacity is not None and len(self) > self.capacity:
            self._drop_oldest(len(self) - self.capacity)
        self.anchors = np.flatnonzero(self.episode_end > np.arange(len(self)))

    ARRAYS = ("obs", "action", "reward", "episode_id", "step", "episode_end", "anchors")

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Everything the dataset holds, as named arrays, for a checkpoint (empty when nothing
        was added); `load_state_arrays` restores it exactly."""
        if self.obs is None:
            return {}
        out = {name: getattr(self, name) for name in self.ARRAYS}
        out["next_episode_id"] = np.array([self._next_episode_id], dtype=np.int64)
        return out

    def load_state_arrays(self, arrays: dict) -> None:
        """Restore what `state_arrays` returned (numpy arrays or CPU tensors)."""
        if not arrays:
            return
        for name in self.ARRAYS:
            setattr(self, name, np.asarray(arrays[name]))
        self._next_episode_id = int(np.asarray(arrays["next_episode_id"])[0])

    def _drop_oldest(self, n: int) -> None:
        """Drop the oldest whole episodes holding at least n states."""
        cut = self.episode_end[n - 1] + 1  # round up to the end of the episode holding state n-1
        self.obs, self.action, self.reward = self.obs[cut:], self.action[cut:], self.reward[cut:]
        self.episode_id, self.step = self.episode_id[cut:], self.step[cut:]
        self.episode_end = self.episode_end[cut:] - cut

    def sample(
        self,
        batch_size: int,
        rng: np.random.Generator,
        gamma: float,
        random_goal_prob: float = 0.0,
        min_offset: int = 1,
    ) -> dict[str, np.ndarray]:
        """A batch of anchors (s, a), next states s' and goals g with their actions a_g.

        Anchors are uniform over the states that have a successor in their episode. Each goal
        is the future state at offset Delta ~ Geom(1 - gamma) truncated to the episode (module
        docstring), drawn by inverse CDF; with probability `random_goal_prob` per row it is a
        uniformly random dataset state instead (`random_goal` True, `offset` -1).

        `min_offset=0` counts the current state too: P(Delta = k) = gamma^k (1 - gamma) /
        (1 - gamma^(K+1)), k = 0 .. K, the occupancy with the k = 0 term, for which the
        successor distance is a quasimetric (cmd.distances.successor_distance). The default 1
        is the strictly-future law of the module docstring.

        Returns obs, action, reward, next_obs, next_action, goal, goal_action, offset,
        random_goal, and the flat indices `index` (anchor) and `goal_index`.
        """
        if not 0.0 < gamma < 1.0:
            raise ValueError(f"gamma must lie in (0, 1), got {gamma}")
        if not 0.0 <= random_goal_prob <= 1.0:
            raise ValueError(f"random_goal_prob must lie in [0, 1], got {random_goal_prob}")
        if min_offset not in (0, 1):
            raise ValueError(f"min_offset must be 0 or 1, got {min_offset}")
        if len(self.anchors) == 0:
            raise ValueError("no state has a successor in its episode: every episode has length 1")
        index = self.anchors[rng.integers(len(self.anchors), size=batch_size)]
        remaining = self.episode_end[index] - index  # K >= 1
        # Inverse CDF of the truncated geometric: CDF(k) = (1 - gamma^k) / (1 - gamma^K);
        # with min_offset 0 the same law on Delta + 1 over 1 .. K + 1.
        u = rng.random(batch_size)
        n = remaining + (1 - min_offset)
        mass = -np.expm1(n * np.log(gamma))  # 1 - gamma^n, accurate for small n
        offset = np.ceil(np.log1p(-u * mass) / np.log(gamma)).astype(np.int64)
        offset = np.clip(offset, 1, n) - (1 - min_offset)  # guards u = 0 and rounding
        goal_index = index + offset
        random_goal = rng.random(batch_size) < random_goal_prob
        goal_index = np.where(random_goal, rng.integers(len(self), size=batch_size), goal_index)
        return {
            "obs": self.obs[index],
            "action": self.action[index],
            "reward": self.reward[index],
            "next_obs": self.obs[index + 1],
            "next_action": self.action[index + 1],
            "goal": self.obs[goal_index],
            "goal_action": self.action[goal_index],
            "offset": np.where(random_goal, -1, offset),
            "random_goal": random_goal,
            "index": index,
            "goal_index": goal_index,
        }


def to_torch(
    batch: dict[str, np.ndarray], device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """Numpy batch -> tensors on `device`; floating arrays become torch's default float dtype."""
    out = {}
    for key, value in batch.items():
        tensor = torch.as_tensor(value)
        if tensor.is_floating_point():
            tensor = tensor.to(torch.get_default_dtype())
        out[key] = tensor.to(device)
    return out
