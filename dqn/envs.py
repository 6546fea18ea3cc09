"""Gymnasium environments: construction and the checks that a DQN can drive them."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import FlattenObservation

from dqn.config import ConfigError, EnvConfig


def make_env(cfg: EnvConfig, render_mode: str | None = None) -> gym.Env:
    """Build `cfg.id` with its time limit overridden by `cfg.max_episode_steps` if set.

    Raises ConfigError for an unknown id or spaces a DQN cannot use (the observation
    must be a Box, the action space Discrete); a multi-dimensional Box is flattened.
    """
    kwargs = {} if cfg.max_episode_steps is None else {"max_episode_steps": cfg.max_episode_steps}
    try:
        env = gym.make(cfg.id, render_mode=render_mode, **kwargs)
    except gym.error.Error as error:
        raise ConfigError(f"env.id={cfg.id!r} cannot be made: {error}") from None
    if not isinstance(env.action_space, gym.spaces.Discrete):
        env.close()
        raise ConfigError(f"env.id={cfg.id!r} has action space {env.action_space}; "
                          "DQN needs a Discrete action space")
    if env.action_space.start != 0:
        env.close()
        raise ConfigError(f"env.id={cfg.id!r} numbers its actions from "
                          f"{env.action_space.start}; only actions 0..n-1 are supported")
    if not isinstance(env.observation_space, gym.spaces.Box):
        env.close()
        raise ConfigError(f"env.id={cfg.id!r} has observation space "
                          f"{env.observation_space}; this runner needs a Box")
    if len(env.observation_space.shape) != 1:
        env = FlattenObservation(env)
    return env


def space_sizes(env: gym.Env) -> tuple[int, int]:
    """(observation size, number of actions) of an env made by `make_env`."""
    return int(np.prod(env.observation_space.shape)), int(env.action_space.n)
