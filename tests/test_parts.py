"""The swappable parts: replay buffer, exploration schedules, target updaters, networks."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from dqn.exploration import (
    ExponentialExplorationConfig,
    LinearExplorationConfig,
    MultiplicativeExplorationConfig,
)
from dqn.interfaces import ExplorationContext
from dqn.nets import build_q_network
from dqn.nets.encoders import MLPConfig
from dqn.options import build
from dqn.replay import buffer as buffers
from dqn.replay.uniform import UniformBufferConfig, UniformReplay
from dqn.targets import HardTargetConfig, HardUpdate, SoftTargetConfig, SoftUpdate


def box(*shape: int, dtype=np.float32) -> gym.spaces.Box:
    return gym.spaces.Box(0, 255, shape, dtype)


def make_buffer(capacity: int, seed: int = 0, shape=(3,), dtype=np.float32) -> UniformReplay:
    return UniformReplay(UniformBufferConfig(capacity=capacity, batch_size=1),
                         box(*shape, dtype=dtype), [np.random.default_rng(seed)], 0.99, "cpu")


def fill(buffer: UniformReplay, n: int) -> None:
    for i in range(n):
        obs = np.full((1, 3), i, dtype=np.float32)
        buffer.add(obs, np.array([i % 2]), np.array([float(i)]), obs + 0.5,
                   terminated=np.array([i % 5 == 4]), truncated=np.array([False]))


def test_buffer_is_preallocated_and_stores_transitions():
    buffer = make_buffer(8)
    obs = buffer.fields["obs"]
    assert obs.shape == (8, 1, 3) and obs.dtype == np.float32
    fill(buffer, 5)
    assert len(buffer) == 5
    np.testing.assert_array_equal(buffer.fields["rewards"][:5, 0], [0, 1, 2, 3, 4])
    np.testing.assert_allclose(buffer.fields["discounts"][:5, 0], [0.99] * 4 + [0])
    np.testing.assert_array_equal(buffer.fields["next_obs"][4, 0], [4.5, 4.5, 4.5])


def test_buffer_keeps_the_observations_shape_and_dtype():
    buffer = make_buffer(4, shape=(4, 84, 84), dtype=np.uint8)
    frames = np.random.default_rng(0).integers(0, 256, (1, 4, 84, 84), dtype=np.uint8)
    buffer.add(frames, np.array([1]), np.array([1.0]), frames[:, ::-1], np.array([False]),
               np.array([False]))
    batch = buffer.sample(2)
    assert batch.obs.shape == (1, 2, 4, 84, 84) and batch.obs.dtype == torch.uint8
    assert torch.equal(batch.obs[0, 0], torch.from_numpy(frames[0]))
    assert torch.equal(batch.next_obs[0, 0], torch.from_numpy(frames[0, ::-1].copy()))
    assert buffer.fields["obs"].nbytes == 4 * 4 * 84 * 84  # one byte per pixel


def test_buffer_wraps_around_and_overwrites_the_oldest():
    buffer = make_buffer(4)
    fill(buffer, 6)
    assert len(buffer) == 4 and buffer.position == 2
    assert sorted(buffer.fields["rewards"][:, 0].tolist()) == [2, 3, 4, 5]


def test_buffer_sample_shapes_and_consistency():
    buffer = make_buffer(100)
    fill(buffer, 50)
    batch = buffer.sample(32)
    assert batch.obs.shape == (1, 32, 3) and batch.obs.dtype == torch.float32
    assert batch.actions.dtype == torch.int64 and batch.actions.shape == (1, 32)
    assert batch.weights is None and batch.indices is None  # optional fields: uniform has none
    # Each sampled row is one stored transition, fields kept together.
    torch.testing.assert_close(batch.obs[..., 0], batch.rewards)
    torch.testing.assert_close(batch.next_obs, batch.obs + 0.5)
    assert set(batch.rewards.long().flatten().tolist()) <= set(range(50))


def test_buffer_round_of_batches_is_one_draw_in_order(monkeypatch):
    buffer = make_buffer(100, seed=3)
    fill(buffer, 50)
    expected = np.random.default_rng(3).integers(0, 50, size=4 * 16).reshape(4, 16)
    batches = list(buffer.sample_batches(16, 4))
    assert len(batches) == 4
    for batch, rows in zip(batches, expected):
        assert batch.obs.shape == (1, 16, 3)
        np.testing.assert_array_equal(batch.rewards[0].numpy(), rows)  # fill: reward = index
        torch.testing.assert_close(batch.next_obs, batch.obs + 0.5)
    # Gathered a batch at a time (a tiny gather limit), the batches are the same.
    monkeypatch.setattr(buffers, "GATHER_BYTES", 1)
    buffer.rngs = [np.random.default_rng(3)]
    for chunked, whole in zip(buffer.sample_batches(16, 4), batches, strict=True):
        for field_chunked, field_whole in zip(chunked, whole):
            torch.testing.assert_close(field_chunked, field_whole)


def test_buffer_sampling_is_seeded():
    a, b = make_buffer(100, seed=7), make_buffer(100, seed=7)
    fill(a, 60)
    fill(b, 60)
    torch.testing.assert_close(a.sample(16).rewards, b.sample(16).rewards)


def build_schedule(cfg):
    context = ExplorationContext(envs=1, n_actions=2, total_steps=None, seed=0)
    return build(cfg, context).epsilon


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
    online = build_q_network(MLPConfig(hidden_sizes=[8]), box(4), 2)
    target = build_q_network(MLPConfig(hidden_sizes=[8]), box(4), 2)
    return online, target


def same_weights(a, b) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_hard_update_copies_exactly_at_the_period():
    online, target = two_networks()
    update = HardUpdate(HardTargetConfig(period=3))
    for step in (1, 2):
        update(online, target, step)
        assert not same_weights(online, target)
    update(online, target, 3)
    assert same_weights(online, target)
    with torch.no_grad():
        online.encoder.layers[0].weight.add_(1.0)
    for step in (4, 5):
        update(online, target, step)
        assert not same_weights(online, target)
    update(online, target, 6)
    assert same_weights(online, target)


def test_soft_update_moves_by_exactly_tau():
    online, target = two_networks()
    before = [p.clone() for p in target.parameters()]
    SoftUpdate(SoftTargetConfig(tau=0.25))(online, target, 1)
    for old, new, src in zip(before, target.parameters(), online.parameters()):
        torch.testing.assert_close(new, old + 0.25 * (src - old))
    SoftUpdate(SoftTargetConfig(tau=1.0))(online, target, 2)
    assert same_weights(online, target)


def test_mlp_shape_and_activation():
    net = build_q_network(MLPConfig(hidden_sizes=[32, 16], activation="tanh"), box(4), 3)
    assert net(torch.zeros(5, 4)).shape == (5, 3)
    layers = [*net.encoder.layers, net.head.out]
    assert [type(m).__name__ for m in layers] == ["Linear", "Tanh", "Linear", "Tanh", "Linear"]
    assert layers[0].in_features == 4 and layers[2].out_features == 16


def test_mlp_flattens_and_casts_image_observations():
    net = build_q_network(MLPConfig(hidden_sizes=[8]), box(2, 3, 3, dtype=np.uint8), 4)
    frames = torch.randint(0, 256, (5, 2, 3, 3), dtype=torch.uint8)
    assert net(frames).shape == (5, 4)
    assert net.encoder.layers[0].in_features == 18
