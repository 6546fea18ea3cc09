"""Greedy evaluation on environments of its own, with seeds of its own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import gymnasium as gym
import numpy as np
from gymnasium.vector import VectorEnv

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
    """Runs whole greedy episodes, all at once in lockstep so that the policy sees one
    batch per step. Evaluations never share start states with training: every run gets
    fresh seeds from this evaluator's own stream.

    An env with a vectorised implementation (gymnasium's `vector_entry_point`, such as
    CartPole's) plays all the episodes of a run in one vector env seeded once per run,
    which steps them all in a few NumPy operations. Any other env plays up to
    `max_parallel` episodes at once in separate copies, each episode with a seed of its
    own.
    """

    def __init__(self, env_cfg: EnvConfig, seed: int, max_parallel: int = 32) -> None:
        self.env_cfg = env_cfg
        self.seeds = np.random.default_rng(seed)
        self.max_parallel = max_parallel
        self.envs: list[gym.Env] = []
        self.vector_envs: dict[int, VectorEnv | None] = {}  # by number of episodes

    def run(self, policy: Policy, episodes: int) -> EvalResult:
        """Play `episodes` episodes with `policy`; returns their returns and lengths."""
        vector_env = self.vector_env(episodes)
        if vector_env is not None:
            return self._run_vector(vector_env, policy)
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

    def vector_env(self, episodes: int) -> VectorEnv | None:
        """The vector env that plays `episodes` episodes at once (made on first use),
        or None where the env has no vectorised implementation."""
        if episodes not in self.vector_envs:
            self.vector_envs[episodes] = make_vector_env(self.env_cfg, episodes)
        return self.vector_envs[episodes]

    def _run_vector(self, env: VectorEnv, policy: Policy) -> EvalResult:
        obs, _ = env.reset(seed=int(self.seeds.integers(0, 2**31 - 1)))
        returns = np.zeros(env.num_envs)
        lengths = np.zeros(env.num_envs, dtype=np.int64)
        running = np.ones(env.num_envs, dtype=bool)
        while running.any():
            obs, rewards, terminated, truncated, _ = env.step(np.asarray(policy(obs)))
            # An episode's env starts another one at the next step: count only the first.
            returns += np.where(running, rewards, 0.0)
            lengths += running
            running &= ~(terminated | truncated)
        return EvalResult(returns, lengths)

    def close(self) -> None:
        for env in self.envs:
            env.close()
        self.envs.clear()
        for vector_env in self.vector_envs.values():
            if vector_env is not None:
                vector_env.close()
        self.vector_envs.clear()


def make_vector_env(cfg: EnvConfig, num_envs: int) -> VectorEnv | None:
    """`num_envs` copies of `cfg.id` in gymnasium's own vectorised implementation, with
    the time limit of `make_env`; None when the env has none (or one this runner cannot
    drive: a non-flat observation or actions other than Discrete)."""
    kwargs = {} if cfg.max_episode_steps is None else {"max_episode_steps": cfg.max_episode_steps}
    try:
        env = gym.make_vec(cfg.id, num_envs=num_envs, vectorization_mode="vector_entry_point",
                           **kwargs)
    except (gym.error.Error, TypeError):
        return None
    if (not isinstance(env.single_action_space, gym.spaces.Discrete)
            or env.single_action_space.start != 0
            or not isinstance(env.single_observation_space, gym.spaces.Box)
            or len(env.single_observation_space.shape) != 1):
        env.close()
        return None
    return env


def play(policy: Policy, env_cfg: EnvConfig, episodes: int, seed: int) -> EvalResult:
    """One evaluation on envs of its own, closed afterwards."""
    evaluator = Evaluator(env_cfg, seed)
    try:
        return evaluator.run(policy, episodes)
    finally:
        evaluator.close()
