"""Composing every group option, the recipe presets, and every validation error."""

from __future__ import annotations

import pytest
import torch
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from dqn.checks import ConfigError
from dqn.cli.conf import CONF_DIR
from dqn.cli.conf import HELP_GROUPS as GROUPS
from dqn.config import validate
from dqn.exploration import ExponentialExplorationConfig, MultiplicativeExplorationConfig
from dqn.optim import AdamConfig, AdamWConfig
from dqn.targets import HardTargetConfig, SoftTargetConfig
from tests.conftest import compose_config

OPTIONS = [(group, path.stem) for group in GROUPS
           for path in sorted((CONF_DIR / group).glob("*.yaml"))]


def test_every_group_has_options():
    assert {group for group, _ in OPTIONS} == set(GROUPS)


ENVS = {"acrobot": "Acrobot-v1", "mountaincar": "MountainCar-v0",
        "lunarlander": "LunarLander-v3", "atari": "ALE/Pong-v5", "atari_dqn": "ALE/Pong-v5",
        "atari_rainbow": "ALE/Pong-v5", "nature_cnn": "ALE/Pong-v5",
        "minatar": "MinAtar/Breakout-v1", "minatar_dqn": "MinAtar/Breakout-v1",
        "minatar_rainbow": "MinAtar/Breakout-v1", "minatar_cnn": "MinAtar/Breakout-v1",
        "pqn_minatar": "MinAtar/Breakout-v1", "pqn_atari": "ALE/Pong-v5"}
PARTNERS = {"nature_cnn": "env=atari", "atari": "network=nature_cnn",
            "minatar_cnn": "env=minatar", "minatar": "network=minatar_cnn"}  # pixels


@pytest.mark.parametrize("group,option", OPTIONS)
def test_every_option_composes_and_validates(group, option):
    partner = [PARTNERS[option]] if option in PARTNERS else []
    config = validate(compose_config(f"{group}={option}", *partner))
    assert config.env.id == ENVS.get(option, "CartPole-v1")


def test_default_config_types():
    config = validate(compose_config())
    assert isinstance(config.target, HardTargetConfig)
    assert isinstance(config.optimizer, AdamConfig)
    assert config.eval.final_episodes == 100
    assert config.train.target_return is None
    assert config.logger.mode == "local" and config.logger.log_dir == "outputs/swanlog"


def test_tutorial_preset_matches_recipe():
    c = validate(compose_config("experiment=tutorial"))
    assert c.env.id == "CartPole-v1" and c.env.max_episode_steps is None  # 500-step limit
    assert c.network.hidden_sizes == [128, 128] and c.network.activation == "relu"
    assert isinstance(c.optimizer, AdamWConfig)
    assert (c.optimizer.lr, c.optimizer.amsgrad) == (1e-4, True)
    assert c.optimizer.weight_decay == 0.01  # torch.optim.AdamW's default
    assert c.train.loss == "huber" and c.train.double_q is False
    assert (c.optimizer.clip_grad_value, c.optimizer.clip_grad_norm) == (100.0, None)
    assert (c.buffer.capacity, c.buffer.batch_size) == (10_000, 128)
    assert c.buffer.learning_starts == c.buffer.batch_size
    assert (c.train.train_frequency, c.train.gradient_steps) == (1, 1)
    assert c.train.gamma == 0.99
    assert isinstance(c.exploration, ExponentialExplorationConfig)
    assert (c.exploration.start, c.exploration.end, c.exploration.decay) == (0.9, 0.05, 1000)
    assert isinstance(c.target, SoftTargetConfig) and c.target.tau == 0.005
    assert (c.train.total_episodes, c.train.total_steps) == (600, None)


def test_swanbook_preset_matches_recipe():
    c = validate(compose_config("experiment=swanbook"))
    assert c.seed == 42
    assert c.env.id == "CartPole-v1" and c.env.max_episode_steps == 20_000  # return cap
    assert c.network.hidden_sizes == [64, 64] and c.network.activation == "relu"
    assert isinstance(c.optimizer, AdamConfig) and not isinstance(c.optimizer, AdamWConfig)
    assert (c.optimizer.lr, c.optimizer.weight_decay, c.optimizer.amsgrad) == (1e-3, 0.0, False)
    assert c.train.loss == "mse" and c.train.double_q is False
    assert (c.optimizer.clip_grad_value, c.optimizer.clip_grad_norm) == (None, None)
    assert (c.buffer.capacity, c.buffer.batch_size, c.buffer.learning_starts) == (10_000, 64, 64)
    assert (c.train.train_frequency, c.train.gradient_steps) == (1, 1)
    assert c.train.gamma == 0.99
    assert isinstance(c.exploration, MultiplicativeExplorationConfig)
    assert (c.exploration.start, c.exploration.end, c.exploration.factor) == (1.0, 0.01, 0.995)
    assert isinstance(c.target, HardTargetConfig) and c.target.period == 100
    assert (c.train.total_episodes, c.train.total_steps) == (600, None)
    assert (c.eval.every_episodes, c.eval.every_steps, c.eval.episodes) == (10, None, 5)


def test_group_swap_and_value_override():
    c = validate(compose_config("target=soft", "target.tau=0.01", "exploration=exponential"))
    assert isinstance(c.target, SoftTargetConfig) and c.target.tau == 0.01
    assert isinstance(c.exploration, ExponentialExplorationConfig)


# Mistakes the schema catches while composing.
@pytest.mark.parametrize("override", [
    "target=sofft",            # misspelt option
    "buffer.capcity=5",        # unknown key
    "seed=abc",                # wrong type
    "train.total_steps=1.5",   # wrong type
    "optimizer.amsgrad=maybe",  # wrong type
])
def test_composition_rejects(override):
    with pytest.raises((HydraException, OmegaConfBaseException)):
        compose_config(override)


# Mistakes the range checks catch: (overrides, words the one-line message must hold).
RANGE_CASES = [
    (["+buffer.capcity=5"], "unknown key 'buffer.capcity'"),
    (["+foo=1"], "unknown key 'foo'"),
    (["train.gamma=1.5"], "train.gamma=1.5"),
    (["train.gamma=-0.1"], "must be in [0, 1]"),
    (["target=soft", "target.tau=0"], "target.tau=0.0"),
    (["target=soft", "target.tau=1.5"], "must be in (0, 1]"),
    (["buffer.capacity=10", "buffer.batch_size=64"], "buffer.capacity=10"),
    (["buffer.batch_size=0"], "buffer.batch_size=0"),
    (["buffer.learning_starts=-1"], "buffer.learning_starts=-1"),
    (["target.period=0"], "target.period=0"),
    (["train.total_steps=0"], "train.total_steps=0"),
    (["train.total_steps=null"], "set train.total_steps or train.total_episodes"),
    (["train.train_frequency=0"], "train.train_frequency=0"),
    (["train.gradient_steps=-2"], "train.gradient_steps=-2"),
    (["train.loss=l1"], "must be one of huber, mse"),
    (["network.hidden_sizes=[]"], "network.hidden_sizes"),
    (["network.hidden_sizes=[64,0]"], "network.hidden_sizes=0"),
    (["network.activation=sigmoidish"], "network.activation='sigmoidish'"),
    (["eval.every_steps=0"], "eval.every_steps=0"),
    (["eval.episodes=0"], "eval.episodes=0"),
    (["eval.final_episodes=0"], "eval.final_episodes=0"),
    (["exploration.start=1.5"], "exploration.start=1.5"),
    (["exploration.end=-0.1"], "exploration.end=-0.1"),
    (["exploration.start=0.2", "exploration.end=0.5"], "must be <= exploration.start"),
    (["exploration=exponential", "exploration.decay=0"], "exploration.decay=0.0"),
    (["exploration=multiplicative", "exploration.factor=1.5"], "exploration.factor=1.5"),
    (["exploration.steps=0"], "exploration.steps=0"),
    (["optimizer.lr=0"], "optimizer.lr=0.0"),
    (["optimizer.weight_decay=-1"], "optimizer.weight_decay=-1.0"),
    (["optimizer.clip_grad_norm=0"], "optimizer.clip_grad_norm=0.0"),
    (["env.max_episode_steps=0"], "env.max_episode_steps=0"),
    (["env.id=NoSuchEnv-v0"], "env.id='NoSuchEnv-v0'"),
    (["env.id=Pendulum-v1"], "Discrete action space"),
    (["logger.mode=cloud"], "logger.mode='cloud'"),
    (["device=tpu"], "device='tpu'"),
    (["seed=-1"], "seed=-1"),
    (["buffer.capacity=100000000000"], "needs 4470.35 GiB of replay memory (48 bytes per "
                                       "transition x 1 agent(s) x 1 env(s) each) but"),
]


@pytest.mark.parametrize("overrides,words", RANGE_CASES,
                         ids=[" ".join(case[0]) for case in RANGE_CASES])
def test_validation_rejects_with_one_clear_line(overrides, words):
    with pytest.raises(ConfigError) as caught:
        validate(compose_config(*overrides))
    message = str(caught.value)
    assert words in message
    assert "\n" not in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu_is_rejected():
    with pytest.raises(ConfigError, match="device='cuda' but no GPU"):
        validate(compose_config("device=cuda"))


def test_long_override_lists_make_short_folder_names():
    from dqn.cli.conf import short_dirname

    assert short_dirname("seed=1,target=soft") == "seed=1,target=soft"
    long = ",".join(f"key{i}=value{i}" for i in range(60))
    short = short_dirname(long)
    assert len(short) == 120 and short.startswith("key0=value0")
    assert short != short_dirname(long + ",x=1")  # the hash keeps distinct jobs apart
    assert "/" not in short_dirname("logger.log_dir=/tmp/a")
