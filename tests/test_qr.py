"""head=qr: QR-DQN's quantile regression (Dabney et al. 2018)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from dqn.agent import Agents
from dqn.checks import ConfigError
from dqn.config import validate
from dqn.losses import quantile_huber
from dqn.nets import build_q_network
from dqn.nets.encoders import MLPConfig
from dqn.nets.qr import QRConfig
from dqn.optim import AdamConfig
from dqn.replay import Batch
from dqn.targets import HardTargetConfig
from tests.conftest import compose_config
from tests.test_heads import trains_resumes_evaluates_records_and_sweeps

MIDPOINTS = torch.tensor([1 / 8, 3 / 8, 5 / 8, 7 / 8])


def test_the_quantile_huber_loss_is_minimised_at_the_midpoint_quantiles():
    samples = torch.rand(4000, generator=torch.Generator().manual_seed(0)) * 100  # U(0, 100)
    quantiles = torch.zeros(4, requires_grad=True)
    optimizer = torch.optim.Adam([quantiles], lr=1.0)
    for _ in range(600):
        optimizer.zero_grad()
        quantile_huber(quantiles, samples, MIDPOINTS).backward()
        optimizer.step()
    # tau = 1/8, 3/8, 5/8, 7/8 of U(0, 100); Huber's quadratic part shifts them < 1
    torch.testing.assert_close(quantiles.detach(), torch.tensor([12.5, 37.5, 62.5, 87.5]),
                               atol=1.5, rtol=0)


def test_a_zero_error_costs_nothing_and_the_loss_is_per_sample():
    quantiles = torch.tensor([[[1.0, 2.0], [3.0, 3.0]]])  # (K=1, B=2, N=2)
    loss = quantile_huber(quantiles, quantiles.clone(), torch.tensor([0.25, 0.75]))
    assert loss.shape == (1, 2)
    assert loss[0, 1] == 0 and loss[0, 0] > 0  # distinct quantiles: each misses the other


@pytest.mark.parametrize("dueling", [False, True])
def test_qr_learns_a_terminal_reward_distribution(dueling):
    torch.manual_seed(0)
    net = build_q_network(MLPConfig(hidden_sizes=[16]), gym.spaces.Box(-1, 1, (3,), np.float32),
                          4, QRConfig(quantiles=4, dueling=dueling))
    agent = Agents([net], AdamConfig(lr=1e-2), HardTargetConfig(10), n_actions=4)
    rewards = torch.where(torch.arange(32) % 2 == 0, 2.0, 4.0)[None]  # half 2, half 4
    batch = Batch(torch.zeros(1, 32, 3), torch.zeros(1, 32, dtype=torch.int64), rewards,
                  torch.randn(1, 32, 3), torch.zeros(1, 32))  # every transition terminal
    for _ in range(600):
        result = agent.update(batch)
    quantiles = agent.online(torch.zeros(1, 1, 3))[0, 0, 0].detach().sort().values
    # where (1 - tau) min(theta - 2, 1) = tau min(4 - theta, 1): the quantile Huber loss
    # with kappa = 1 pulls each quantile off the atoms by Huber's quadratic part
    expected = torch.tensor([2 + 1 / 7, 2.6, 3.4, 4 - 1 / 7])
    torch.testing.assert_close(quantiles, expected, atol=0.05, rtol=0)
    assert float(result.q_means) == pytest.approx(3.0, abs=0.1)
    assert result.td_errors.shape == (1, 32)


def test_qr_refuses_a_rollout_memory_and_too_few_quantiles():
    with pytest.raises(ConfigError, match="head=qr cannot learn from buffer=rollout"):
        validate(compose_config("experiment=pqn", "head=qr"))
    with pytest.raises(ConfigError, match="head.quantiles=0 is out of range: must be >= 1"):
        validate(compose_config("head=qr", "head.quantiles=0"))
    assert validate(compose_config("head=qr")).head.quantiles == 50


def test_qr_with_dueling_and_prioritized_replay_works_end_to_end(tmp_path):
    trains_resumes_evaluates_records_and_sweeps(tmp_path, "head=qr", "head.quantiles=11")
