"""The rollout memory of PQN (Gallici et al. 2024): no replay, the last rollout only.

Every agent acts for `rollout_steps` (T) vector steps in its N envs; the T x N
transitions get Q(lambda) returns computed from the Q-values of the network that collected
them (at the rollout's end, before any update), then `epochs` passes of `minibatches`
shuffled minibatches train on them, and the next rollout starts afresh. The loop drives it
through the same methods as a replay memory; train.train_frequency, train.gradient_steps
and the replay settings do not apply.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import gymnasium as gym
import numpy as np
import torch

from dqn.checks import fail, positive, within
from dqn.interfaces import Memory, MemoryConfig
from dqn.options import option
from dqn.replay.arrays import as_array
from dqn.replay.buffer import Batch, refuse_beyond_memory

VALUES_BYTES = 32 << 20  # the most observations (as float32) one bootstrap pass takes


@dataclass
class RolloutConfig(MemoryConfig):
    rollout_steps: int = 32  # T: vector steps per rollout (T x env.num_envs transitions per agent)
    epochs: int = 2  # passes over each rollout
    minibatches: int = 32  # minibatches per pass, of T x env.num_envs / minibatches transitions
    q_lambda: float = 0.65  # Q(lambda)'s lambda: 0 gives one-step targets, 1 Monte-Carlo returns

    def check(self) -> None:
        positive("buffer.rollout_steps", self.rollout_steps)
        positive("buffer.epochs", self.epochs)
        positive("buffer.minibatches", self.minibatches)
        within("buffer.q_lambda", self.q_lambda, 0, 1)

    def against(self, config: Any) -> None:
        transitions = self.rollout_steps * config.env.num_envs
        total = config.train.total_steps
        if total is not None and transitions > total:
            fail("buffer.rollout_steps", self.rollout_steps,
                 f"buffer.rollout_steps x env.num_envs ({self.rollout_steps} x "
                 f"{config.env.num_envs} = {transitions} env steps) must be <= "
                 f"train.total_steps ({total}), or no rollout ever completes to train on")
        if transitions % self.minibatches:
            fail("buffer.minibatches", self.minibatches,
                 f"must divide buffer.rollout_steps x env.num_envs ({self.rollout_steps} x "
                 f"{config.env.num_envs} = {transitions}): every minibatch is the same size")


def q_lambda_returns(rewards: np.ndarray, next_values: np.ndarray, terminated: np.ndarray,
                     cut: np.ndarray, gamma: float, lam: float) -> np.ndarray:
    """Q(lambda) returns of a rollout, arrays (T, ...) with time first (Peng and Williams
    1996, as PQN computes them):

        G_t = r_t + gamma * [(1 - lambda) V(s'_t) + lambda G_t+1]    inside an episode
        G_t = r_t + gamma * V(s'_t)               where the episode was cut (truncated,
                                                  or ended for another reason) or at the
                                                  rollout's last step
        G_t = r_t                                 where it terminated

    V(s'_t) = `next_values`: the bootstrap value of each transition's next observation (the
    real final one where an episode ended). Returns never cross an episode's end.
    """
    returns = np.empty_like(rewards, dtype=np.float32)
    following = np.zeros(rewards.shape[1:], dtype=np.float32)
    for t in reversed(range(len(rewards))):
        mix = np.where(cut[t] | (t == len(rewards) - 1), 0.0, lam)
        bootstrap = (1.0 - mix) * next_values[t] + mix * following
        following = rewards[t] + gamma * np.where(terminated[t], 0.0, bootstrap)
        returns[t] = following
    return returns


@option("buffer", "rollout", RolloutConfig)
class RolloutBuffer(Memory):
    """The current rollout of K agents with N envs each: arrays (K, T, N, ...), so that
    agent k's T x N transitions are one contiguous block (K, T * N, ...). Minibatches are
    drawn without replacement, a new permutation per pass, each agent with its own
    generator; every transition is used exactly `epochs` times."""

    def __init__(self, cfg: RolloutConfig, observation_space: gym.spaces.Box,
                 rngs: list[np.random.Generator], gamma: float, device: torch.device,
                 frame_stack: int | None = None, envs_per_agent: int = 1) -> None:
        self.steps, self.epochs, self.minibatches = cfg.rollout_steps, cfg.epochs, cfg.minibatches
        self.lam, self.gamma, self.rngs = cfg.q_lambda, gamma, rngs
        self.device = torch.device(device)
        self.agents, self.envs = len(rngs), envs_per_agent
        self.transitions = self.steps * envs_per_agent  # per agent and rollout
        self.batch_size = self.transitions // self.minibatches
        shape, dtype = tuple(observation_space.shape), observation_space.dtype
        lead = (self.agents, self.steps, envs_per_agent)
        self.fields = {"obs": np.zeros((*lead, *shape), dtype),
                       "next_obs": np.zeros((*lead, *shape), dtype),
                       "actions": np.zeros(lead, np.int64),
                       "rewards": np.zeros(lead, np.float32),
                       "terminated": np.zeros(lead, bool), "cut": np.zeros(lead, bool)}
        # the same memory as (K, T * N, ...): each agent's transitions in one block
        self.flat = {name: a.reshape(self.agents, self.transitions, *a.shape[3:])
                     for name, a in self.fields.items()}
        self.returns = np.zeros((self.agents, self.transitions), np.float32)
        self.obs_bytes = math.prod(shape) * 4
        self.position = 0  # vector steps stored in the current rollout

    def __len__(self) -> int:
        """Transitions of the current rollout, per agent."""
        return self.position * self.envs

    @staticmethod
    def transition_bytes(observation_space: gym.spaces.Box) -> int:
        """Bytes one transition of one env takes: obs and next_obs in the space's dtype, the
        action (int64), the reward, its bootstrap value and its return (float32 each), two
        flags."""
        obs = math.prod(observation_space.shape) * np.dtype(observation_space.dtype).itemsize
        return 2 * obs + 8 + 4 + 4 + 4 + 2

    @classmethod
    def check_fits(cls, config: Any, observation_space: gym.spaces.Box,
                   frame_stack: int | None) -> None:
        """ConfigError, in one line, when a rollout does not fit in the memory available."""
        b, envs, agents = config.buffer, config.env.num_envs, config.num_seeds
        per_transition = cls.transition_bytes(observation_space)
        refuse_beyond_memory(b.rollout_steps * envs * agents * per_transition,
                             f"buffer.rollout_steps={b.rollout_steps}", "rollout",
                             f"{per_transition:,} bytes per transition x {envs} env(s) x "
                             f"{agents} agent(s)", "lower buffer.rollout_steps or env.num_envs")

    def add(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
            next_obs: np.ndarray, terminated: np.ndarray, truncated: np.ndarray,
            ended: np.ndarray | None = None) -> None:
        """Store one env step per column (arrays with a leading K * N dimension; `ended`:
        the episode ended, by default terminated or truncated); the step after a complete
        rollout starts the next one."""
        if self.position == self.steps:
            self.position = 0
        i, shaped = self.position, (self.agents, self.envs)
        f = self.fields
        f["obs"][:, i] = obs.reshape(*shaped, *obs.shape[1:])
        f["next_obs"][:, i] = next_obs.reshape(*shaped, *next_obs.shape[1:])
        f["actions"][:, i] = actions.reshape(shaped)
        f["rewards"][:, i] = rewards.reshape(shaped)
        f["terminated"][:, i] = terminated.reshape(shaped)
        cut = truncated | terminated if ended is None else truncated | ended
        f["cut"][:, i] = cut.reshape(shaped)
        self.position = i + 1

    def updates_due(self, before: int, step: int, train: Any) -> int:
        """epochs x minibatches gradient steps once the rollout is complete, else none."""
        return self.epochs * self.minibatches if self.position == self.steps else 0

    def anneal(self, progress: float) -> None:
        """Nothing anneals in a rollout memory."""

    def compute_returns(self, bootstrap_values: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """The Q(lambda) returns of the complete rollout, from `bootstrap_values` of every
        transition's next observation (next observations (K, M, ...) -> values (K, M))."""
        next_obs = self.flat["next_obs"]
        values = np.empty((self.agents, self.transitions), np.float32)
        chunk = max(1, VALUES_BYTES // (self.agents * self.obs_bytes))
        for start in range(0, self.transitions, chunk):
            part = torch.from_numpy(next_obs[:, start:start + chunk]).to(self.device)
            values[:, start:start + chunk] = bootstrap_values(part).cpu().numpy()
        f, timed = self.fields, (self.agents, self.steps, self.envs)
        returns = q_lambda_returns(*(np.moveaxis(a, 1, 0) for a in (
            f["rewards"], values.reshape(timed), f["terminated"], f["cut"])),
            gamma=self.gamma, lam=self.lam)
        self.returns[:] = np.moveaxis(returns, 0, 1).reshape(self.agents, self.transitions)

    def sample_batches(self, batch_size: int, count: int) -> Iterator[Batch]:
        """`count` minibatches of `batch_size` (= self.batch_size) transitions per agent,
        pass after pass over the rollout, each pass a fresh permutation per agent."""
        if batch_size != self.batch_size:
            raise ValueError(f"a rollout's minibatches hold {self.batch_size} transitions, "
                             f"not {batch_size}")
        agents = np.arange(self.agents)[:, None]
        order = np.empty((self.agents, self.transitions), np.int64)
        for i in range(count):
            j = i % self.minibatches
            if j == 0:
                order = np.stack([rng.permutation(self.transitions) for rng in self.rngs])
            rows = order[:, j * batch_size:(j + 1) * batch_size]
            fields = [torch.from_numpy(a[agents, rows]) for a in (
                self.flat["obs"], self.flat["actions"], self.returns)]
            if self.device.type != "cpu":
                fields = [f.to(self.device, non_blocking=True) for f in fields]
            obs, actions, returns = fields
            yield Batch(obs, actions, None, None, None, returns=returns)

    def update_priorities(self, batch: Batch, td_errors: torch.Tensor) -> None:
        """A rollout memory has no priorities."""

    def state_dict(self) -> dict[str, Any]:
        """The rollout so far (for full-state checkpoints): NumPy views, not copies. A
        complete rollout has been trained on, so it is saved as the empty one the next step
        starts."""
        n = 0 if self.position == self.steps else self.position
        return {"position": n, **{name: a[:, :n] for name, a in self.fields.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        n = state["position"]
        if n > self.steps:
            raise ValueError(f"saved rollout holds {n} vector steps, a rollout has {self.steps}")
        for name, array in self.fields.items():
            array[:, :n] = as_array(state[name])
        self.position = n
