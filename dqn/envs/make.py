"""Making environments from the `env` config group, and the checks that a DQN can drive
them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol

import gymnasium as gym
from gymnasium.vector import VectorEnv

from dqn.options import ConfigError, build, option, positive


class EnvMaker(Protocol):
    """What an env option builds: single envs (training, evaluation, video) and, where the
    env has one, a vectorised implementation (evaluation plays many episodes at once)."""

    frame_stack: int | None  # observations are stacks of this many frames (replay stores
    # each frame once), or None

    def make(self, render_mode: str | None = None) -> gym.Env: ...

    def make_vector(self, num_envs: int) -> VectorEnv | None: ...

    def for_learning(self, reward: float, terminated: bool, info: dict) -> tuple[float, bool]:
        """The reward and termination the agent learns from (the env's own are what is
        logged and evaluated): Atari clips rewards and may end on a life lost."""


def env_maker(cfg) -> EnvMaker:
    """The env option that `cfg` (an env option's settings) describes."""
    return build(cfg)


def make_env(cfg, render_mode: str | None = None) -> gym.Env:
    """The env that `cfg` (an env option's settings) describes, checked for DQN."""
    return build(cfg).make(render_mode)


def make_vector_env(cfg, num_envs: int) -> VectorEnv | None:
    """`num_envs` copies of the env in one vectorised implementation, or None."""
    return build(cfg).make_vector(num_envs)


def check_spaces(env_id: str, observation_space: gym.Space, action_space: gym.Space) -> None:
    """ConfigError unless the spaces are a Box observation and Discrete actions 0..n-1."""
    if not isinstance(action_space, gym.spaces.Discrete):
        raise ConfigError(f"env.id={env_id!r} has action space {action_space}; "
                          "DQN needs a Discrete action space")
    if action_space.start != 0:
        raise ConfigError(f"env.id={env_id!r} numbers its actions from "
                          f"{action_space.start}; only actions 0..n-1 are supported")
    if not isinstance(observation_space, gym.spaces.Box):
        raise ConfigError(f"env.id={env_id!r} has observation space "
                          f"{observation_space}; this runner needs a Box")


@dataclass
class EnvConfig:
    id: str = "CartPole-v1"
    max_episode_steps: Optional[int] = None  # null keeps the env's registered time limit

    def check(self) -> None:
        positive("env.max_episode_steps", self.max_episode_steps, optional=True)


@option("env", "gym", EnvConfig)
class GymEnv:
    """Any registered gymnasium id, with its time limit overridden by
    `max_episode_steps` if set."""

    frame_stack = None

    def __init__(self, cfg: EnvConfig) -> None:
        self.cfg = cfg
        self.kwargs = ({} if cfg.max_episode_steps is None
                       else {"max_episode_steps": cfg.max_episode_steps})

    def make(self, render_mode: str | None = None) -> gym.Env:
        try:
            env = gym.make(self.cfg.id, render_mode=render_mode, **self.kwargs)
        except gym.error.Error as error:
            raise ConfigError(f"env.id={self.cfg.id!r} cannot be made: {error}") from None
        try:
            check_spaces(self.cfg.id, env.observation_space, env.action_space)
        except ConfigError:
            env.close()
            raise
        return env

    def make_vector(self, num_envs: int) -> VectorEnv | None:
        """Gymnasium's own vectorised implementation (`vector_entry_point`, which CartPole
        has), or None where the env has none."""
        try:
            env = gym.make_vec(self.cfg.id, num_envs=num_envs,
                               vectorization_mode="vector_entry_point", **self.kwargs)
        except (gym.error.Error, TypeError):
            return None
        try:
            check_spaces(self.cfg.id, env.single_observation_space, env.single_action_space)
        except ConfigError:
            env.close()
            return None
        return env

    def for_learning(self, reward: float, terminated: bool, info: dict) -> tuple[float, bool]:
        return reward, terminated
