"""head=iqn: Implicit Quantile Networks (Dabney et al. 2018b), checked against the paper's
formulas by hand, with its fractions drawn from the agent's own seeded generators."""

from __future__ import annotations

import copy
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
from dqn.nets.iqn import IQNConfig
from dqn.optim import AdamConfig
from dqn.replay import Batch
from dqn.targets import HardTargetConfig
from tests.conftest import compose_config
from tests.test_heads import trains_resumes_evaluates_records_and_sweeps

SPACE = gym.spaces.Box(-1, 1, (3,), np.float32)
SMALL = IQNConfig(embedding=5, fractions=4, target_fractions=3, acting_fractions=2)


def iqn_agents(k: int = 1, cfg: IQNConfig = SMALL, double_q: bool = True,
               space: gym.spaces.Box = SPACE) -> Agents:
    networks = []
    for seed in range(k):
        torch.manual_seed(seed)
        networks.append(build_q_network(MLPConfig(hidden_sizes=[6]), space, 2, cfg))
    agents = Agents(networks, AdamConfig(lr=1e-2), HardTargetConfig(100), n_actions=2,
                    double_q=double_q)
    with torch.no_grad():  # a target network that differs from the online one
        for parameter in agents.target.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return agents


def batch_of(k: int = 1, b: int = 5) -> Batch:
    rng = np.random.default_rng(1)
    obs = torch.as_tensor(rng.uniform(-1, 1, (k, b, 3)), dtype=torch.float32)
    next_obs = torch.as_tensor(rng.uniform(-1, 1, (k, b, 3)), dtype=torch.float32)
    actions = torch.as_tensor(rng.integers(0, 2, (k, b)))
    rewards = torch.as_tensor(rng.normal(size=(k, b)), dtype=torch.float32)
    discounts = torch.tensor([[0.99, 0.0, 0.99**3, 0.99, 0.5]] * k)[:, :b]
    return Batch(obs, actions, rewards, next_obs, discounts)


def by_hand(network: torch.nn.Module, obs: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """Z(s, a; tau) (A, M) of one observation from the paper's formula, in float64:
    f(psi(s) * ReLU(sum_i cos(pi i tau) w_i + b)), psi the encoder."""
    state = {name: value.detach().double().numpy() for name, value in network.state_dict().items()}
    psi = np.maximum(state["encoder.layers.0.weight"] @ obs + state["encoder.layers.0.bias"], 0)
    out = np.zeros((2, len(taus)))
    for m, tau in enumerate(taus):
        cosines = np.array([math.cos(math.pi * i * tau) for i in range(5)])
        phi = np.maximum(state["head.embed.weight"] @ cosines + state["head.embed.bias"], 0)
        out[:, m] = state["head.out.weight"] @ (psi * phi) + state["head.out.bias"]
    return out


def quantile_huber_by_hand(quantiles, taus, targets) -> float:
    total = 0.0
    for i, (theta, tau) in enumerate(zip(quantiles, taus)):
        for target in targets:
            u = target - theta
            huber = 0.5 * u * u if abs(u) <= 1 else abs(u) - 0.5
            total += abs(tau - (u < 0)) * huber / len(targets)
    return total


@pytest.mark.parametrize("double_q", [True, False])
def test_the_loss_training_uses_is_the_papers_on_a_batch_where_the_target_differs(double_q):
    agents = iqn_agents(double_q=double_q)
    batch = batch_of()
    seen = {}
    loss = agents.head.loss
    agents.head.loss = lambda context, regression: seen.setdefault(
        "terms", (context, loss(context, regression)))[1]
    online, target = copy.deepcopy(agents.online.net), copy.deepcopy(agents.target.net)
    agents.update(batch)
    context, terms = seen["terms"]
    draws = {name: value[0].double().numpy() for name, value in context.draws.items()}
    assert draws["online"].shape == (5, 4) and draws["target_next"].shape == (5, 3)
    chooser = "online_next" if double_q else "next_actions"  # the pass that picks a*
    assert set(draws) == {"online", "target_next", chooser}
    assert draws[chooser].shape == (5, 2)  # K fractions choose a*, with or without Double
    obs, next_obs = batch.obs[0].double().numpy(), batch.next_obs[0].double().numpy()
    for j in range(5):
        a = int(batch.actions[0, j])
        quantiles = by_hand(online, obs[j], draws["online"][j])[a]
        choosing = by_hand(online if double_q else target, next_obs[j], draws[chooser][j])
        best = int(choosing.mean(-1).argmax())
        next_quantiles = by_hand(target, next_obs[j], draws["target_next"][j])[best]
        targets = float(batch.rewards[0, j]) + float(batch.discounts[0, j]) * next_quantiles
        expected = quantile_huber_by_hand(quantiles, draws["online"][j], targets)
        assert float(terms.per_sample[0, j].detach()) == pytest.approx(expected, rel=1e-4, abs=1e-6)
        assert float(terms.q_taken[0, j]) == pytest.approx(quantiles.mean(), rel=1e-4, abs=1e-6)


def test_each_pass_draws_its_own_count_from_the_agent_s_generator():
    agents = iqn_agents(cfg=IQNConfig(acting_fractions=32))  # the paper's 64, 64, 32
    assert agents.draws("act", 3).shape == (1, 3, 32)
    assert agents.draws("online", 3).shape == (1, 3, 64)
    assert agents.draws("target", 3).shape == (1, 3, 64)
    generator = torch.Generator().manual_seed(0)  # Agents' default training stream
    torch.testing.assert_close(iqn_agents().draws("online", 5)[0],
                               torch.rand(5, 4, generator=generator))


def test_k_agents_in_one_batched_computation_each_train_as_alone():
    """num_seeds=2: vmap over the two networks with each agent's own fractions gives what
    each agent computes alone from its own generator."""
    together = iqn_agents(k=2)
    alone = []
    for k in range(2):
        agent = iqn_agents(k=1)
        agent.online.load_weights(together.online.member_state_dict(k))
        agent.target.load_weights(together.target.member_state_dict(k))
        agent.noise = [torch.Generator().manual_seed(k)]
        alone.append(agent)
    batch = batch_of(k=2)
    for _ in range(3):
        result = together.update(batch)
        singles = [a.update(Batch(*(None if f is None else f[k:k + 1] for f in batch)))
                   for k, a in enumerate(alone)]
    torch.testing.assert_close(result.losses, torch.cat([s.losses for s in singles]))
    obs = np.zeros((2, 4, 3), np.float32)
    together.acting(False)
    for agent in alone:
        agent.acting(False)
        agent.eval_noise = [torch.Generator().manual_seed(2 + alone.index(agent))]
    q = together.q_values(obs)
    torch.testing.assert_close(torch.from_numpy(q[1]),
                               torch.from_numpy(alone[1].q_values(obs[1:])[0]))


def test_iqn_refuses_a_rollout_memory_and_takes_dueling():
    with pytest.raises(ConfigError, match="head=iqn cannot learn from buffer=rollout"):
        validate(compose_config("experiment=pqn", "head=iqn"))
    with pytest.raises(ConfigError, match="head.fractions=0 is out of range: must be >= 1"):
        validate(compose_config("head=iqn", "head.fractions=0"))
    config = validate(compose_config("head=iqn", "head.dueling=true"))
    assert (config.head.fractions, config.head.target_fractions,
            config.head.acting_fractions, config.head.embedding) == (64, 64, 32, 64)


def test_iqn_with_dueling_and_prioritized_replay_works_end_to_end(tmp_path):
    trains_resumes_evaluates_records_and_sweeps(
        tmp_path, "head=iqn", "head.fractions=8", "head.target_fractions=8",
        "head.acting_fractions=4", "head.embedding=16")


def test_one_seed_gives_one_score_when_a_checkpoint_is_evaluated_twice(tmp_path):
    from tests.conftest import TINY_OVERRIDES, run_python
    from tests.test_cli import dqn_train

    small = ["head.fractions=8", "head.target_fractions=8", "head.acting_fractions=4"]
    trained = dqn_train(tmp_path, *TINY_OVERRIDES, "head=iqn", *small, "logger=none",
                        "hydra.run.dir=run")
    assert trained.returncode == 0, trained.stderr

    def score(seed: int) -> str:
        result = run_python(tmp_path, "-m", "dqn.evaluate", "checkpoint=run", "episodes=5",
                            f"seed={seed}", "env.max_episode_steps=60")
        assert result.returncode == 0, result.stderr
        return next(line for line in result.stdout.splitlines() if "best.pt" in line)

    assert score(3) == score(3)


def test_an_agent_whose_evaluation_ended_draws_what_its_single_run_would():
    """num_seeds=2: agent 0's evaluation (1 episode of at most 5 steps) ends before agent
    1's (3 episodes); agent 0's evaluation generator then stands still, as alone."""
    from dataclasses import replace

    from dqn.envs.make import GymEnvConfig
    from dqn.run.evaluation import Evaluator, play_together

    env = GymEnvConfig(id="CartPole-v1")
    cartpole = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
    together, alone = iqn_agents(k=2, space=cartpole), iqn_agents(k=1, space=cartpole)
    alone.online.load_weights(together.online.member_state_dict(0))
    alone.eval_noise[0].set_state(together.eval_noise[0].get_state())
    together.acting(False)
    alone.acting(False)
    short = [Evaluator(replace(env, max_episode_steps=5), 0), Evaluator(env, 1)]
    play_together(short, lambda obs, playing: together.greedy_of(playing, obs), 1)
    Evaluator(replace(env, max_episode_steps=5), 0).run(lambda obs: alone.greedy(obs[None])[0],
                                                         1)
    assert torch.equal(together.eval_noise[0].get_state(), alone.eval_noise[0].get_state())
