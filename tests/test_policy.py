"""A checkpoint's greedy policy, rebuilt from its stored config, and what it refuses."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from dqn.checks import ConfigError
from dqn.nets import build_q_network
from dqn.nets.encoders import MLPConfig
from dqn.run.checkpoint import CheckpointError, save_checkpoint
from dqn.run.policy import TrainedPolicy

CONFIG = {"network": {"hidden_sizes": [8], "activation": "tanh"}, "head": {},
          "env": {"id": "CartPole-v1", "max_episode_steps": None},
          "options": {"network": "mlp", "head": "q", "env": "gym"}}


def checkpoint(tmp_path: Path, config: dict = CONFIG,
               hidden: int = 8) -> tuple[Path, torch.nn.Module]:
    net = build_q_network(MLPConfig(hidden_sizes=[hidden], activation="tanh"),
                          gym.make("CartPole-v1").observation_space, 2)
    path = tmp_path / "best.pt"
    save_checkpoint(path, net.state_dict(), config, env_step=10)
    return path, net


def test_policy_acts_greedily_with_the_stored_network(tmp_path):
    path, net = checkpoint(tmp_path)
    policy = TrainedPolicy(path)
    assert policy.network_cfg == MLPConfig(hidden_sizes=[8], activation="tanh")
    obs = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    expected = net(torch.as_tensor(obs)).argmax(dim=1).numpy()
    np.testing.assert_array_equal(policy(obs), expected)


def test_env_overrides_that_keep_the_spaces_are_accepted(tmp_path):
    policy = TrainedPolicy(checkpoint(tmp_path)[0])
    cfg = policy.env_config(max_episode_steps=1000)
    assert (cfg.id, cfg.max_episode_steps) == ("CartPole-v1", 1000)
    assert policy.env_cfg.max_episode_steps is None  # the stored config is left alone


def test_weights_that_do_not_fit_the_stored_network_are_refused(tmp_path):
    wider = {**CONFIG, "network": {"hidden_sizes": [16], "activation": "tanh"}}
    path, _ = checkpoint(tmp_path, wider, hidden=8)
    with pytest.raises(CheckpointError, match=r"best.pt: its weights do not fit .*"
                                              r"hidden_sizes=\[16\].*layers.0.weight"):
        TrainedPolicy(path)


def test_stored_config_without_a_network_is_refused(tmp_path):
    path, _ = checkpoint(tmp_path, {"env": CONFIG["env"]})
    with pytest.raises(CheckpointError, match="no usable 'network' section"):
        TrainedPolicy(path)


class FakeCartPole(gym.Env):
    """CartPole's observation space scaled, or with another number of actions."""

    def __init__(self, scale: float = 1.0, actions: int = 2,
                 render_mode: str | None = None) -> None:
        space = gym.make("CartPole-v1").observation_space
        self.observation_space = gym.spaces.Box(space.low * scale, space.high * scale)
        self.action_space = gym.spaces.Discrete(actions)


gym.register("ThreeActions-v0", entry_point=FakeCartPole, kwargs={"actions": 3})
gym.register("WideBounds-v0", entry_point=FakeCartPole, kwargs={"scale": 10.0})


@pytest.mark.parametrize("env_id,words", [
    ("Acrobot-v1", "observation space Box(shape=(6,)"),
    ("ThreeActions-v0", "action space Discrete(3)"),
    ("WideBounds-v0", "observation space Box(shape=(4,), dtype=float32, low=[-48.0, -inf"),
])
def test_env_with_other_spaces_is_refused(tmp_path, env_id, words):
    policy = TrainedPolicy(checkpoint(tmp_path)[0])
    with pytest.raises(ConfigError) as error:
        policy.env_config(id=env_id)
    message = str(error.value)
    assert message.startswith(f"env.id='{env_id}' has {words}")
    assert "trained on 'CartPole-v1'" in message and "best.pt" in message
