"""The TD update: bootstrapping rules, acting, and that an update learns."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from dqn.agent import Agents
from dqn.exploration import epsilon_greedy
from dqn.interfaces import TDContext
from dqn.nets import build_q_network, greedy_actions
from dqn.nets.encoders import MLPConfig
from dqn.nets.heads import QConfig, QHead
from dqn.optim import AdamConfig, AdamWConfig
from dqn.replay import Batch
from dqn.replay.uniform import UniformBufferConfig, UniformReplay
from dqn.targets import HardTargetConfig

SPACE = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)


def test_td_target_bootstraps_truncated_but_not_terminated():
    buffer = UniformReplay(UniformBufferConfig(capacity=3, batch_size=3), SPACE,
                           [np.random.default_rng(0)], gamma=0.9, device="cpu")
    obs = np.zeros((1, 4), np.float32)
    # Row 0: terminated. Row 1: truncated by a time limit. Row 2: an ordinary step.
    for terminated, truncated in ((True, False), (False, True), (False, False)):
        buffer.add(obs, np.array([1]), np.array([1.0]), obs, np.array([terminated]),
                   np.array([truncated]))
    batch = Batch(*buffer.gather(np.arange(3)[None]))
    next_q = torch.tensor([[[2.0, 5.0], [2.0, 5.0], [7.0, 3.0]]])
    head = QHead(QConfig(), 4, 2)
    context = TDContext(online=torch.zeros(1, 3, 2), actions=batch.actions,
                        rewards=batch.rewards, discounts=batch.discounts, returns=None,
                        next_output=head.taken(next_q, greedy_actions(next_q)))
    terms = head.loss(context, "mse")
    torch.testing.assert_close(terms.td_errors,
                               torch.tensor([[1.0, 1.0 + 0.9 * 5.0, 1.0 + 0.9 * 7.0]]))


def test_double_q_bootstraps_the_online_networks_choice():
    agent = make_agent()
    agent.double_q = True
    next_q_target = torch.tensor([[[2.0, 5.0], [7.0, 3.0]]])
    next_q_online = torch.tensor([[[9.0, 1.0], [0.0, 4.0]]])  # prefers action 0, then 1
    outputs = iter([torch.zeros(1, 2, 2, requires_grad=True), next_q_online])
    agent.online.forward = lambda obs, draws=None: next(outputs)
    agent.target.forward = lambda obs, draws=None: next_q_target
    seen = []
    loss = agent.head.loss
    agent.head.loss = lambda *args: seen.append(loss(*args)) or seen[-1]
    agent.optimizer_step = lambda: None
    batch = Batch(torch.zeros(1, 2, 4), torch.zeros(1, 2, dtype=torch.int64), torch.zeros(1, 2),
                  torch.zeros(1, 2, 4), torch.tensor([[0.5, 0.0]]))  # row 1 terminated
    agent.update(batch)
    torch.testing.assert_close(seen[0].td_errors, torch.tensor([[0.5 * 2.0, 0.0]]))


def make_agent(optimizer=None, seed=0, loss="huber") -> Agents:
    torch.manual_seed(seed)
    net = build_q_network(MLPConfig(hidden_sizes=[32, 32]), SPACE, 2)
    return Agents([net], optimizer or AdamConfig(lr=1e-2), HardTargetConfig(10), loss=loss,
                  double_q=False, n_actions=2)


def test_epsilon_greedy_is_greedy_at_zero_epsilon_and_uniform_at_one():
    agent = make_agent()
    obs = np.ones((1, 3, 4), dtype=np.float32)  # one agent, three envs
    network = agent.online.net
    greedy = int(network(torch.as_tensor(obs[0, :1])).argmax())
    rng = np.random.default_rng(0)

    def act(epsilon: float) -> np.ndarray:
        return epsilon_greedy(agent.values(obs).of(0).greedy, epsilon, rng, 2, 3)

    assert act(0.0).shape == (3,)
    assert {int(a) for _ in range(20) for a in act(0.0)} == {greedy}
    counts = np.bincount(np.concatenate([act(1.0) for _ in range(1000)]),
                         minlength=2)  # each env explores on its own draw
    assert 1350 < counts[0] < 1650


def terminal_batch(n=32) -> Batch:
    rng = np.random.default_rng(0)
    obs = torch.as_tensor(rng.normal(size=(1, n, 4)), dtype=torch.float32)
    return Batch(obs, torch.as_tensor(rng.integers(0, 2, (1, n))), torch.ones(1, n),
                 obs.clone(), torch.zeros(1, n))


@pytest.mark.parametrize("loss", ["huber", "mse"])
def test_updates_fit_terminal_rewards(loss):
    agent = make_agent(loss=loss)
    batch = terminal_batch()
    first = agent.update(batch).losses
    for _ in range(300):
        result = agent.update(batch)
    assert float(result.losses) < 0.01 * float(first)
    assert float(result.q_means) == pytest.approx(1.0, abs=0.05)  # all rewards 1, no bootstrap
    assert agent.gradient_steps == 301


@pytest.mark.parametrize("clip", [{"clip_grad_value": 1e-3}, {"clip_grad_norm": 1e-3}])
def test_gradients_are_clipped_before_the_optimizer_step(clip):
    agent = make_agent(AdamWConfig(**clip))
    seen = []
    step = agent.optimizer_step

    def inspecting_step():
        grads = [p.grad for p in agent.online.parameters()]
        seen.append((max(float(g.abs().max()) for g in grads),
                     float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads])))))
        return step()

    agent.optimizer_step = inspecting_step
    batch = terminal_batch()
    agent.update(batch._replace(rewards=batch.rewards * 1e4))
    largest, norm = seen[0]
    bound = largest if "clip_grad_value" in clip else norm
    assert bound <= 1e-3 * (1 + 1e-5)


def test_target_network_follows_updater():
    agent = make_agent()
    batch = terminal_batch()
    online, target = agent.online.net.encoder.layers[0], agent.target.net.encoder.layers[0]
    for _ in range(9):
        agent.update(batch)
    assert not torch.equal(online.weight, target.weight)
    agent.update(batch)  # gradient step 10 = the hard-update period
    assert torch.equal(online.weight, target.weight)
    assert not target.weight.requires_grad


def test_importance_weights_scale_each_samples_loss():
    agent, weighted = make_agent(), make_agent()
    batch = terminal_batch(8)
    plain = agent.update(batch).losses
    halved = weighted.update(batch._replace(weights=torch.full((1, 8), 0.5))).losses
    torch.testing.assert_close(halved, plain * 0.5)
