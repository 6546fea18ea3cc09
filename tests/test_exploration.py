"""Exploration policies: one epsilon-greedy rule for training, evaluation and video, Q-values
computed only when a policy asks, noisy nets' mode set by the caller, scalars by name."""

from __future__ import annotations

import numpy as np
import pytest

from dqn.envs.make import GymEnvConfig
from dqn.exploration import (
    EpsilonGreedy,
    ExponentialExplorationConfig,
    JointValues,
    LinearExplorationConfig,
    MultiplicativeExplorationConfig,
    NoExplorationConfig,
    epsilon_greedy,
    schedule_length,
)
from dqn.interfaces import ExplorationContext
from dqn.options import build, options
from dqn.run.evaluation import Evaluator
from dqn.run.video import record_episodes

CONTEXT = ExplorationContext(envs=1, n_actions=4, total_steps=None, seed=0)


def counting_values(q_values: np.ndarray) -> tuple[JointValues, list[int]]:
    """JointValues over fixed Q-values (K, N, A), and how often they were computed."""
    calls: list[int] = []
    values = JointValues(lambda: calls.append(1) or q_values, *q_values.shape)
    return values, calls


def test_epsilon_greedy_draws_which_envs_explore_then_their_actions():
    """The convention every caller shares: rng.random(N) < epsilon picks the exploring
    envs, then rng.integers(A, size=count) their actions, in env order."""
    greedy = np.array([1, 1, 1, 1, 1, 1])
    actions = epsilon_greedy(lambda: greedy, 0.5, np.random.default_rng(4), 5, 6)
    rng = np.random.default_rng(4)
    explore = rng.random(6) < 0.5
    expected = greedy.copy()
    expected[explore] = rng.integers(5, size=int(explore.sum()))
    assert explore.any() and not explore.all()
    np.testing.assert_array_equal(actions, expected)
    assert actions.dtype == np.int64


def test_no_forward_pass_when_every_env_explores_and_one_for_all_agents_otherwise():
    q = np.random.default_rng(0).normal(size=(3, 2, 4))
    values, calls = counting_values(q)
    linear = build(LinearExplorationConfig(start=1.0, end=1.0, steps=10), CONTEXT)
    for k in range(3):
        linear.select(values.of(k), 0, 0, np.random.default_rng(k))
    assert calls == []
    greedy = build(NoExplorationConfig(), CONTEXT)
    actions = [greedy.select(values.of(k), 0, 0, np.random.default_rng(k)) for k in range(3)]
    assert calls == [1]
    np.testing.assert_array_equal(np.stack(actions), q.argmax(-1))


@pytest.mark.parametrize("cfg", [LinearExplorationConfig(steps=100),
                                 ExponentialExplorationConfig(),
                                 MultiplicativeExplorationConfig(), NoExplorationConfig()])
def test_epsilon_options_select_by_the_shared_rule_and_log_epsilon(cfg):
    policy = build(cfg, CONTEXT)
    assert isinstance(policy, EpsilonGreedy)
    q = np.random.default_rng(1).normal(size=(1, 8, 3))
    epsilon = policy.epsilon(40, 3)
    assert policy.scalars(40, 3) == {"epsilon": epsilon}
    assert policy.describe({"epsilon": 0.9764}) == "eps 0.976"
    actions = policy.select(JointValues(lambda: q, 1, 8, 3).of(0), 40, 3,
                            np.random.default_rng(2))
    if epsilon:
        expected = epsilon_greedy(lambda: q[0].argmax(-1), epsilon, np.random.default_rng(2), 3, 8)
    else:
        expected = q[0].argmax(-1)
    np.testing.assert_array_equal(actions, expected)


def test_every_option_logs_the_same_names_at_every_step():
    for name, entry in options("exploration").items():
        cfg = entry.schema()
        if hasattr(cfg, "steps") and cfg.steps is None:
            cfg.steps = schedule_length(None, None, None)
        policy = build(cfg, CONTEXT)
        names = set(policy.scalars(0, 0))
        assert names and all(set(policy.scalars(s, e)) == names
                             for s, e in ((10, 1), (10**6, 10**4))), name


def test_evaluation_explores_by_the_training_rule_with_its_own_generator():
    evaluator = Evaluator(GymEnvConfig(), seed=5, epsilon=0.3)
    greedy = np.zeros(7, dtype=np.int64)
    expected = epsilon_greedy(lambda: greedy, 0.3, np.random.default_rng([5, 1]), 2, 7)
    np.testing.assert_array_equal(evaluator.explore(greedy, 2), expected)
    evaluator.close()


def test_video_explores_by_the_training_rule_and_skips_the_policy_when_exploring(
        tmp_path, monkeypatch):
    monkeypatch.setattr("dqn.run.video.Mp4File.add", lambda self, frame: None)
    calls = []

    def policy(obs):
        calls.append(1)
        return np.zeros(len(obs), dtype=np.int64)

    recording = record_episodes(policy, GymEnvConfig(), tmp_path, "x", 1, seed=3, max_steps=30,
                                epsilon=1.0)
    assert calls == [] and recording.lengths[0] > 0
    # the actions a random-only episode takes are the training rule's draws, one env a step
    explorer = np.random.default_rng([3, 1])
    actions = [int(epsilon_greedy(lambda: None, 1.0, explorer, 2, 1)[0])
               for _ in range(recording.lengths[0])]
    taken = iter(actions)
    replay = record_episodes(lambda obs: np.array([next(taken)]), GymEnvConfig(), tmp_path, "y",
                             1, seed=3, max_steps=30)
    assert replay.returns == recording.returns
