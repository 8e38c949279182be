"""EpisodeDataset: goals stay inside their episode and follow the truncated geometric law."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from alignlab.rl import EpisodeDataset, to_torch


def labelled_episodes(lengths):
    """Each state's obs spells out (episode, step, length); its action is 1000 * episode + step."""
    return [
        {
            "obs": np.stack([np.full(n, e), np.arange(n), np.full(n, n)], axis=1).astype(
                np.float32
            ),
            "action": 1000 * e + np.arange(n),
        }
        for e, n in enumerate(lengths)
    ]


def check_batch(batch):
    """Every structural promise of `sample`, read from the labelled observations."""
    episode, step, length = batch["obs"].T
    future = ~batch["random_goal"]
    assert (step < length - 1).all()  # anchors have a successor
    assert (batch["next_obs"][:, 0] == episode).all() and (
        batch["next_obs"][:, 1] == step + 1
    ).all()
    assert (batch["goal"][future, 0] == episode[future]).all()  # same episode
    assert (batch["goal"][future, 1] > step[future]).all()  # strictly in the future
    assert (batch["offset"][future] == batch["goal"][future, 1] - step[future]).all()
    assert (batch["offset"][future] <= (length - 1 - step)[future]).all()
    assert (batch["offset"][~future] == -1).all()
    goal_episode, goal_step, _ = batch["goal"].T
    assert (batch["goal_action"] == 1000 * goal_episode + goal_step).all()
    assert (batch["action"] == 1000 * episode + step).all()


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 30), min_size=1, max_size=12).filter(lambda ls: max(ls) > 1),
    gamma=st.floats(0.01, 0.999),
    random_goal_prob=st.sampled_from([0.0, 0.3, 1.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_goals_never_cross_episode_boundaries(lengths, gamma, random_goal_prob, seed):
    data = EpisodeDataset.from_episodes(labelled_episodes(lengths))
    batch = data.sample(256, np.random.default_rng(seed), gamma, random_goal_prob)
    check_batch(batch)
    assert (data.episode_id[batch["index"]] == batch["obs"][:, 0]).all()
    assert (batch["goal"] == data.obs[batch["goal_index"]]).all()


@pytest.mark.parametrize("gamma", [0.5, 0.9, 0.99])
def test_offsets_on_long_episodes_follow_geometric(gamma):
    """Episodes of 10^5 steps: truncation touches a negligible share of anchors."""
    data = EpisodeDataset.from_episodes(labelled_episodes([100_000]))
    n = 20_000
    offset = data.sample(n, np.random.default_rng(0), gamma)["offset"]
    geom = stats.geom(1 - gamma)  # P(k) = gamma^(k-1) (1 - gamma), k >= 1
    kmax = int(geom.isf(5 / n))  # bins with at least ~5 expected counts, then one tail bin
    observed = np.append(
        np.bincount(offset, minlength=kmax + 1)[1 : kmax + 1], (offset > kmax).sum()
    )
    expected = n * np.append(geom.pmf(np.arange(1, kmax + 1)), geom.sf(kmax))
    assert stats.chisquare(observed, expected).pvalue > 0.01


def truncated_law(gamma, remaining):
    """P(remaining = K, offset = k) for anchors uniform over steps 0 .. L-2 (K = L-1 .. 1)."""
    cells = {}
    for K in range(1, remaining + 1):
        for k in range(1, K + 1):
            cells[K, k] = gamma ** (k - 1) * (1 - gamma) / (1 - gamma**K) / remaining
    return cells


def test_offsets_on_short_episodes_follow_the_truncated_formula():
    length, gamma, n = 6, 0.7, 30_000
    data = EpisodeDataset.from_episodes(labelled_episodes([length] * 500))
    batch = data.sample(n, np.random.default_rng(1), gamma)
    remaining = (length - 1 - batch["obs"][:, 1]).astype(int)
    law = truncated_law(gamma, length - 1)
    observed = np.array([np.sum((remaining == K) & (batch["offset"] == k)) for K, k in law])
    expected = n * np.array(list(law.values()))
    assert stats.chisquare(observed, expected).pvalue > 0.01
    # The test has power: clipping Geom(1 - gamma) to the episode end instead is rejected.
    clipped = {
        (K, k): (gamma ** (k - 1) * (1 - gamma) if k < K else gamma ** (K - 1)) / (length - 1)
        for K, k in law
    }
    assert stats.chisquare(observed, n * np.array(list(clipped.values()))).pvalue < 1e-6


def test_only_states_with_a_successor_are_anchors():
    data = EpisodeDataset.from_episodes(labelled_episodes([1, 3, 1, 1]))
    batch = data.sample(500, np.random.default_rng(0), 0.9)
    assert set(batch["index"]) == {1, 2}  # steps 0 and 1 of the length-3 episode
    assert set(batch["goal_index"]) == {2, 3}
    with pytest.raises(ValueError, match="length 1"):
        EpisodeDataset.from_episodes(labelled_episodes([1, 1])).sample(
            4, np.random.default_rng(0), 0.9
        )


def test_same_seed_same_batch():
    data = EpisodeDataset.from_episodes(labelled_episodes([7, 12, 3]))
    a = data.sample(64, np.random.default_rng(5), 0.9, random_goal_prob=0.5)
    b = data.sample(64, np.random.default_rng(5), 0.9, random_goal_prob=0.5)
    c = data.sample(64, np.random.default_rng(6), 0.9, random_goal_prob=0.5)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["index"], c["index"])


def test_random_goals_are_uniform_dataset_states():
    data = EpisodeDataset.from_episodes(labelled_episodes([5] * 20))
    batch = data.sample(4000, np.random.default_rng(0), 0.9, random_goal_prob=0.25)
    check_batch(batch)
    share = batch["random_goal"].mean()
    assert abs(share - 0.25) < 4 * np.sqrt(0.25 * 0.75 / 4000)
    random_goals = batch["goal_index"][batch["random_goal"]]
    assert stats.chisquare(np.bincount(random_goals, minlength=len(data))).pvalue > 0.01
    all_random = data.sample(100, np.random.default_rng(0), 0.9, random_goal_prob=1.0)
    assert all_random["random_goal"].all() and (all_random["offset"] == -1).all()


def test_final_state_without_an_action_repeats_the_last_one():
    episodes = [{"obs": np.arange(4.0)[:, None], "action": np.array([[1.0], [2.0], [3.0]])}]
    data = EpisodeDataset.from_episodes(episodes)
    assert data.action[:, 0].tolist() == [1.0, 2.0, 3.0, 3.0]
    batch = data.sample(200, np.random.default_rng(0), 0.5)
    assert (batch["goal_action"] == data.action[batch["goal_index"]]).all()
    with pytest.raises(ValueError, match="episode 0: 4 observations need 4 or 3 actions, got 2"):
        EpisodeDataset.from_episodes([{"obs": np.zeros((4, 1)), "action": np.zeros(2)}])


def test_flat_arrays_and_episode_bookkeeping():
    episodes = labelled_episodes([3, 1, 4])
    obs = np.concatenate([e["obs"] for e in episodes])
    action = np.concatenate([e["action"] for e in episodes])
    data = EpisodeDataset.from_arrays(obs, action, [3, 1, 4])
    same = EpisodeDataset.from_episodes(episodes)
    for key in ("obs", "action", "episode_id", "step", "episode_end"):
        assert np.array_equal(getattr(data, key), getattr(same, key))
    assert data.step.tolist() == [0, 1, 2, 0, 0, 1, 2, 3]
    assert data.episode_end.tolist() == [2, 2, 2, 3, 7, 7, 7, 7]
    assert len(data) == 8 and data.num_episodes == 3
    with pytest.raises(ValueError, match="sum\\(lengths\\)"):
        EpisodeDataset.from_arrays(obs, action, [3, 4])
    with pytest.raises(ValueError, match="gamma"):
        data.sample(4, np.random.default_rng(0), 1.0)


def test_replay_buffer_appends_and_drops_oldest_whole_episodes():
    buffer = EpisodeDataset(capacity=10)
    buffer.add_episodes(labelled_episodes([4, 4]))
    more = labelled_episodes([0, 0, 5])[2:]  # episode label 2, five states
    buffer.add_episodes(more)
    assert len(buffer) == 9 and buffer.num_episodes == 2  # 13 > 10: the oldest episode went
    assert buffer.obs[0, 0] == 1 and buffer.episode_id.tolist() == [1] * 4 + [2] * 5
    assert buffer.episode_end.tolist() == [3] * 4 + [8] * 5
    check_batch(buffer.sample(300, np.random.default_rng(0), 0.8))
    with pytest.raises(ValueError, match="exceeds capacity"):
        buffer.add_episodes(labelled_episodes([11]))


def test_to_torch_keeps_integers_and_uses_the_default_float():
    data = EpisodeDataset.from_episodes(labelled_episodes([5, 5]))
    batch = to_torch(data.sample(8, np.random.default_rng(0), 0.9), "cpu")
    assert batch["obs"].dtype == torch.get_default_dtype()
    assert batch["offset"].dtype == torch.int64 and batch["random_goal"].dtype == torch.bool
    assert batch["goal"].shape == (8, 3)


def test_min_offset_zero_follows_the_truncated_law_with_the_current_state():
    """min_offset=0: P(Delta = k) = gamma^k (1 - gamma) / (1 - gamma^(K+1)), k = 0 .. K."""
    length, gamma, n = 6, 0.7, 30_000
    data = EpisodeDataset.from_episodes(labelled_episodes([length] * 500))
    batch = data.sample(n, np.random.default_rng(2), gamma, min_offset=0)
    episode, step, _ = batch["obs"].T
    assert (batch["goal"][:, 0] == episode).all() and (batch["goal"][:, 1] >= step).all()
    assert (batch["offset"] == batch["goal"][:, 1] - step).all()
    assert (batch["goal_action"] == batch["action"])[batch["offset"] == 0].all()
    remaining = (length - 1 - step).astype(int)
    law = {
        (K, k): gamma**k * (1 - gamma) / (1 - gamma ** (K + 1)) / (length - 1)
        for K in range(1, length)
        for k in range(0, K + 1)
    }
    observed = np.array([np.sum((remaining == K) & (batch["offset"] == k)) for K, k in law])
    assert stats.chisquare(observed, n * np.array(list(law.values()))).pvalue > 0.01
    with pytest.raises(ValueError, match="min_offset"):
        data.sample(4, np.random.default_rng(0), 0.9, min_offset=2)


def test_default_min_offset_is_unchanged_and_next_action_is_the_successors():
    data = EpisodeDataset.from_episodes(labelled_episodes([7, 12, 3]))
    a = data.sample(64, np.random.default_rng(5), 0.9, random_goal_prob=0.5)
    b = data.sample(64, np.random.default_rng(5), 0.9, random_goal_prob=0.5, min_offset=1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert (a["next_action"] == a["action"] + 1).all()  # action = 1000 * episode + step


def test_rewards_travel_with_their_states_and_survive_dropping_episodes():
    buffer = EpisodeDataset(capacity=8)
    obs = np.arange(10, dtype=np.float32)[:, None]
    reward = np.arange(10, dtype=np.float32) * 10  # reward[n] belongs to state n
    buffer.add_arrays(obs[:5], obs[:5], [5], reward[:5])
    buffer.add_arrays(obs[5:], obs[5:], [5], reward[5:])  # 10 > 8: the first episode goes
    assert buffer.reward.tolist() == (reward[5:]).tolist()
    batch = buffer.sample(50, np.random.default_rng(0), 0.9)
    assert np.array_equal(batch["reward"], batch["obs"][:, 0] * 10)
    plain = EpisodeDataset.from_arrays(obs, obs, [10])  # no rewards given: zeros
    assert not plain.sample(5, np.random.default_rng(0), 0.9)["reward"].any()
    with pytest.raises(ValueError, match="reward must be finite"):
        buffer.add_arrays(obs[:5], obs[:5], [5], reward[:4])
    with pytest.raises(ValueError, match="reward must be finite"):
        buffer.add_arrays(obs[:5], obs[:5], [5], np.full(5, np.nan))
    from_dicts = EpisodeDataset.from_episodes(
        [{"obs": obs[:3], "action": obs[:2], "reward": np.array([1.0, 2.0])}]
    )
    assert from_dicts.reward.tolist() == [1.0, 2.0, 0.0]  # T - 1 rewards: the last state 0
