"""exploration=apex: Ape-X's per-env epsilons (Horgan et al. 2018), each env's from the
formula, told the number of envs when the exploration is built."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from dqn.checks import ConfigError
from dqn.config import validate
from dqn.exploration import ApexExplorationConfig, JointValues
from dqn.interfaces import ExplorationContext
from dqn.options import build
from tests.conftest import TINY_OVERRIDES, compose_config
from tests.test_cli import dqn_train


def apex(envs: int, **settings) -> object:
    return build(ApexExplorationConfig(**settings), ExplorationContext(
        envs=envs, n_actions=3, total_steps=None, seed=0))


def test_each_env_s_epsilon_is_eps_to_the_power_of_one_plus_alpha_i_over_n_minus_one():
    policy = apex(4)
    expected = [0.4 ** (1 + 7 * i / 3) for i in range(4)]
    np.testing.assert_allclose(policy.epsilons, expected)
    assert policy.scalars(0, 0) == {"epsilon": pytest.approx(np.mean(expected))}
    assert apex(1).scalars(123, 4) == {"epsilon": pytest.approx(0.4)}  # one env: eps


def test_actions_follow_each_env_s_own_epsilon():
    """By the rule: one uniform draw per env decides whether it explores (below its own
    epsilon), then the explorers' random actions in env order; counted over many steps,
    each env explores at its own rate."""
    policy = apex(4, epsilon=0.9, alpha=3.0)
    greedy = np.array([2, 2, 2, 2])
    values = JointValues(lambda: np.zeros((1, 4, 3)), 1, 4, 3).of(0)
    values.joint._greedy = greedy[None]
    rng, hand = np.random.default_rng(5), np.random.default_rng(5)
    steps, random_actions = 20_000, np.zeros(4)
    for _ in range(steps):
        actions = policy.select(values, 0, 0, rng)
        explore = hand.random(4) < policy.epsilons
        expected = greedy.copy()
        expected[explore] = hand.integers(3, size=int(explore.sum()))
        np.testing.assert_array_equal(actions, expected)
        random_actions += actions != 2
    rate = policy.epsilons * 2 / 3  # a random action is non-greedy 2/3 of the time
    margin = 5 * np.sqrt(rate * (1 - rate) / steps)
    assert np.all(np.abs(random_actions / steps - rate) <= margin)


def test_apex_refusals_name_the_key():
    with pytest.raises(ConfigError, match="exploration.epsilon=1.5 is out of range"):
        validate(compose_config("exploration=apex", "exploration.epsilon=1.5"))
    with pytest.raises(ConfigError, match="exploration.alpha=-1.0 is out of range"):
        validate(compose_config("exploration=apex", "exploration.alpha=-1"))


def test_a_run_with_many_envs_logs_the_mean_epsilon(tmp_path):
    result = dqn_train(tmp_path, *TINY_OVERRIDES, "exploration=apex", "env.num_envs=4",
                       "logger=none", "hydra.run.dir=run")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    expected = np.mean([0.4 ** (1 + 7 * i / 3) for i in range(4)])
    assert rows and all(float(row["epsilon"]) == pytest.approx(expected) for row in rows)
