"""Greedy evaluation: whole episodes, time limits, seeding, vectorised and per-env paths."""

from __future__ import annotations

import numpy as np
import pytest

from dqn.envs import make_vector_env
from dqn.envs.make import GymEnvConfig
from dqn.run.evaluation import Evaluator


def balance(obs: np.ndarray) -> np.ndarray:
    """Push the cart towards where the pole falls: lasts long on CartPole."""
    return (obs[:, 2] + 0.5 * obs[:, 3] > 0).astype(np.int64)


def always_left(obs: np.ndarray) -> np.ndarray:
    return np.zeros(len(obs), dtype=np.int64)


def per_env(evaluator: Evaluator) -> Evaluator:
    """Make `evaluator` play CartPole in separate envs, as it does any env without a
    vectorised implementation."""
    evaluator.vector_envs = {n: None for n in (1, 3, 5, 20, 40)}
    return evaluator


@pytest.mark.parametrize("vectorised", [True, False])
def test_plays_exactly_the_episodes_asked_for(vectorised):
    evaluator = Evaluator(GymEnvConfig(), seed=0)
    if not vectorised:
        per_env(evaluator)
    result = evaluator.run(always_left, 40)  # more than max_parallel (32) at once
    assert len(result.returns) == len(result.lengths) == 40
    np.testing.assert_array_equal(result.returns, result.lengths)  # reward 1 per step
    assert 5 <= result.lengths.min() and result.lengths.max() < 20  # it falls quickly
    evaluator.close()


@pytest.mark.parametrize("vectorised", [True, False])
def test_time_limit_ends_episodes(vectorised):
    evaluator = Evaluator(GymEnvConfig(max_episode_steps=50), seed=0)
    if not vectorised:
        per_env(evaluator)
    result = evaluator.run(balance, 5)
    np.testing.assert_array_equal(result.lengths, [50] * 5)
    assert result.mean == 50.0
    evaluator.close()


def test_cartpole_is_vectorised_and_others_are_not():
    env = make_vector_env(GymEnvConfig(), 3)
    assert env is not None and env.num_envs == 3
    env.close()
    assert make_vector_env(GymEnvConfig(id="Acrobot-v1"), 3) is None
    result = Evaluator(GymEnvConfig(id="Acrobot-v1", max_episode_steps=20), 0).run(always_left, 2)
    np.testing.assert_array_equal(result.lengths, [20, 20])


def test_same_seed_same_episodes_and_runs_differ():
    a, b = Evaluator(GymEnvConfig(), seed=3), Evaluator(GymEnvConfig(), seed=3)
    first_a, first_b = a.run(always_left, 20), b.run(always_left, 20)
    np.testing.assert_array_equal(first_a.lengths, first_b.lengths)
    second_a = a.run(always_left, 20)  # fresh start states for every run
    assert not np.array_equal(first_a.lengths, second_a.lengths)
