"""Experience replay in preallocated NumPy arrays (a ring buffer)."""

from __future__ import annotations

from typing import Any, Iterator, NamedTuple

import numpy as np
import torch


class Batch(NamedTuple):
    obs: torch.Tensor  # (B, obs_dim) float32
    actions: torch.Tensor  # (B,) int64
    rewards: torch.Tensor  # (B,) float32
    next_obs: torch.Tensor  # (B, obs_dim) float32
    terminated: torch.Tensor  # (B,) float32: 1.0 where the episode truly ended


FIELDS = ("obs", "actions", "rewards", "next_obs", "terminated")
GATHER_BYTES = 4 << 20  # the most sample_batches() copies at once


class ReplayBuffer:
    """Uniform replay over the last `capacity` transitions.

    Only `terminated` is stored as the end-of-episode flag: a transition cut by a time
    limit (truncated) keeps terminated = 0 and is therefore bootstrapped from next_obs.
    """

    def __init__(self, capacity: int, obs_dim: int, rng: np.random.Generator,
                 device: torch.device | str = "cpu", _agents: tuple[int, ...] = ()) -> None:
        self.capacity = capacity
        self.rng = rng
        self.device = torch.device(device)
        lead = (capacity, *_agents)  # one slot per transition (and agent)
        self.obs = np.zeros((*lead, obs_dim), dtype=np.float32)
        self.next_obs = np.zeros((*lead, obs_dim), dtype=np.float32)
        self.actions = np.zeros(lead, dtype=np.int64)
        self.rewards = np.zeros(lead, dtype=np.float32)
        self.terminated = np.zeros(lead, dtype=np.float32)
        # Views of the fields with their leading (slot, agent...) dimensions merged: the
        # rows that sample() gathers from, in Batch order.
        self.rows = [getattr(self, name).reshape(-1, *getattr(self, name).shape[len(lead):])
                     for name in FIELDS]
        self.row_bytes = sum(a[0].nbytes for a in self.rows)
        self.position = 0  # next slot to write
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, obs: np.ndarray, action: int, reward: float, next_obs: np.ndarray,
            terminated: bool) -> None:
        """Store one transition, overwriting the oldest once full."""
        i = self.position
        self.obs[i] = obs
        self.actions[i] = action
        self.rewards[i] = reward
        self.next_obs[i] = next_obs
        self.terminated[i] = terminated
        self.position = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def state_dict(self) -> dict[str, Any]:
        """Contents and position, as tensors and ints (for full-state checkpoints)."""
        n = self.size
        return {"position": self.position, "size": n,
                **{name: torch.from_numpy(getattr(self, name)[:n].copy()) for name in FIELDS}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        n = state["size"]
        if n > self.capacity:
            raise ValueError(f"saved buffer holds {n} transitions, capacity is {self.capacity}")
        for name in FIELDS:
            getattr(self, name)[:n] = state[name].numpy()
        self.position, self.size = state["position"], n

    def sample(self, batch_size: int) -> Batch:
        """Draw `batch_size` transitions uniformly, with replacement."""
        return next(self.sample_batches(batch_size, 1))

    def sample_batches(self, batch_size: int, count: int) -> Iterator[Batch]:
        """`count` batches of `batch_size` transitions, drawn uniformly with replacement:
        the batches of one round of gradient steps, for which the buffer does not change.

        All their indices come from one draw of the generator and their rows from one
        gather per field (in chunks of at most GATHER_BYTES), which costs a fraction of
        `count` sample() calls; the draws are those sample() would make, except that an
        occasional rejected draw shifts the stream.
        """
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = self.sample_rows(count, batch_size)
        per_chunk = min(count, max(1, GATHER_BYTES // (idx[0].size * self.row_bytes)))
        for start in range(0, count, per_chunk):
            # batch by batch, each is gathered as it is; otherwise cut from its chunk
            chunk = idx[start] if per_chunk == 1 else idx[start:start + per_chunk]
            # ndarray.take copies the rows about twice as fast as indexing with idx
            fields = [torch.from_numpy(a.take(chunk, axis=0)) for a in self.rows]
            if self.device.type != "cpu":
                fields = [f.to(self.device, non_blocking=True) for f in fields]
            if per_chunk == 1:
                yield Batch(*fields)
            else:
                yield from map(Batch, *(f.unbind(0) for f in fields))

    def sample_rows(self, count: int, batch_size: int) -> np.ndarray:
        """(count, batch_size) indices into `rows`: `count` batches of transitions drawn
        uniformly from those stored."""
        return self.rng.integers(0, self.size, size=(count, batch_size))


class StackedReplayBuffer(ReplayBuffer):
    """The replay buffers of K agents stepped in lockstep, in one set of arrays of shape
    (capacity, K, ...): add() writes one transition per agent, and sample() draws each
    agent's batch from its own transitions with its own generator, returning a Batch with
    a leading agent dimension ((K, B, obs_dim), (K, B), ...)."""

    def __init__(self, capacity: int, obs_dim: int, rngs: list[np.random.Generator],
                 device: torch.device | str = "cpu") -> None:
        super().__init__(capacity, obs_dim, rngs[0], device, _agents=(len(rngs),))
        self.rngs = rngs
        self.agent_offsets = np.arange(len(rngs))[:, None]

    def sample_rows(self, count: int, batch_size: int) -> np.ndarray:
        """(count, K, batch_size) indices into `rows`: agent k's batches, drawn from its
        own slots with its own generator."""
        slots = np.stack([rng.integers(0, self.size, size=(count, batch_size))
                          for rng in self.rngs], axis=1)
        return slots * len(self.rngs) + self.agent_offsets
