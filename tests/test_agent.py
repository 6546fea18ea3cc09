"""The TD update: bootstrapping rules, acting, and that an update learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dqn.agent import DQNAgent, td_target
from dqn.buffers import Batch
from dqn.config import AdamConfig, AdamWConfig, MLPConfig
from dqn.networks import build_q_network
from dqn.targets import HardUpdate


def test_td_target_bootstraps_truncated_but_not_terminated():
    rewards = torch.tensor([1.0, 1.0, 1.0])
    next_q = torch.tensor([[2.0, 5.0], [2.0, 5.0], [7.0, 3.0]])
    # Row 0: terminated. Row 1: truncated by a time limit (stored as not terminated).
    # Row 2: an ordinary step.
    terminated = torch.tensor([1.0, 0.0, 0.0])
    target = td_target(rewards, next_q, terminated, gamma=0.9)
    torch.testing.assert_close(target, torch.tensor([1.0, 1.0 + 0.9 * 5.0, 1.0 + 0.9 * 7.0]))


def test_double_q_bootstraps_the_online_networks_choice():
    next_q_target = torch.tensor([[2.0, 5.0], [7.0, 3.0]])
    next_q_online = torch.tensor([[9.0, 1.0], [0.0, 4.0]])  # prefers action 0, then 1
    target = td_target(torch.zeros(2), next_q_target, torch.tensor([0.0, 1.0]), 0.5,
                       next_q_online)
    torch.testing.assert_close(target, torch.tensor([0.5 * 2.0, 0.0]))


def make_agent(optimizer=None, seed=0, loss="huber") -> DQNAgent:
    torch.manual_seed(seed)
    net = build_q_network(MLPConfig(hidden_sizes=[32, 32]), 4, 2)
    return DQNAgent(net, optimizer or AdamConfig(lr=1e-2), HardUpdate(10), 0.9, loss, 2,
                    np.random.default_rng(seed))


def test_act_is_greedy_at_zero_epsilon_and_uniform_at_one():
    agent = make_agent()
    obs = np.ones(4, dtype=np.float32)
    greedy = int(agent.online(torch.as_tensor(obs[None])).argmax())
    assert {agent.act(obs, 0.0) for _ in range(20)} == {greedy}
    counts = np.bincount([agent.act(obs, 1.0) for _ in range(2000)], minlength=2)
    assert 900 < counts[0] < 1100


def terminal_batch(n=32) -> Batch:
    rng = np.random.default_rng(0)
    obs = torch.as_tensor(rng.normal(size=(n, 4)), dtype=torch.float32)
    return Batch(obs, torch.as_tensor(rng.integers(0, 2, n)), torch.ones(n), obs.clone(),
                 torch.ones(n))


@pytest.mark.parametrize("loss", ["huber", "mse"])
def test_updates_fit_terminal_rewards(loss):
    agent = make_agent(loss=loss)
    batch = terminal_batch()
    first, _ = agent.update(batch)
    for _ in range(300):
        last, q_mean = agent.update(batch)
    assert float(last) < 0.01 * float(first)
    assert float(q_mean) == pytest.approx(1.0, abs=0.05)  # all rewards 1, no bootstrap
    assert agent.gradient_steps == 301


@pytest.mark.parametrize("clip", [{"clip_grad_value": 1e-3}, {"clip_grad_norm": 1e-3}])
def test_gradients_are_clipped_before_the_optimizer_step(clip):
    agent = make_agent(AdamWConfig(**clip))
    seen = []
    step = agent.optimizer.step

    def inspecting_step(*args, **kwargs):
        grads = [p.grad for p in agent.online.parameters()]
        seen.append((max(float(g.abs().max()) for g in grads),
                     float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads])))))
        return step(*args, **kwargs)

    agent.optimizer.step = inspecting_step
    batch = terminal_batch()
    agent.update(batch._replace(rewards=batch.rewards * 1e4))
    largest, norm = seen[0]
    bound = largest if "clip_grad_value" in clip else norm
    assert bound <= 1e-3 * (1 + 1e-5)


def test_target_network_follows_updater():
    agent = make_agent()
    batch = terminal_batch()
    for _ in range(9):
        agent.update(batch)
    assert not torch.equal(agent.online[0].weight, agent.target[0].weight)
    agent.update(batch)  # gradient step 10 = the hard-update period
    assert torch.equal(agent.online[0].weight, agent.target[0].weight)
    assert not agent.target[0].weight.requires_grad


@pytest.mark.parametrize("cfg", [AdamConfig(lr=1e-2), AdamWConfig(lr=1e-2, amsgrad=True)])
def test_direct_fused_step_matches_torch_optim(cfg):
    from dqn.agent import build_optimizer

    torch.manual_seed(0)
    ours_net = build_q_network(MLPConfig(hidden_sizes=[8]), 4, 2)
    torch_net = build_q_network(MLPConfig(hidden_sizes=[8]), 4, 2)
    torch_net.load_state_dict(ours_net.state_dict())
    ours = build_optimizer(cfg, ours_net.parameters())
    reference = (torch.optim.AdamW if isinstance(cfg, AdamWConfig) else torch.optim.Adam)(
        torch_net.parameters(), lr=cfg.lr, eps=cfg.eps, weight_decay=cfg.weight_decay,
        amsgrad=cfg.amsgrad, fused=True)
    x = torch.randn(16, 4)
    for _ in range(5):
        for net, optimizer in ((ours_net, ours), (torch_net, reference)):
            optimizer.zero_grad()
            net(x).pow(2).mean().backward()
            optimizer.step()
    for a, b in zip(ours_net.parameters(), torch_net.parameters()):
        assert torch.equal(a, b)
