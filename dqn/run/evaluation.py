"""Greedy evaluation on environments of its own, with seeds of its own.

Each agent has an Evaluator: its own stream of episode seeds and its own envs, so that
evaluations never share start states with training and an agent trained with others
(num_seeds) is evaluated on the very episodes its single run would be. `play_together`
plays the evaluations of several agents in lockstep with one batched forward pass per
step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import gymnasium as gym
import numpy as np
from gymnasium.vector import VectorEnv

from dqn.envs import make_env, make_vector_env
from dqn.exploration import epsilon_greedy

MAX_VECTOR_EPISODES = 1_024  # more episodes than this are played max_parallel at a time
Policy = Callable[[np.ndarray], np.ndarray]
"""Maps a batch of observations (N, *obs_shape) to N actions."""
JointPolicy = Callable[[np.ndarray, list[int]], np.ndarray]
"""Maps observations (M, N, *obs_shape) of M agents, and which of the evaluators they are,
to actions (M, N)."""


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
    """Whole greedy episodes, all of one evaluation at once in lockstep so that the policy
    sees one batch per step; every evaluation gets fresh seeds from this evaluator's stream.

    An env with a vectorised implementation (gymnasium's `vector_entry_point`, such as
    CartPole's) plays all the episodes of an evaluation in one vector env seeded once per
    evaluation, up to MAX_VECTOR_EPISODES of them. Any other env, or more episodes, plays
    up to `max_parallel` episodes at once in separate copies, each episode with a seed of
    its own: the memory an evaluation takes stops growing with its number of episodes
    (beyond a few bytes per episode for its seeds and results).
    """

    def __init__(self, env_cfg, seed: int, max_parallel: int = 32, epsilon: float = 0.0) -> None:
        self.env_cfg = env_cfg
        self.seeds = np.random.default_rng(seed)
        self.max_parallel = max_parallel
        self.epsilon = epsilon  # a random action instead of the policy's, this often
        self.explorer = np.random.default_rng([seed, 1])
        self.envs: list[gym.Env] = []
        self.vector_envs: dict[int, VectorEnv | None] = {}  # by number of episodes

    def run(self, policy: Policy, episodes: int) -> EvalResult:
        """Play `episodes` episodes with `policy`; returns their returns and lengths."""
        return play_together([self], lambda obs, _: policy(obs[0])[None], episodes)[0]

    def explore(self, actions: np.ndarray, n_actions: int) -> np.ndarray:
        """`actions` with each replaced by a random one with probability epsilon, by
        training's rule (`epsilon_greedy`) with this evaluator's generator; at epsilon 0
        they are kept and nothing is drawn."""
        if not self.epsilon:
            return actions
        return epsilon_greedy(lambda: actions, self.epsilon, self.explorer, n_actions,
                              len(actions))

    def start(self, episodes: int) -> "VectorEpisodes | SeparateEpisodes":
        """The episodes of one evaluation, reset and ready to step."""
        vector_env = self.vector_env(episodes) if episodes <= MAX_VECTOR_EPISODES else None
        if vector_env is not None:
            return VectorEpisodes(vector_env, int(self.seeds.integers(0, 2**31 - 1)))
        seeds = self.seeds.integers(0, 2**31 - 1, size=episodes)
        while len(self.envs) < min(episodes, self.max_parallel):
            self.envs.append(make_env(self.env_cfg))
        return SeparateEpisodes(self.envs[:episodes], seeds)

    def vector_env(self, episodes: int) -> VectorEnv | None:
        """The vector env that plays `episodes` episodes at once (made on first use),
        or None where the env has no vectorised implementation."""
        if episodes not in self.vector_envs:
            self.vector_envs[episodes] = make_vector_env(self.env_cfg, episodes)
        return self.vector_envs[episodes]

    def close(self) -> None:
        for env in self.envs:
            env.close()
        self.envs.clear()
        for vector_env in self.vector_envs.values():
            if vector_env is not None:
                vector_env.close()
        self.vector_envs.clear()


class VectorEpisodes:
    """One evaluation in a vector env: each sub-env plays one episode; one that ended
    starts another at the next step, which is not counted."""

    def __init__(self, env: VectorEnv, seed: int) -> None:
        self.env = env
        self.obs, _ = env.reset(seed=seed)
        self.n_actions = int(env.single_action_space.n)
        self.returns = np.zeros(env.num_envs)
        self.lengths = np.zeros(env.num_envs, dtype=np.int64)
        self.live = np.ones(env.num_envs, dtype=bool)

    @property
    def running(self) -> bool:
        return bool(self.live.any())

    def step(self, actions: np.ndarray) -> None:
        self.obs, rewards, terminated, truncated, _ = self.env.step(np.asarray(actions))
        self.returns += np.where(self.live, rewards, 0.0)
        self.lengths += self.live
        self.live &= ~(terminated | truncated)

    def result(self) -> EvalResult:
        return EvalResult(self.returns, self.lengths)


class SeparateEpisodes:
    """One evaluation in separate envs: each env plays episodes until the seeds run out
    (taken from the last); an env without an episode to play keeps its last observation
    and idles."""

    def __init__(self, envs: list[gym.Env], seeds: np.ndarray) -> None:
        self.envs, self.seeds = envs, seeds
        self.unplayed = len(seeds)  # seeds[:unplayed] are still to play
        self.n_actions = int(envs[0].action_space.n)
        self.returns = np.zeros(len(seeds))
        self.lengths = np.zeros(len(seeds), dtype=np.int64)
        self.finished = 0
        first = [env.reset(seed=self.next_seed())[0] for env in envs]
        self.obs = np.stack(first)
        self.live = [True] * len(envs)
        self.episode = [[0.0, 0] for _ in envs]  # return and length so far, per env

    def next_seed(self) -> int:
        self.unplayed -= 1
        return int(self.seeds[self.unplayed])

    @property
    def running(self) -> bool:
        return any(self.live)

    def step(self, actions: np.ndarray) -> None:
        for i, env in enumerate(self.envs):
            if not self.live[i]:
                continue
            obs, reward, terminated, truncated, _ = env.step(int(actions[i]))
            self.episode[i][0] += float(reward)
            self.episode[i][1] += 1
            if terminated or truncated:
                self.returns[self.finished], self.lengths[self.finished] = self.episode[i]
                self.finished += 1
                if self.unplayed:
                    obs, _ = env.reset(seed=self.next_seed())
                    self.episode[i] = [0.0, 0]
                else:
                    self.live[i] = False
            self.obs[i] = obs

    def result(self) -> EvalResult:
        return EvalResult(self.returns, self.lengths)


def play_together(evaluators: list[Evaluator], policy: JointPolicy,
                  episodes: int) -> list[EvalResult]:
    """One evaluation of `episodes` episodes per evaluator, stepped in lockstep: the
    policy gets the observations of those still playing at once, (M, N, *obs_shape), and
    their indices, so an agent whose evaluation has ended is asked for nothing (a policy
    that samples draws what the agent's single run would)."""
    runs = [evaluator.start(episodes) for evaluator in evaluators]
    while any(run.running for run in runs):
        playing = [i for i, run in enumerate(runs) if run.running]
        actions = policy(np.stack([runs[i].obs for i in playing]), playing)
        for i, agent_actions in zip(playing, actions):
            runs[i].step(evaluators[i].explore(agent_actions, runs[i].n_actions))
    return [run.result() for run in runs]


def play(policy: Policy, env_cfg, episodes: int, seed: int, epsilon: float = 0.0) -> EvalResult:
    """One evaluation on envs of its own, closed afterwards."""
    evaluator = Evaluator(env_cfg, seed, epsilon=epsilon)
    try:
        return evaluator.run(policy, episodes)
    finally:
        evaluator.close()
