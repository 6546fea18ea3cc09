"""The swappable parts: replay buffer, exploration schedules, target updaters, networks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dqn import buffers
from dqn.buffers import ReplayBuffer
from dqn.config import (
    ExponentialExplorationConfig,
    LinearExplorationConfig,
    MLPConfig,
    MultiplicativeExplorationConfig,
)
from dqn.exploration import build_schedule
from dqn.networks import build_q_network
from dqn.targets import HardUpdate, SoftUpdate


def fill(buffer: ReplayBuffer, n: int) -> None:
    for i in range(n):
        obs = np.full(3, i, dtype=np.float32)
        buffer.add(obs, i % 2, float(i), obs + 0.5, terminated=(i % 5 == 4))


def test_buffer_is_preallocated_and_stores_transitions():
    buffer = ReplayBuffer(8, obs_dim=3, rng=np.random.default_rng(0))
    assert buffer.obs.shape == (8, 3) and buffer.obs.dtype == np.float32
    fill(buffer, 5)
    assert len(buffer) == 5
    np.testing.assert_array_equal(buffer.rewards[:5], [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(buffer.terminated[:5], [0, 0, 0, 0, 1])
    np.testing.assert_array_equal(buffer.next_obs[4], [4.5, 4.5, 4.5])


def test_buffer_wraps_around_and_overwrites_the_oldest():
    buffer = ReplayBuffer(4, obs_dim=3, rng=np.random.default_rng(0))
    fill(buffer, 6)
    assert len(buffer) == 4 and buffer.position == 2
    assert sorted(buffer.rewards.tolist()) == [2, 3, 4, 5]


def test_buffer_sample_shapes_and_consistency():
    buffer = ReplayBuffer(100, obs_dim=3, rng=np.random.default_rng(0))
    fill(buffer, 50)
    batch = buffer.sample(32)
    assert batch.obs.shape == (32, 3) and batch.obs.dtype == torch.float32
    assert batch.actions.dtype == torch.int64 and batch.actions.shape == (32,)
    # Each sampled row is one stored transition, fields kept together.
    torch.testing.assert_close(batch.obs[:, 0], batch.rewards)
    torch.testing.assert_close(batch.next_obs, batch.obs + 0.5)
    assert set(batch.rewards.long().tolist()) <= set(range(50))


def test_buffer_round_of_batches_is_one_draw_in_order(monkeypatch):
    buffer = ReplayBuffer(100, obs_dim=3, rng=np.random.default_rng(3))
    fill(buffer, 50)
    expected = np.random.default_rng(3).integers(0, 50, size=4 * 16).reshape(4, 16)
    batches = list(buffer.sample_batches(16, 4))
    assert len(batches) == 4
    for batch, rows in zip(batches, expected):
        assert batch.obs.shape == (16, 3)
        np.testing.assert_array_equal(batch.rewards.numpy(), rows)  # fill: reward = index
        torch.testing.assert_close(batch.next_obs, batch.obs + 0.5)
    # Gathered a batch at a time (a tiny gather limit), the batches are the same.
    monkeypatch.setattr(buffers, "GATHER_BYTES", 1)
    buffer.rng = np.random.default_rng(3)
    for chunked, whole in zip(buffer.sample_batches(16, 4), batches, strict=True):
        for field_chunked, field_whole in zip(chunked, whole):
            torch.testing.assert_close(field_chunked, field_whole)


def test_buffer_sampling_is_seeded():
    a, b = (ReplayBuffer(100, 3, np.random.default_rng(7)) for _ in range(2))
    fill(a, 60)
    fill(b, 60)
    torch.testing.assert_close(a.sample(16).rewards, b.sample(16).rewards)


def test_exponential_schedule():
    eps = build_schedule(ExponentialExplorationConfig(start=0.9, end=0.05, decay=1000))
    assert eps(0, 0) == pytest.approx(0.9)
    assert eps(1000, 7) == pytest.approx(0.05 + 0.85 * math.exp(-1))
    assert eps(100_000, 0) == pytest.approx(0.05)


def test_multiplicative_schedule_is_per_episode():
    eps = build_schedule(MultiplicativeExplorationConfig(start=1.0, end=0.01, factor=0.995))
    assert eps(0, 0) == 1.0
    assert eps(5_000, 0) == 1.0  # steps do not matter
    assert eps(0, 10) == pytest.approx(0.995**10)
    value = 1.0
    for episode in range(1, 1000):  # same as multiplying after each episode, floored
        value = max(0.01, value * 0.995)
        assert eps(0, episode) == pytest.approx(value)
    assert eps(0, 2000) == 0.01


def test_linear_schedule():
    eps = build_schedule(LinearExplorationConfig(start=1.0, end=0.1, steps=100))
    assert eps(0, 0) == 1.0
    assert eps(50, 0) == pytest.approx(0.55)
    assert eps(100, 0) == pytest.approx(0.1)
    assert eps(10_000, 0) == pytest.approx(0.1)


def two_networks():
    torch.manual_seed(0)
    online = build_q_network(MLPConfig(hidden_sizes=[8]), 4, 2)
    target = build_q_network(MLPConfig(hidden_sizes=[8]), 4, 2)
    return online, target


def same_weights(a, b) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_hard_update_copies_exactly_at_the_period():
    online, target = two_networks()
    update = HardUpdate(period=3)
    for step in (1, 2):
        update(online, target, step)
        assert not same_weights(online, target)
    update(online, target, 3)
    assert same_weights(online, target)
    with torch.no_grad():
        online[0].weight.add_(1.0)
    for step in (4, 5):
        update(online, target, step)
        assert not same_weights(online, target)
    update(online, target, 6)
    assert same_weights(online, target)


def test_soft_update_moves_by_exactly_tau():
    online, target = two_networks()
    before = [p.clone() for p in target.parameters()]
    SoftUpdate(tau=0.25)(online, target, 1)
    for old, new, src in zip(before, target.parameters(), online.parameters()):
        torch.testing.assert_close(new, old + 0.25 * (src - old))
    SoftUpdate(tau=1.0)(online, target, 2)
    assert same_weights(online, target)


def test_mlp_shape_and_activation():
    net = build_q_network(MLPConfig(hidden_sizes=[32, 16], activation="tanh"), 4, 3)
    assert net(torch.zeros(5, 4)).shape == (5, 3)
    assert [type(m).__name__ for m in net] == ["Linear", "Tanh", "Linear", "Tanh", "Linear"]
    assert net[0].in_features == 4 and net[2].out_features == 16
