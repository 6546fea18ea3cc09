"""Making environments from the `env` config group, and the checks that a DQN can drive
them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import gymnasium as gym
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv

from dqn.checks import ConfigError, positive
from dqn.interfaces import EnvConfig, EnvMaker
from dqn.options import build, option

# Ids that need an env option of their own (its preprocessing), by their namespace.
FAMILIES = {"ALE/": ("atari", "an Atari game"), "MinAtar/": ("minatar", "a MinAtar game")}


def refuse_other_family(env_id: str, option_name: str) -> None:
    """ConfigError when `env_id` belongs to a family that another env option drives (an
    Atari or MinAtar id under another option), naming that option."""
    for prefix, (family, what) in FAMILIES.items():
        if env_id.startswith(prefix) and option_name != family:
            raise ConfigError(f"env.id={env_id!r} is {what}: choose env={family}, which "
                              f"prepares its observations (env={family} env.id={env_id})")


def refuse_outside_family(env_id: str, option_name: str, ids: str) -> None:
    """ConfigError for an id that the family option `option_name` (which takes `ids`)
    cannot drive: another family's option, or a plain gymnasium option, is named."""
    refuse_other_family(env_id, option_name)
    raise ConfigError(f"env.id={env_id!r} is not for env={option_name}, which takes {ids}; "
                      "for other gymnasium ids use a gym env option (env=cartpole "
                      f"env.id={env_id})")


class Replayable(gym.Wrapper):
    """An env that can be brought back to a point of an episode: set `replay_plan` to the
    episode's seed and the actions taken since, then `replay()` resets with that seed,
    takes the actions and returns the observation reached. Through a vector env:
    `set_attr("replay_plan", plans)` then `call("replay")`, one plan per env."""

    replay_plan: tuple[int, list[int]] | None = None

    def replay(self) -> Any:
        seed, actions = self.replay_plan
        obs, _ = self.env.reset(seed=seed)
        for action in actions:
            obs, *_ = self.env.step(action)
        self.replay_plan = None
        return obs


def make_training_envs(maker: EnvMaker, num_envs: int, vectorization: str) -> VectorEnv:
    """`num_envs` copies of the env (each Replayable) in gymnasium's SyncVectorEnv or
    AsyncVectorEnv, with autoreset off: the training loop resets an ended env itself, with
    a seed of its own, and so never stores a step into a reset observation. Observations
    come back without a copy: the vector env's own array, valid until its next step or
    reset."""
    makers = [lambda: Replayable(maker.make()) for _ in range(num_envs)]
    vector = AsyncVectorEnv if vectorization == "async" else SyncVectorEnv
    return vector(makers, autoreset_mode=AutoresetMode.DISABLED, copy=False)


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
class GymEnvConfig(EnvConfig):
    id: str = "CartPole-v1"  # any gymnasium id with a Box observation and Discrete actions
    max_episode_steps: Optional[int] = None  # null keeps the env's registered time limit

    def check(self) -> None:
        super().check()
        positive("env.max_episode_steps", self.max_episode_steps, optional=True)
        refuse_other_family(self.id, "gym")


@option("env", "gym", GymEnvConfig)
class GymEnv(EnvMaker):
    """Any registered gymnasium id, with its time limit overridden by
    `max_episode_steps` if set."""

    frame_stack = None

    def __init__(self, cfg: GymEnvConfig) -> None:
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

    def for_learning(self, rewards: np.ndarray, terminated: np.ndarray,
                     infos: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        return rewards, terminated
