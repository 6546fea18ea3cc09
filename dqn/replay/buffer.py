"""The replay memory all buffer options share: a ring of preallocated NumPy arrays with a
slot per vector step and a column per (agent, env) pair, and uniform sampling.

ReplayBuffer implements `dqn.interfaces.Memory`. A replay option subclasses it and changes
how rows are drawn (`sample_rows`) and what a gradient step tells it (`update_priorities`);
the loop calls both for every buffer. A memory that is not a replay ring
(`dqn.replay.rollout`) implements `Memory` itself."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Iterator

import gymnasium as gym
import numpy as np
import torch

from dqn.budget import periods_crossed
from dqn.checks import ConfigError, at_least, fail, positive
from dqn.interfaces import Batch, Memory, MemoryConfig
from dqn.options import build, option_of
from dqn.replay.arrays import as_array
from dqn.replay.frames import FrameStore
from dqn.replay.nstep import NStepWindow

GATHER_BYTES = 4 << 20  # the most sample_batches() copies at once


@dataclass
class ReplayConfig(MemoryConfig):
    """Settings every replay option has."""

    capacity: int = 100_000  # transitions each agent keeps (over all its envs)
    batch_size: int = 64  # transitions per gradient step, per agent
    learning_starts: int = 1_000  # env steps collected before the first gradient step
    n_step: int = 1  # n-step returns: r_t + ... + gamma^(n-1) r_t+n-1 + gamma^n Q(s_t+n)

    def check(self) -> None:
        positive("buffer.capacity", self.capacity)
        positive("buffer.n_step", self.n_step)
        positive("buffer.batch_size", self.batch_size)
        if self.capacity < self.batch_size:
            fail("buffer.capacity", self.capacity,
                 f"must be >= buffer.batch_size ({self.batch_size})")
        at_least("buffer.learning_starts", self.learning_starts, 0)

    def against(self, config: Any) -> None:
        """Learning must start within the env-step budget, and a round of updates fall due."""
        total = config.train.total_steps
        if total is None:
            return
        if self.learning_starts >= total:
            fail("buffer.learning_starts", self.learning_starts,
                 f"must be < train.total_steps ({total}), or no gradient step ever runs")
        if config.train.train_frequency > total:
            fail("train.train_frequency", config.train.train_frequency,
                 f"must be <= train.total_steps ({total}), or no gradient step ever runs")


def check_slots_per_env(cfg: ReplayConfig, envs: int, frame_stack: int | None) -> None:
    """Each env keeps buffer.capacity // env.num_envs transitions: at least one, and with
    stacked frames enough to outlast a stack and an n-step window (or no stored transition
    could ever be drawn)."""
    stacked = bool(frame_stack and frame_stack > 1)
    slots = frame_stack + cfg.n_step if stacked else 1
    if cfg.capacity // envs >= slots:
        return
    if stacked:
        fail("buffer.capacity", cfg.capacity,
             f"must be >= {slots * envs} with env.frame_stack={frame_stack}, buffer.n_step="
             f"{cfg.n_step} and env.num_envs={envs} (each env keeps capacity // num_envs)")
    fail("buffer.capacity", cfg.capacity, f"must be >= env.num_envs ({envs}): each env keeps "
         "capacity // num_envs transitions")


def check_memory(cfg: ReplayConfig, observation_space: gym.spaces.Box, agents: int,
                 frame_stack: int | None = None, envs_per_agent: int = 1) -> None:
    """ConfigError, in one line, when the buffer cannot fit in the memory available: it
    holds capacity // envs_per_agent slots of agents x envs_per_agent columns."""
    per_transition = option_of(cfg).cls.transition_bytes(observation_space, frame_stack)
    columns = agents * envs_per_agent
    refuse_beyond_memory(cfg.capacity // envs_per_agent * columns * per_transition,
                         f"buffer.capacity={cfg.capacity}", "replay",
                         f"{per_transition:,} bytes per transition x {agents} agent(s) x "
                         f"{envs_per_agent} env(s) each", "lower buffer.capacity")


def refuse_beyond_memory(needed: int, setting: str, kind: str, detail: str,
                         remedy: str, available: int | None = None) -> None:
    """ConfigError, in one line, when `needed` bytes (of `kind` memory, for `setting`)
    exceed `available` bytes (by default the memory the system can still hand out)."""
    available = available_memory() if available is None else available
    if available is not None and needed > available:
        raise ConfigError(f"{setting} needs {needed / 2**30:.2f} GiB of {kind} memory "
                          f"({detail}) but {available / 2**30:.2f} GiB is available; {remedy}")


def available_memory() -> int | None:
    """Bytes of memory the system can still hand out (Linux: MemAvailable), or None."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def build_replay(cfg: ReplayConfig, observation_space: gym.spaces.Box,
                 rngs: list[np.random.Generator], gamma: float, device: torch.device,
                 frame_stack: int | None = None, envs_per_agent: int = 1) -> "ReplayBuffer":
    """The buffer option that `cfg` describes, for len(rngs) agents (one generator each)
    with `envs_per_agent` envs each; observations that are stacks of `frame_stack` frames
    keep each frame once."""
    return build(cfg, observation_space, rngs, gamma, device, frame_stack, envs_per_agent)


class ReplayBuffer(Memory):
    """The last `capacity` transitions of each of K agents with N envs each, stepped in
    lockstep: arrays of shape (capacity // N, K * N, ...), a slot per vector step and a
    column per (agent, env) pair, agent by agent (agent k's envs are columns kN .. kN+N-1).
    Sampled uniformly with replacement, each agent from the transitions of its own
    columns with its own generator.

    A transition cut by a time limit (truncated) keeps its discount gamma and is therefore
    bootstrapped from next_obs; only a terminated one gets discount 0. With n_step > 1 the
    env steps go through an NStepWindow first, which stores n-step transitions (discount
    gamma^k) instead.
    """

    round_at_once = True  # draw all batches of a round of gradient steps in one go

    def __init__(self, cfg: ReplayConfig, observation_space: gym.spaces.Box,
                 rngs: list[np.random.Generator], gamma: float, device: torch.device,
                 frame_stack: int | None = None, envs_per_agent: int = 1) -> None:
        self.envs_per_agent = envs_per_agent
        self.capacity, self.gamma = cfg.capacity // envs_per_agent, gamma  # slots
        self.batch_size, self.learning_starts = cfg.batch_size, cfg.learning_starts
        self.rngs = rngs
        self.device = torch.device(device)
        self.columns = len(rngs) * envs_per_agent
        lead = (self.capacity, self.columns)
        shape, dtype = tuple(observation_space.shape), observation_space.dtype
        self.frames = (FrameStore(self.capacity, self.columns, shape[1:], dtype, frame_stack,
                                  cfg.n_step) if frame_stack and frame_stack > 1 else None)
        self.fields = {"actions": np.zeros(lead, np.int64), "rewards": np.zeros(lead, np.float32),
                       "discounts": np.zeros(lead, np.float32)}
        if self.frames is None:
            self.fields["obs"] = np.zeros((*lead, *shape), dtype)
            self.fields["next_obs"] = np.zeros((*lead, *shape), dtype)
        # The fields with (slot, column) merged into one row index.
        self.rows = {name: a.reshape(-1, *a.shape[2:]) for name, a in self.fields.items()}
        obs_bytes = math.prod(shape) * np.dtype(dtype).itemsize
        self.row_bytes = 2 * obs_bytes + sum(a[0].nbytes for a in self.rows.values()
                                             if a.ndim == 1)
        self.agent_offsets = np.arange(len(rngs))[:, None] * envs_per_agent  # first columns
        self.position = 0  # next slot to write
        self.size = 0  # slots written
        self.window = (NStepWindow(cfg.n_step, self.columns, shape, dtype, gamma)
                       if cfg.n_step > 1 else None)
        self.pending: tuple | None = None  # frames: a transition awaiting its next frame

    def __len__(self) -> int:
        """Transitions stored per agent."""
        return self.size * self.envs_per_agent

    @classmethod
    def check_fits(cls, config: Any, observation_space: gym.spaces.Box,
                   frame_stack: int | None) -> None:
        """ConfigError, in one line, when this memory cannot serve the run `config` (a
        Config): too few slots per env, or more bytes than the machine has."""
        check_slots_per_env(config.buffer, config.env.num_envs, frame_stack)
        check_memory(config.buffer, observation_space, config.num_seeds, frame_stack,
                     config.env.num_envs)

    def updates_due(self, before: int, step: int, train: Any) -> int:
        """Gradient steps due after the vector step from env step `before` to `step`:
        train.gradient_steps for each train.train_frequency env steps crossed, once
        learning_starts env steps are collected and a transition is stored."""
        rounds = periods_crossed(before, step, train.train_frequency)
        if step < self.learning_starts or not rounds or not len(self):
            return 0
        return rounds * train.gradient_steps

    def compute_returns(self, bootstrap_values: Any) -> None:
        """Before a round of gradient steps: a memory whose batches carry their targets
        computes them here with the agents' `bootstrap_values`; a replay memory's batches
        bootstrap in the loss, so it does nothing."""

    def rows_of(self, numbers: np.ndarray, first_column: int | np.ndarray) -> np.ndarray:
        """Row indices of an agent's transitions numbered `numbers` (each in
        [0, len(self)): slot number // N, env number % N), the agent's envs starting at
        `first_column` (an entry of agent_offsets, or all of them)."""
        n = self.envs_per_agent
        return numbers // n * self.columns + first_column + numbers % n

    def numbers_of(self, rows: np.ndarray) -> np.ndarray:
        """The inverse of rows_of: each row's number among its agent's transitions."""
        n = self.envs_per_agent
        return rows // self.columns * n + rows % self.columns % n

    @staticmethod
    def transition_bytes(observation_space: gym.spaces.Box, frame_stack: int | None = None) -> int:
        """Bytes one transition of one env takes: obs and next_obs in the space's dtype (one
        frame, for stacked frames), the action (int64), the reward and the discount (float32
        each)."""
        obs = math.prod(observation_space.shape) * np.dtype(observation_space.dtype).itemsize
        if frame_stack and frame_stack > 1:
            return FrameStore.transition_bytes(obs // frame_stack) + 8 + 4 + 4
        return 2 * obs + 8 + 4 + 4

    def add(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
            next_obs: np.ndarray, terminated: np.ndarray, truncated: np.ndarray,
            ended: np.ndarray | None = None) -> None:
        """Store one env step per column (arrays with a leading K * N dimension; `ended`:
        the episode ended, by default terminated or truncated), overwriting the oldest once
        full; with n_step > 1, the n-step transition that this step completes (none during
        the first n - 1 steps)."""
        if self.frames is not None:
            self.frames.observe(obs, terminated | truncated if ended is None else ended)
        if self.window is None:
            transition = (obs, actions, rewards, next_obs, np.where(terminated, 0.0, self.gamma),
                          np.ones(self.columns, np.int64), truncated & ~terminated)
        else:
            transition = self.window.push(obs, actions, rewards, next_obs, terminated,
                                          truncated)
            if transition is None:
                return
        if self.frames is None:
            self.write(*transition)
            return
        if self.pending is not None:  # its next observation's frame is in the ring now
            self.write(*self.pending)
        self.pending = tuple(np.array(part) for part in transition)

    def write(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
              next_obs: np.ndarray, discounts: np.ndarray, steps: np.ndarray,
              truncated: np.ndarray) -> None:
        """Put one transition per column in the next slot (`steps`: env steps to next_obs;
        `truncated`: the episode was cut by a time limit there)."""
        i = self.position
        f = self.fields
        if self.frames is None:
            f["obs"][i] = obs
            f["next_obs"][i] = next_obs
        else:  # obs's frame is in the ring at slot i already
            self.frames.place(i, next_obs, steps, truncated)
        f["actions"][i] = actions
        f["rewards"][i] = rewards
        f["discounts"][i] = discounts
        self.position = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def gather(self, rows: np.ndarray) -> list[torch.Tensor]:
        """The Batch fields of `rows` (any shape), as tensors on the buffer's device."""
        taken = {name: a.take(rows, axis=0) for name, a in self.rows.items()}
        if self.frames is not None:
            taken["obs"], taken["next_obs"] = self.frames.gather(rows // self.columns,
                                                                 rows % self.columns)
        fields = [torch.from_numpy(taken[name])
                  for name in ("obs", "actions", "rewards", "next_obs", "discounts")]
        if self.device.type != "cpu":
            fields = [f.to(self.device, non_blocking=True) for f in fields]
        return fields

    def usable(self, rows: np.ndarray) -> np.ndarray:
        """Whether the transitions of `rows` can be drawn (all their frames stored)."""
        if self.frames is None:
            return np.ones(rows.shape, dtype=bool)
        return self.frames.usable(rows // self.columns, self.size, self.position)

    def sample(self, batch_size: int) -> Batch:
        """One batch of `batch_size` transitions per agent."""
        return next(self.sample_batches(batch_size, 1))

    def sample_batches(self, batch_size: int, count: int) -> Iterator[Batch]:
        """`count` batches of `batch_size` transitions per agent: the batches of one round
        of gradient steps, for which the buffer does not change.

        Their rows come from one draw (`sample_rows`) and one gather per field, in chunks
        of at most GATHER_BYTES, which costs a fraction of `count` separate draws. A buffer
        whose draws depend on the previous gradient step (round_at_once = False) draws and
        gathers each batch when it is asked for.
        """
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        if not self.round_at_once:
            for _ in range(count):
                rows = self.sample_rows(1, batch_size)[0]
                yield self.batch(self.gather(rows), rows)
            return
        idx = self.sample_rows(count, batch_size)
        per_chunk = min(count, max(1, GATHER_BYTES // (idx[0].size * self.row_bytes)))
        for start in range(0, count, per_chunk):
            # batch by batch, each is gathered as it is; otherwise cut from its chunk
            chunk = idx[start] if per_chunk == 1 else idx[start:start + per_chunk]
            fields = self.gather(chunk)
            if per_chunk == 1:
                yield self.batch(fields, chunk)
            else:
                for i, batch_fields in enumerate(zip(*(f.unbind(0) for f in fields))):
                    yield self.batch(list(batch_fields), chunk[i])

    def batch(self, fields: list[torch.Tensor], rows: np.ndarray) -> Batch:
        """The Batch of gathered `fields` for the drawn `rows` (K, B)."""
        return Batch(*fields)

    def sample_rows(self, count: int, batch_size: int) -> np.ndarray:
        """(count, K, batch_size) indices into `rows`: agent k's batches, drawn uniformly
        from its own columns' transitions with its own generator."""
        stored = len(self)
        draws = np.stack([rng.integers(0, stored, size=(count, batch_size))
                          for rng in self.rngs], axis=1)
        rows = self.rows_of(draws, self.agent_offsets)
        unusable = ~self.usable(rows)
        while unusable.any():  # the few transitions whose oldest frames are overwritten
            for k, rng in enumerate(self.rngs):
                redraw = unusable[:, k]
                rows[:, k][redraw] = self.rows_of(rng.integers(0, stored, int(redraw.sum())),
                                                  self.agent_offsets[k])
            unusable = ~self.usable(rows)
        return rows

    def anneal(self, progress: float) -> None:
        """The fraction of the training budget spent so far, before each round of
        gradient steps (prioritized replay anneals its beta with it)."""

    def update_priorities(self, batch: Batch, td_errors: torch.Tensor) -> None:
        """What the gradient step on `batch` found: per-sample TD errors (K, B). A uniform
        buffer ignores it."""

    def state_dict(self) -> dict[str, Any]:
        """Contents and position (for full-state checkpoints): NumPy views of the stored
        part of the arrays, not copies (dqn.run.checkpoint writes them as they are)."""
        n = self.size
        state = {"position": self.position, "size": n,
                 **{name: array[:n] for name, array in self.fields.items()}}
        if self.window is not None:
            state["window"] = self.window.state_dict()
        if self.frames is not None:
            state["frames"] = self.frames.state_dict()
            state["pending"] = None if self.pending is None else list(self.pending)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        n = state["size"]
        if n > self.capacity:
            raise ValueError(f"saved buffer holds {n} transitions, capacity is {self.capacity}")
        for name, array in self.fields.items():
            array[:n] = as_array(state[name])
        self.position, self.size = state["position"], n
        if self.window is not None:
            self.window.load_state_dict(state["window"])
        if self.frames is not None:
            self.frames.load_state_dict(state["frames"])
            self.pending = (None if state["pending"] is None
                            else tuple(as_array(part) for part in state["pending"]))
