"""head=hl_gauss: the HL-Gauss histogram loss (Farebrother et al. 2024)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from dqn.agent import Agents
from dqn.checks import ConfigError
from dqn.config import validate
from dqn.nets import build_q_network
from dqn.nets.encoders import MLPConfig
from dqn.nets.hl_gauss import HLGaussConfig, gaussian_histogram
from dqn.optim import AdamConfig
from dqn.replay import Batch
from dqn.targets import HardTargetConfig
from tests.conftest import compose_config
from tests.test_batched import train_in_process
from tests.test_heads import trains_resumes_evaluates_records_and_sweeps


def test_the_target_histogram_is_a_normalised_gaussian_around_the_value():
    edges = torch.linspace(0.0, 10.0, 11)  # bins of width 1, centres 0.5 .. 9.5
    probs = gaussian_histogram(torch.tensor([5.0, 0.0]), edges, sigma=0.75)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2))
    centres = (edges[1:] + edges[:-1]) / 2
    assert (probs[0] * centres).sum() == pytest.approx(5.0, abs=1e-5)  # symmetric: its mean
    assert float(probs[0, 4]) == pytest.approx(float(probs[0, 5])) == float(probs[0].max())
    # N(5, 0.75) gives the bin [4, 5] Phi(0) - Phi(-1 / 0.75)
    assert float(probs[0, 4]) == pytest.approx(0.5 - 0.0912, abs=1e-3)
    assert probs[1, 0] > 0.7 and probs[1, 5:].sum() < 1e-6  # at the edge: truncated


def net_and_agent(**settings) -> Agents:
    torch.manual_seed(0)
    net = build_q_network(MLPConfig(hidden_sizes=[16]), gym.spaces.Box(-1, 1, (3,), np.float32),
                          4, HLGaussConfig(v_min=-5, v_max=5, bins=21, **settings))
    return Agents([net], AdamConfig(lr=1e-2), HardTargetConfig(10), n_actions=4)


@pytest.mark.parametrize("dueling", [False, True])
@pytest.mark.parametrize("source", ["replay", "rollout"])
def test_hl_gauss_learns_the_expected_return_from_replay_and_from_returns(dueling, source):
    agent = net_and_agent(dueling=dueling)
    rewards = torch.where(torch.arange(32) % 2 == 0, 2.0, 4.0)[None]  # half 2, half 4
    actions = torch.zeros(1, 32, dtype=torch.int64)
    if source == "replay":  # terminal transitions: the target is the reward
        batch = Batch(torch.zeros(1, 32, 3), actions, rewards, torch.randn(1, 32, 3),
                      torch.zeros(1, 32))
    else:
        batch = Batch(torch.zeros(1, 32, 3), actions, None, None, None, returns=rewards)
    for _ in range(300):
        result = agent.update(batch)
    with torch.no_grad():
        q = agent.online.q_values(agent.online(torch.zeros(1, 1, 3)))[0, 0, 0]
    assert float(q) == pytest.approx(3.0, abs=0.1)
    assert float(result.q_means) == pytest.approx(3.0, abs=0.1)
    torch.testing.assert_close(result.td_errors.abs().mean(), torch.tensor(1.0), atol=0.1,
                               rtol=0)


def test_targets_beyond_the_support_are_clipped_to_it():
    agent = net_and_agent()
    batch = Batch(torch.zeros(1, 8, 3), torch.zeros(1, 8, dtype=torch.int64), None, None, None,
                  returns=torch.full((1, 8), 50.0))
    for _ in range(300):
        agent.update(batch)
    with torch.no_grad():
        q = agent.online.q_values(agent.online(torch.zeros(1, 1, 3)))[0, 0, 0]
    assert 4.5 < float(q) <= 5.0  # the last bin's centre is 4.76; the Gaussian is truncated


def test_bad_hl_gauss_settings_are_one_line():
    with pytest.raises(ConfigError, match="head.sigma_ratio=0.0 is out of range"):
        validate(compose_config("head=hl_gauss", "head.sigma_ratio=0"))
    with pytest.raises(ConfigError, match="head.bins=1 is out of range: must be >= 2"):
        validate(compose_config("head=hl_gauss", "head.bins=1"))
    assert validate(compose_config("head=hl_gauss")).head.sigma_ratio == 0.75


def test_hl_gauss_trains_with_pqn_s_rollouts(tmp_path):
    final, job = train_in_process(
        tmp_path / "job", "experiment=pqn", "head=hl_gauss", "head.v_min=0",
        "head.v_max=100", "train.total_steps=2048", "eval.every_steps=1024", "eval.episodes=2",
        "eval.final_episodes=3", "network.hidden_sizes=[16,16]", "num_seeds=2")
    assert final > 0 and '"completed"' in (job / "seed_1" / "summary.json").read_text()


def test_hl_gauss_with_dueling_and_prioritized_replay_works_end_to_end(tmp_path):
    trains_resumes_evaluates_records_and_sweeps(tmp_path, "head=hl_gauss", "head.v_min=0",
                                                "head.v_max=50")
