"""The greedy policy of a checkpoint, rebuilt from the config stored in it.

A checkpoint names the network and the env it was trained with, so using it never needs
the training overrides again. Whatever does not fit (weights against their network, weights
that are NaN or infinite, the env against the one the agent was trained on) fails with one
line naming the file.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from omegaconf.errors import OmegaConfBaseException

from dqn.checks import ConfigError
from dqn.config import section
from dqn.envs import make_env
from dqn.nets import build_q_network, greedy_actions
from dqn.options import option_of
from dqn.run.checkpoint import CheckpointError, load_checkpoint


class TrainedPolicy:
    """The greedy policy of the network in the checkpoint at `path`, on the CPU. A head
    that samples (dqn.interfaces.Head.sample) draws from a generator seeded with `seed`,
    so the same seed gives the same actions."""

    def __init__(self, path: Path | str, seed: int = 0) -> None:
        self.path = Path(path)
        self.generator = torch.Generator().manual_seed(seed)
        self.checkpoint = load_checkpoint(self.path)
        config = self.checkpoint.get("config")
        agents = config.get("num_seeds") if isinstance(config, dict) else None
        if isinstance(agents, int) and agents > 1:
            raise CheckpointError(
                f"{self.path}: holds the training state of {agents} agents trained together "
                f"(num_seeds={agents}); evaluate one of them: checkpoint=JOB/seed_S")
        self.network_cfg = _stored(config, "network", self.path)
        self.head_cfg = _stored(config, "head", self.path)
        self.env_cfg = _stored(config, "env", self.path)
        # the run's evaluation epsilon (configs from before it existed: 0)
        self.eval_epsilon = float((config.get("eval") or {}).get("epsilon", 0.0))
        env = make_env(self.env_cfg)
        self.spaces = (env.observation_space, env.action_space)
        self.network = build_q_network(self.network_cfg, env.observation_space,
                                       int(env.action_space.n), self.head_cfg)
        env.close()
        self._load_weights(self.checkpoint.get("model"))
        self.network.eval()

    @torch.no_grad()
    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """Greedy actions for a batch of observations (N, *obs_shape)."""
        draws = self.network.head.sample("act", len(obs), self.generator)
        q_values = self.network.q_values(self.network(torch.as_tensor(obs), draws))
        return greedy_actions(q_values).numpy()

    def env_config(self, **overrides: Any) -> Any:
        """The training env's config with `overrides` (e.g. max_episode_steps=1000).

        Raises ConfigError when the resulting env observes or acts in other spaces than
        the env the agent was trained on.
        """
        cfg = replace(self.env_cfg, **overrides)
        env = make_env(cfg)
        spaces = (env.observation_space, env.action_space)
        env.close()
        for kind, space, trained in zip(("observation", "action"), spaces, self.spaces):
            if space != trained:
                raise ConfigError(
                    f"env.id={cfg.id!r} has {kind} space {_describe(space, trained)}, but the "
                    f"agent in {self.path} was trained on {self.env_cfg.id!r} with "
                    f"{_describe(trained, space)}; evaluate it on an env with the same spaces")
        return cfg

    def _load_weights(self, state: Any) -> None:
        """Load `state` into the network, refusing weights of another shape and weights
        that are not finite (a diverged agent: its greedy actions mean nothing)."""
        expected = self.network.state_dict()
        if not isinstance(state, dict):
            raise CheckpointError(f"{self.path}: holds no network weights")
        for key in [*expected, *sorted(state.keys() - expected.keys())]:
            want, have = _shape(expected.get(key)), _shape(state.get(key))
            if want != have:
                raise CheckpointError(
                    f"{self.path}: its weights do not fit the network its config describes "
                    f"({_describe_network(self.network_cfg)}, env {self.env_cfg.id}): {key} "
                    f"is {have} in the checkpoint, {want} in the network")
        for key in expected:
            tensor = torch.as_tensor(state[key])
            bad = _non_finite(tensor)
            if bad:
                raise CheckpointError(
                    f"{self.path}: its weights are not finite, starting with {key} ({bad} "
                    f"among its {tensor.numel()} values); a diverged agent cannot be evaluated")
        self.network.load_state_dict(state)


def _stored(config: Any, group: str, path: Path) -> Any:
    """The `group` section of a stored config as its schema dataclass."""
    try:
        return section(config, group)
    except (KeyError, TypeError, AttributeError, OmegaConfBaseException) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CheckpointError(f"{path}: its stored config has no usable '{group}' section "
                              f"({reason})") from None


def _describe_network(cfg: Any) -> str:
    """network=OPTION and the settings in which it differs from the option's defaults."""
    changed = [f"{name}={value!r}" for name, value in asdict(cfg).items()
               if value != getattr(type(cfg)(), name)]
    name = f"network={option_of(cfg).name}"
    return f"{name} with {', '.join(changed)}" if changed else name


def _non_finite(tensor: torch.Tensor) -> str:
    """'' for a tensor of finite values, else what is wrong (`3 NaN, 1 inf`)."""
    if not tensor.is_floating_point():
        return ""
    counts = {"NaN": int(tensor.isnan().sum()), "inf": int(tensor.isinf().sum())}
    return ", ".join(f"{count} {kind}" for kind, count in counts.items() if count)


def _shape(tensor: Any) -> str:
    shape = getattr(tensor, "shape", None)
    return "missing" if shape is None else f"of shape {tuple(shape)}"


def _describe(space: gym.Space, other: gym.Space) -> str:
    """A short description of `space`; a Box's bounds only when they tell it from `other`."""
    if not isinstance(space, gym.spaces.Box):
        return str(space)
    text = f"Box(shape={space.shape}, dtype={space.dtype}"
    if isinstance(other, gym.spaces.Box) and (other.shape, other.dtype) == (space.shape,
                                                                           space.dtype):
        text += f", low={_rounded(space.low)}, high={_rounded(space.high)}"
    return text + ")"


def _rounded(values: np.ndarray) -> list[float]:
    return [float(f"{value:.6g}") for value in values.flat]
