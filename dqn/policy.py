"""The greedy policy of a checkpoint, rebuilt from the config stored in it.

A checkpoint names the network and the env it was trained with, so using it never needs
the training overrides again. Whatever does not fit (weights against their network, the
env against the one the agent was trained on) fails with one line naming the file.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dqn.checkpoint import CheckpointError, load_checkpoint
from dqn.config import ConfigError, EnvConfig, MLPConfig
from dqn.envs import make_env, space_sizes
from dqn.networks import build_q_network


class TrainedPolicy:
    """argmax_a Q(obs, a) with the weights of the checkpoint at `path`, on the CPU."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.checkpoint = load_checkpoint(self.path)
        config = self.checkpoint.get("config")
        self.network_cfg: MLPConfig = _stored(MLPConfig, config, "network", self.path)
        self.env_cfg: EnvConfig = _stored(EnvConfig, config, "env", self.path)
        env = make_env(self.env_cfg)
        self.spaces = (env.observation_space, env.action_space)
        self.network = build_q_network(self.network_cfg, *space_sizes(env))
        env.close()
        self._load_weights(self.checkpoint.get("model"))
        self.network.eval()

    @torch.no_grad()
    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """Greedy actions for a batch of observations (N, obs_dim)."""
        return self.network(torch.as_tensor(obs, dtype=torch.float32)).argmax(dim=1).numpy()

    def env_config(self, **overrides: Any) -> EnvConfig:
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
        """Load `state` into the network, refusing weights of another shape."""
        expected = self.network.state_dict()
        if not isinstance(state, dict):
            raise CheckpointError(f"{self.path}: holds no network weights")
        for key in [*expected, *sorted(state.keys() - expected.keys())]:
            want, have = _shape(expected.get(key)), _shape(state.get(key))
            if want != have:
                raise CheckpointError(
                    f"{self.path}: its weights do not fit the network its config describes "
                    f"(network.hidden_sizes={self.network_cfg.hidden_sizes}, env "
                    f"{self.env_cfg.id}): {key} is {have} in the checkpoint, {want} in the "
                    "network")
        self.network.load_state_dict(state)


def _stored(schema: type, config: Any, key: str, path: Path) -> Any:
    """The `key` section of a stored config as its schema dataclass."""
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), config[key]))
    except (KeyError, TypeError, OmegaConfBaseException) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CheckpointError(f"{path}: its stored config has no usable '{key}' section "
                              f"({reason})") from None


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
