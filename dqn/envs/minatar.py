"""MinAtar (Young and Tian 2019): 10x10 miniature Atari games, channels first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import gymnasium as gym
import numpy as np

from dqn.checks import ConfigError, positive
from dqn.envs.make import check_spaces, refuse_outside_family
from dqn.interfaces import EnvConfig, EnvMaker
from dqn.options import option

GAMES = ("Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders")


@dataclass
class MinAtarConfig(EnvConfig):
    id: str = "MinAtar/Breakout-v1"  # MinAtar/<Game>-v1 (minimal action set) or -v0 (all 6)
    max_episode_steps: Optional[int] = None  # null: an episode lasts until the game ends

    def check(self) -> None:
        super().check()
        positive("env.max_episode_steps", self.max_episode_steps, optional=True)
        if not self.id.startswith("MinAtar/"):
            refuse_outside_family(self.id, "minatar", "MinAtar/<Game>-v1 or -v0 ids")


class ChannelsFirst(gym.ObservationWrapper):
    """(H, W, C) -> (C, H, W), dtype kept (MinAtar's are bool)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        space = env.observation_space
        self.observation_space = gym.spaces.Box(
            np.transpose(space.low, (2, 0, 1)), np.transpose(space.high, (2, 0, 1)),
            dtype=space.dtype)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.transpose(observation, (2, 0, 1)))


@option("env", "minatar", MinAtarConfig)
class MinAtarEnv(EnvMaker):
    """A MinAtar game through its gymnasium registration, observations channels first."""

    frame_stack = None

    def __init__(self, cfg: MinAtarConfig) -> None:
        self.cfg = cfg
        try:
            from minatar.gym import register_envs
        except ImportError:
            raise ConfigError(f"env.id={cfg.id!r} needs MinAtar: pip install minatar "
                              "(the README's install includes it)") from None
        if "MinAtar/Breakout-v1" not in gym.registry:
            register_envs()

    def make(self, render_mode: str | None = None) -> gym.Env:
        kwargs = ({} if self.cfg.max_episode_steps is None
                  else {"max_episode_steps": self.cfg.max_episode_steps})
        try:
            env = gym.make(self.cfg.id, render_mode=render_mode, **kwargs)
        except gym.error.Error as error:
            raise ConfigError(f"env.id={self.cfg.id!r} cannot be made: {error}; MinAtar ids "
                              f"are MinAtar/<Game>-v1 or -v0, games: {', '.join(GAMES)}") from None
        env = ChannelsFirst(env)
        check_spaces(self.cfg.id, env.observation_space, env.action_space)
        return env

    def make_vector(self, num_envs: int) -> None:
        return None

    def for_learning(self, rewards: np.ndarray, terminated: np.ndarray,
                     infos: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        return rewards, terminated
