"""Atari 2600 games (ale-py, whose wheel ships the ROMs), preprocessed as in Mnih et al.
2015 with the recommendations of Machado et al. 2018."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from dqn.checks import ConfigError, at_least, positive, within
from dqn.envs.make import (
    check_spaces,
    refuse_other_family,
    refuse_outside_family,
)
from dqn.interfaces import EnvConfig, EnvMaker
from dqn.options import option


@dataclass
class AtariConfig(EnvConfig):
    id: str = "ALE/Pong-v5"  # ALE/<Game>-v5
    repeat_action_probability: float = 0.25  # sticky actions (Machado et al. 2018)
    terminal_on_life_loss: bool = False  # learn as if a lost life ended the episode
    clip_rewards: bool = True  # learn from sign(reward); logs and evaluations keep the score
    noop_max: int = 30  # up to this many no-op actions after each reset
    frame_skip: int = 4  # repeat each action this many frames, max-pool the last two
    screen_size: int = 84  # grayscale frames resized to screen_size x screen_size
    frame_stack: int = 4  # observations: the last frame_stack frames
    max_episode_frames: int = 108_000  # 30 minutes of play at 60 frames per second

    def check(self) -> None:
        super().check()
        within("env.repeat_action_probability", self.repeat_action_probability, 0, 1)
        at_least("env.noop_max", self.noop_max, 0)
        positive("env.frame_skip", self.frame_skip)
        positive("env.screen_size", self.screen_size)
        positive("env.frame_stack", self.frame_stack)
        positive("env.max_episode_frames", self.max_episode_frames)
        refuse_other_family(self.id, "atari")


class LifeLoss(gym.Wrapper):
    """Adds info["life_lost"]: whether this step cost a life (ALE's info["lives"] fell)."""

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.lives = info.get("lives", 0)
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        lives = info.get("lives", 0)
        info["life_lost"] = lives < self.lives
        self.lives = lives
        return obs, reward, terminated, truncated, info


def from_ale(spec: gym.envs.registration.EnvSpec) -> bool:
    """Whether a registered env is one of ale-py's games."""
    entry = spec.entry_point
    module = entry if isinstance(entry, str) else getattr(entry, "__module__", "")
    return module.startswith("ale_py")


@option("env", "atari", AtariConfig)
class AtariEnv(EnvMaker):
    """`ALE/<Game>-v5` with frame skip 1 underneath gymnasium's AtariPreprocessing (no-op
    starts, frame skip with max-pooling of the last two frames, grayscale, resize) and
    FrameStackObservation: observations (frame_stack, screen_size, screen_size) uint8."""

    def __init__(self, cfg: AtariConfig) -> None:
        self.cfg = cfg
        self.frame_stack = cfg.frame_stack
        try:
            import ale_py
            import cv2  # noqa: F401 - AtariPreprocessing resizes with OpenCV
        except ImportError as error:
            raise ConfigError(f"env.id={cfg.id!r} needs ale-py and OpenCV ({error}): pip "
                              "install ale-py opencv-python-headless (the README's install "
                              "includes them)") from None
        gym.register_envs(ale_py)

    def make(self, render_mode: str | None = None) -> gym.Env:
        c = self.cfg
        if c.id in gym.registry and not from_ale(gym.registry[c.id]):
            refuse_outside_family(c.id, "atari", "ALE/<Game>-v5 ids")
        try:
            env = gym.make(c.id, frameskip=1, repeat_action_probability=c.repeat_action_probability,
                           full_action_space=False, max_num_frames_per_episode=c.max_episode_frames,
                           render_mode=render_mode)
        except gym.error.Error as error:
            raise ConfigError(f"env.id={c.id!r} cannot be made: {error}; Atari ids are "
                              "ALE/<Game>-v5") from None
        env = gym.wrappers.AtariPreprocessing(env, noop_max=c.noop_max, frame_skip=c.frame_skip,
                                              screen_size=c.screen_size,
                                              terminal_on_life_loss=False, grayscale_obs=True,
                                              scale_obs=False)
        env = LifeLoss(env)  # outside the frame skip: a life lost in any skipped frame counts
        env = gym.wrappers.FrameStackObservation(env, c.frame_stack)
        check_spaces(c.id, env.observation_space, env.action_space)
        return env

    def make_vector(self, num_envs: int) -> None:
        return None

    def for_learning(self, rewards: np.ndarray, terminated: np.ndarray,
                     infos: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        if self.cfg.clip_rewards:
            rewards = np.sign(rewards)
        if self.cfg.terminal_on_life_loss and "life_lost" in infos:
            # a vector env's infos: values (N,), and under "_life_lost" which envs have one
            terminated = terminated | (infos["life_lost"] & infos["_life_lost"])
        return rewards, terminated
