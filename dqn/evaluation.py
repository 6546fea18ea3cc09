"""Greedy evaluation on environments of its own, with seeds of its own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import gymnasium as gym
import numpy as np

from dqn.config import EnvConfig
from dqn.envs import make_env

Policy = Callable[[np.ndarray], np.ndarray]
"""Maps a batch of observations (N, obs_dim) to N actions."""


@dataclass
class EvalResult:
    returns: np.ndarray
    lengths: np.ndarray

    @property
    def mean(self) -> float:
        return float(self.returns.mean())

    @property
    def std(self) -> float:
        return float(self.returns.std())


class Evaluator:
    """Runs whole greedy episodes, up to `max_parallel` at once in lockstep so that the
    policy sees one batch per step. Every episode gets a fresh seed from this
    evaluator's own stream, so evaluations never share start states with training."""

    def __init__(self, env_cfg: EnvConfig, seed: int, max_parallel: int = 32) -> None:
        self.env_cfg = env_cfg
        self.seeds = np.random.default_rng(seed)
        self.max_parallel = max_parallel
        self.envs: list[gym.Env] = []

    def run(self, policy: Policy, episodes: int) -> EvalResult:
        """Play `episodes` episodes with `policy`; returns their returns and lengths."""
        episode_seeds = self.seeds.integers(0, 2**31 - 1, size=episodes).tolist()
        while len(self.envs) < min(episodes, self.max_parallel):
            self.envs.append(make_env(self.env_cfg))
        returns, lengths = [], []
        slots = []  # [env, obs, return so far, length so far] of each running episode
        for env in self.envs[:episodes]:
            obs, _ = env.reset(seed=episode_seeds.pop())
            slots.append([env, obs, 0.0, 0])
        while slots:
            actions = policy(np.stack([slot[1] for slot in slots]))
            still_running = []
            for slot, action in zip(slots, actions):
                env = slot[0]
                slot[1], reward, terminated, truncated, _ = env.step(int(action))
                slot[2] += float(reward)
                slot[3] += 1
                if terminated or truncated:
                    returns.append(slot[2])
                    lengths.append(slot[3])
                    if not episode_seeds:
                        continue
                    slot[1:] = [env.reset(seed=episode_seeds.pop())[0], 0.0, 0]
                still_running.append(slot)
            slots = still_running
        return EvalResult(np.array(returns), np.array(lengths))

    def close(self) -> None:
        for env in self.envs:
            env.close()
        self.envs.clear()


def play(policy: Policy, env_cfg: EnvConfig, episodes: int, seed: int) -> EvalResult:
    """One evaluation on envs of its own, closed afterwards."""
    evaluator = Evaluator(env_cfg, seed)
    try:
        return evaluator.run(policy, episodes)
    finally:
        evaluator.close()
