"""head=munchausen: Munchausen-DQN (Vieillard et al. 2020), its target computed by hand
from the paper's formula on a batch where the target network differs from the online one."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from dqn.agent import Agents
from dqn.checks import ConfigError
from dqn.config import validate
from dqn.nets import build_q_network
from dqn.nets.encoders import MLPConfig
from dqn.nets.munchausen import MunchausenConfig
from dqn.optim import AdamConfig
from dqn.replay import Batch
from dqn.targets import HardTargetConfig
from tests.conftest import TINY_OVERRIDES, compose_config
from tests.test_cli import dqn_train

SPACE = gym.spaces.Box(-1, 1, (3,), np.float32)


def agents_with(cfg: MunchausenConfig, target: bool = True) -> Agents:
    torch.manual_seed(0)
    net = build_q_network(MLPConfig(hidden_sizes=[8]), SPACE, 3, cfg)
    agents = Agents([net], AdamConfig(), HardTargetConfig(100), n_actions=3)
    with torch.no_grad():  # a target network that differs from the online one
        for parameter in agents.target.parameters():
            parameter.add_(torch.randn_like(parameter))
    return agents


def munchausen_target(q_s, q_next, action, reward, discount, tau, alpha, l0) -> float:
    """y = r + alpha [tau ln pi(a|s)]_{l0}^0 + discount sum_a' pi(a'|s') (q(s', a') -
    tau ln pi(a'|s')), pi = softmax(q / tau) of the target network, term by term."""
    def log_pi(q):
        top = max(q)
        log_z = top / tau + math.log(sum(math.exp((v - top) / tau) for v in q))
        return [v / tau - log_z for v in q]

    bonus = alpha * min(max(tau * log_pi(q_s)[action], l0), 0.0)
    soft = sum(math.exp(lp) * (q - tau * lp) for q, lp in zip(q_next, log_pi(q_next)))
    return reward + bonus + discount * soft


@pytest.mark.parametrize("dueling", [False, True])
def test_the_target_training_uses_is_the_papers(dueling):
    cfg = MunchausenConfig(dueling=dueling, tau=0.5)  # a tau at which the bonus is unclipped
    agents = agents_with(cfg)
    rng = np.random.default_rng(0)
    batch = Batch(torch.as_tensor(rng.uniform(-1, 1, (1, 6, 3)), dtype=torch.float32),
                  torch.as_tensor(rng.integers(0, 3, (1, 6))),
                  torch.as_tensor(rng.normal(size=(1, 6)), dtype=torch.float32),
                  torch.as_tensor(rng.uniform(-1, 1, (1, 6, 3)), dtype=torch.float32),
                  torch.tensor([[0.99, 0.0, 0.99, 0.99, 0.99, 0.5]]))
    with torch.no_grad():
        q_s, q_next = agents.target(batch.obs)[0], agents.target(batch.next_obs)[0]
        online = agents.online(batch.obs)[0]
    assert not torch.allclose(q_s, online)
    result = agents.update(batch)
    q_taken = online.gather(-1, batch.actions[0, :, None])[:, 0]
    clipped = 0
    for j in range(6):
        a = int(batch.actions[0, j])
        expected = munchausen_target(q_s[j].tolist(), q_next[j].tolist(), a,
                                     float(batch.rewards[0, j]), float(batch.discounts[0, j]),
                                     cfg.tau, cfg.alpha, cfg.l0)
        log_pi = torch.log_softmax(q_s[j] / cfg.tau, -1)[a]
        clipped += float(cfg.tau * log_pi) < cfg.l0
        got = float(result.td_errors[0, j] + q_taken[j])  # td error = y - Q(s, a)
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-5)
    assert 0 < clipped < 6  # both sides of the clip are exercised


def test_only_what_the_head_needs_is_computed():
    """M-DQN reads the target at s and s' and chooses no a*: three passes, none of the
    online network at s' that Double DQN's choice would cost."""
    agents = agents_with(MunchausenConfig())
    passes = []
    for name, network in (("online", agents.online), ("target", agents.target)):
        forward = network.forward
        network.forward = (lambda f, n: lambda obs, draws=None: passes.append(n) or f(obs, draws)
                           )(forward, name)
    agents.update(Batch(torch.zeros(1, 4, 3), torch.zeros(1, 4, dtype=torch.int64),
                        torch.zeros(1, 4), torch.zeros(1, 4, 3), torch.ones(1, 4)))
    assert sorted(passes) == ["online", "target", "target"]


def test_munchausen_refusals_name_the_key():
    with pytest.raises(ConfigError, match="head=munchausen cannot learn from buffer=rollout"):
        validate(compose_config("experiment=pqn", "head=munchausen"))
    with pytest.raises(ConfigError, match="buffer.n_step=3 is out of range: must be 1 with "
                                          "head=munchausen"):
        validate(compose_config("head=munchausen", "buffer.n_step=3"))
    with pytest.raises(ConfigError, match="head.l0=0.0 is out of range: must be < 0"):
        validate(compose_config("head=munchausen", "head.l0=0"))
    config = validate(compose_config("head=munchausen"))
    assert (config.head.tau, config.head.alpha, config.head.l0) == (0.03, 0.9, -1.0)


def test_munchausen_dueling_trains_two_seeds_and_evaluates(tmp_path):
    result = dqn_train(tmp_path, *TINY_OVERRIDES, "head=munchausen", "head.dueling=true",
                       "num_seeds=2", "logger=none", "hydra.run.dir=job")
    assert result.returncode == 0, result.stderr
    assert "M-DQN" in result.stdout + result.stderr


def test_munchausen_with_apex_exploration_resumes_to_the_same_numbers(tmp_path):
    """A killed run of the two new options together (dueling M-DQN, Ape-X's epsilons over
    two envs, prioritized replay) resumes to the numbers of the uninterrupted one."""
    from tests.test_resume import RUN, assert_same_run, finish, kill_and_resume, start

    args = [*(a for a in RUN if not a.startswith("train.total_steps=")),
            "train.total_steps=2000", "head=munchausen", "head.dueling=true",
            "exploration=apex", "env.num_envs=2", "buffer=prioritized"]
    code, output = finish(start(tmp_path, *args, "hydra.run.dir=reference"))
    assert code == 0, output
    assert "resumed" in kill_and_resume(tmp_path, args, "run", 1000)
    assert_same_run(tmp_path / "run", tmp_path / "reference")
