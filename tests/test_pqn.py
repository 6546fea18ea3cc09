"""PQN's parts: Q(lambda) returns, the rollout memory, no target network, LayerNorm,
RAdam with a linear learning-rate decay, exploration over a fraction of the budget."""

from __future__ import annotations

import csv
import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from dqn.agent import Agents
from dqn.checks import ConfigError
from dqn.config import validate
from dqn.nets import build_q_network
from dqn.optim import RAdamConfig, decayed_lr
from dqn.replay.rollout import RolloutBuffer, RolloutConfig, q_lambda_returns
from dqn.run.checkpoint import load_checkpoint
from dqn.targets import HardTargetConfig, NoTargetConfig
from tests.conftest import compose_config, run_python
from tests.dashboard import dashboard

GAMMA, LAM = 0.9, 0.5


def test_q_lambda_returns_match_a_hand_computed_rollout():
    """Six steps of one env: a termination at t=1, a truncation at t=3, the rollout's end
    at t=5; each return is written out from the definition."""
    r = np.array([1.0, 2.0, 0.5, 1.0, 3.0, -1.0], np.float32)[:, None]
    v = np.array([10.0, 99.0, 4.0, 6.0, 2.0, 8.0], np.float32)[:, None]  # V(s'_t)
    terminated = np.array([0, 1, 0, 0, 0, 0], bool)[:, None]
    cut = np.array([0, 1, 0, 1, 0, 0], bool)[:, None]
    g5 = -1.0 + GAMMA * 8.0  # the rollout's end: one step, bootstrapped
    g4 = 3.0 + GAMMA * ((1 - LAM) * 2.0 + LAM * g5)
    g3 = 1.0 + GAMMA * 6.0  # truncated: bootstraps from its final observation only
    g2 = 0.5 + GAMMA * ((1 - LAM) * 4.0 + LAM * g3)
    g1 = 2.0  # terminated: V(s'_1) never enters
    g0 = 1.0 + GAMMA * ((1 - LAM) * 10.0 + LAM * g1)
    returns = q_lambda_returns(r, v, terminated, cut, GAMMA, LAM)
    np.testing.assert_allclose(returns[:, 0], [g0, g1, g2, g3, g4, g5], rtol=1e-6)


def random_rollout(seed: int, steps: int = 7, envs: int = 3):
    rng = np.random.default_rng(seed)
    r = rng.normal(size=(steps, envs)).astype(np.float32)
    v = rng.normal(size=(steps, envs)).astype(np.float32)
    terminated = rng.random((steps, envs)) < 0.15
    cut = terminated | (rng.random((steps, envs)) < 0.15)
    return r, v, terminated, cut


def test_lambda_zero_gives_one_step_targets():
    r, v, terminated, cut = random_rollout(0)
    returns = q_lambda_returns(r, v, terminated, cut, GAMMA, 0.0)
    np.testing.assert_allclose(returns, r + GAMMA * np.where(terminated, 0.0, v), rtol=1e-6)


def test_lambda_one_gives_monte_carlo_returns_to_the_rollouts_end():
    r, v, terminated, cut = random_rollout(1)
    returns = q_lambda_returns(r, v, terminated, cut, GAMMA, 1.0)
    steps, envs = r.shape
    for j in range(envs):
        for t in range(steps):
            total, discount, u = 0.0, 1.0, t
            while True:  # rewards to the episode's end or the rollout's, then bootstrap
                total += discount * r[u, j]
                if terminated[u, j]:
                    break
                if cut[u, j] or u == steps - 1:
                    total += discount * GAMMA * v[u, j]
                    break
                discount *= GAMMA
                u += 1
            assert returns[t, j] == pytest.approx(total, rel=1e-5)


SPACE = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


def filled_rollout(agents: int = 2, envs: int = 3, steps: int = 4, epochs: int = 3,
                   minibatches: int = 4) -> RolloutBuffer:
    cfg = RolloutConfig(rollout_steps=steps, epochs=epochs, minibatches=minibatches)
    rollout = RolloutBuffer(cfg, SPACE, [np.random.default_rng(k) for k in range(agents)],
                            GAMMA, "cpu", envs_per_agent=envs)
    columns = agents * envs
    for t in range(steps):
        # obs[.., 0] numbers the transition: agent, step, env
        obs = np.array([[1000 * (c // envs) + 10 * t + c % envs, 0] for c in range(columns)],
                       np.float32)
        none = np.zeros(columns, bool)
        rollout.add(obs, np.zeros(columns, np.int64), np.ones(columns, np.float32), obs,
                    none, none, none)
    return rollout


def test_every_rollout_sample_is_used_exactly_epochs_times():
    rollout = filled_rollout()
    count = rollout.updates_due(0, 1, None)
    assert count == 3 * 4 and rollout.batch_size == 3
    rollout.compute_returns(lambda next_obs: torch.zeros(next_obs.shape[:2]))
    seen = [[] for _ in range(2)]
    for i, batch in enumerate(rollout.sample_batches(rollout.batch_size, count)):
        assert batch.obs.shape == (2, 3, 2) and batch.returns.shape == (2, 3)
        assert batch.next_obs is None  # the batch carries its targets
        for k in range(2):
            seen[k] += batch.obs[k, :, 0].int().tolist()
        if i % 4 == 3:  # each pass covers the whole rollout once
            for k in range(2):
                assert sorted(seen[k][-12:]) == sorted(1000 * k + 10 * t + j
                                                       for t in range(4) for j in range(3))
    for k in range(2):  # each agent trains only on its own envs' transitions, 3 times each
        values, counts = np.unique(seen[k], return_counts=True)
        assert len(values) == 12 and (counts == 3).all() and (values // 1000 == k).all()


def test_a_rollout_is_due_once_complete_and_then_starts_afresh():
    rollout = filled_rollout(steps=4)
    assert rollout.updates_due(0, 1, None) == 12
    obs = np.zeros((6, 2), np.float32)
    none = np.zeros(6, bool)
    rollout.add(obs, np.zeros(6, np.int64), np.zeros(6, np.float32), obs, none, none, none)
    assert len(rollout) == 3 and rollout.updates_due(0, 1, None) == 0


def test_a_rollout_resumes_from_its_state_mid_way_and_at_its_end():
    cfg = RolloutConfig(rollout_steps=4, epochs=2, minibatches=4)
    rng = np.random.default_rng(0)
    steps = [(rng.normal(size=(6, 2)).astype(np.float32), rng.integers(0, 2, 6),
              rng.normal(size=6).astype(np.float32), rng.normal(size=(6, 2)).astype(np.float32),
              rng.random(6) < 0.2, rng.random(6) < 0.2) for _ in range(10)]

    def fresh() -> RolloutBuffer:
        return RolloutBuffer(cfg, SPACE, [np.random.default_rng(k) for k in range(2)], GAMMA,
                             "cpu", envs_per_agent=3)

    def play(rollout: RolloutBuffer, start: int, stop: int) -> list[torch.Tensor]:
        drawn = []
        for obs, actions, rewards, next_obs, terminated, truncated in steps[start:stop]:
            rollout.add(obs, actions, rewards, next_obs, terminated, truncated)
            count = rollout.updates_due(0, 1, None)
            if count:
                rollout.compute_returns(lambda x: x[..., 0] * 2)
                drawn += [b.returns for b in rollout.sample_batches(rollout.batch_size, count)]
        return drawn

    whole = play(fresh(), 0, 10)
    for cut in (2, 4, 8):  # inside the first rollout, at its end, at the second's end
        before = fresh()
        first = play(before, 0, cut)
        after = fresh()
        after.load_state_dict(before.state_dict())
        after.rngs = before.rngs
        rest = play(after, cut, 10)
        assert len(first + rest) == len(whole)
        assert all(torch.equal(a, b) for a, b in zip(first + rest, whole))


def agents_with(target, double_q: bool = True) -> Agents:
    torch.manual_seed(0)
    network = build_q_network(OmegaConf.to_object(compose_config("experiment=pqn").network),
                              SPACE, 2)
    return Agents([network], RAdamConfig(), target, n_actions=2, loss="mse",
                  double_q=double_q)


def test_target_none_builds_no_target_network():
    agents = agents_with(NoTargetConfig())
    assert agents.target is agents.online
    assert agents.state_dict()["target"] is None
    obs = torch.randn(1, 5, 2)
    with torch.no_grad():
        expected = agents.online.q_values(agents.online(obs)).max(-1).values
    torch.testing.assert_close(agents.bootstrap_values(obs), expected)
    with_copy = agents_with(HardTargetConfig())
    assert with_copy.target is not with_copy.online


@pytest.mark.parametrize("network, env, layers", [
    ("mlp", "cartpole", [(120,), (84,)]),
    ("minatar_cnn", "minatar", [(16, 8, 8), (128,)]),
    ("nature_cnn", "atari", [(32, 20, 20), (64, 9, 9), (64, 7, 7), (512,)])])
def test_layer_norm_comes_before_every_hidden_activation(network, env, layers):
    overrides = [f"network={network}", f"env={env}", "network.hidden_sizes=[120,84]"
                 if network == "mlp" else "network.features=" + str(layers[-1][0])]
    config = validate(compose_config(*overrides, "network.norm=layer"))
    space = {"cartpole": SPACE, "minatar": gym.spaces.Box(0, 1, (4, 10, 10), bool),
             "atari": gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)}[env]
    net = build_q_network(config.network, space, 3)
    modules = [m for m in net.modules() if not isinstance(m, (nn.Sequential, nn.Flatten))
               and m is not net and m is not net.encoder and m is not net.head]
    norms = [tuple(m.normalized_shape) for m in modules if isinstance(m, nn.LayerNorm)]
    assert norms == layers
    for i, m in enumerate(modules):  # each right after its layer, right before the ReLU
        if isinstance(m, nn.LayerNorm):
            assert isinstance(modules[i - 1], (nn.Linear, nn.Conv2d))
            assert isinstance(modules[i + 1], nn.ReLU)
    plain = build_q_network(validate(compose_config(*overrides)).network, space, 3)
    assert not any(isinstance(m, nn.LayerNorm) for m in plain.modules())
    assert net(torch.as_tensor(space.sample()[None])).shape == (1, 3)


def test_linear_lr_decay_reaches_zero_at_the_end_of_the_budget():
    cfg = RAdamConfig(lr=1e-3, lr_decay="linear")
    assert decayed_lr(cfg, 0.0) == 1e-3 and decayed_lr(cfg, 0.25) == pytest.approx(7.5e-4)
    assert decayed_lr(cfg, 1.0) == 0.0
    assert decayed_lr(RAdamConfig(lr=1e-3), 1.0) == 1e-3  # lr_decay=none
    agents = agents_with(NoTargetConfig())
    agents.optimizer_cfg = cfg
    agents.anneal(1.0)
    assert agents.optimizer.param_groups[0]["lr"] == 0.0


def test_exploration_fraction_is_a_share_of_the_budget():
    config = validate(compose_config("experiment=pqn", "train.total_steps=20000"))
    assert config.exploration.steps == 10_000  # fraction 0.5
    with pytest.raises(ConfigError, match="exploration.fraction=0.5.*needs train.total_steps"):
        validate(compose_config("experiment=pqn", "train.total_steps=null",
                                "train.total_episodes=100"))


@pytest.mark.parametrize("overrides, words", [
    (["buffer.minibatches=3"], "buffer.minibatches=3 is out of range: must divide "
                               "buffer.rollout_steps x env.num_envs (128 x 4 = 512)"),
    (["head=c51"], "head=c51 cannot learn from buffer=rollout: its Q(lambda) returns are "
                   "scalars"),
    (["buffer.q_lambda=1.5"], "buffer.q_lambda=1.5 is out of range: must be in [0, 1]"),
    (["network.norm=batch"], "network.norm='batch' is out of range: must be one of none, layer"),
    (["optimizer.lr_decay=cosine"], "optimizer.lr_decay='cosine' is out of range")])
def test_bad_pqn_settings_are_one_line(overrides, words):
    with pytest.raises(ConfigError) as error:
        validate(compose_config("experiment=pqn", *overrides))
    assert words in str(error.value) and "\n" not in str(error.value)


def test_a_rollout_that_cannot_fit_is_refused(monkeypatch):
    monkeypatch.setattr("dqn.replay.buffer.available_memory", lambda: 100 * 2**20)
    with pytest.raises(ConfigError, match=r"buffer.rollout_steps=128 needs 0.22 GiB of rollout "
                                          r"memory \(56,470 bytes per transition x 32 env"):
        validate(compose_config("experiment=pqn_atari", "env.num_envs=32"))


SHORT = ["experiment=pqn", "train.total_steps=2048", "buffer.rollout_steps=32",
         "env.num_envs=4", "buffer.minibatches=4", "buffer.epochs=2", "eval.every_steps=1024",
         "eval.episodes=2", "eval.final_episodes=2"]


def test_a_pqn_sweep_trains_evaluates_and_keeps_its_budget(tmp_path):
    """A short PQN sweep of two jobs with two seeds each, logging to SwanLab: every
    rollout is trained on epochs x minibatches times, the learning rate has reached 0, the
    runs are summarised and in the dashboard, and a best checkpoint evaluates with video."""
    result = run_python(tmp_path, "-m", "dqn.train", "-m", *SHORT, "num_seeds=2",
                        "buffer.q_lambda=0,0.65", "hydra.sweep.dir=sweep",
                        "logger.every_steps=512")
    assert result.returncode == 0, result.stderr[-3000:]
    with (tmp_path / "sweep" / "summary.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"completed"}
    job = next((tmp_path / "sweep").glob("0_*"))
    last = load_checkpoint(job / "checkpoints" / "last.pt")
    assert last["env_step"] == 2048
    assert last["gradient_steps"] == 2048 // (32 * 4) * 2 * 4  # 16 rollouts x 8
    assert last["state"]["agents"]["target"] is None
    assert last["state"]["agents"]["optimizer"]["param_groups"][0]["lr"] == 0.0
    for seed in (0, 1):
        summary = json.loads((job / f"seed_{seed}" / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["env_steps"] == 2048
    with dashboard(tmp_path / "outputs" / "swanlog") as board:
        experiments = board.experiments()
        assert len(experiments) == 4
        for experiment in experiments:
            assert len(board.series(experiment["id"], "eval/return_mean")) == 2
    evaluated = run_python(tmp_path, "-m", "dqn.evaluate",
                           f"checkpoint={job / 'seed_0' / 'checkpoints' / 'best.pt'}",
                           "episodes=2", "video.episodes=1")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
