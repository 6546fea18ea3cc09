"""Proportional prioritized replay (Schaul et al. 2016): transition i is drawn with
probability p_i^alpha / sum_j p_j^alpha, where p_i = |TD error| + priority_eps from its
last gradient step (new transitions: the largest priority so far), and its loss is
weighted by (N P(i))^-beta / max over the batch, with beta annealed from beta_start to 1
over the training budget. A sum tree per agent, over the transitions of all its envs,
makes drawing a batch and updating its priorities cost O(B log N)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from dqn.checks import positive, within
from dqn.options import option
from dqn.replay.arrays import as_array
from dqn.replay.buffer import Batch, ReplayBuffer, ReplayConfig


@dataclass
class PrioritizedBufferConfig(ReplayConfig):
    alpha: float = 0.6  # how much priorities count: 0 is uniform
    beta_start: float = 0.4  # importance-weight exponent at the start, annealed to 1
    priority_eps: float = 1e-6  # added to |TD error|, so no stored transition has priority 0

    def check(self) -> None:
        super().check()
        within("buffer.alpha", self.alpha, 0, 1)
        within("buffer.beta_start", self.beta_start, 0, 1)
        positive("buffer.priority_eps", self.priority_eps)


class SumTrees:
    """K sum trees over `capacity` leaves each, in one (K, 2 * size) float64 array: node i
    holds the sum of its children 2i and 2i + 1, leaf j sits at size + j, the root at 1."""

    def __init__(self, agents: int, capacity: int) -> None:
        self.size = 1 << max(0, (capacity - 1).bit_length())
        self.levels = self.size.bit_length() - 1
        self.tree = np.zeros((agents, 2 * self.size))
        self.offsets = np.arange(agents)[:, None] * 2 * self.size

    def totals(self) -> np.ndarray:
        """(K,) each tree's sum."""
        return self.tree[:, 1]

    def get(self, leaves: np.ndarray) -> np.ndarray:
        """The values of `leaves` (K, M)."""
        return self.tree.ravel()[self.offsets + self.size + leaves]

    def set(self, leaves: np.ndarray, values: np.ndarray) -> None:
        """Set leaves (K, M) of each tree to values (K, M) and update their ancestors."""
        flat = self.tree.ravel()
        nodes = self.size + leaves
        flat[self.offsets + nodes] = values
        for _ in range(self.levels):
            nodes = nodes // 2
            flat[self.offsets + nodes] = (flat[self.offsets + 2 * nodes]
                                          + flat[self.offsets + 2 * nodes + 1])

    def find(self, values: np.ndarray) -> np.ndarray:
        """For each value (K, M) in [0, total), the leaf where the running sum passes it."""
        flat = self.tree.ravel()
        nodes = np.ones(values.shape, dtype=np.int64)
        values = values.copy()
        for _ in range(self.levels):
            left = 2 * nodes
            left_sum = flat[self.offsets + left]
            right = values >= left_sum
            values -= np.where(right, left_sum, 0.0)
            nodes = left + right
        return nodes - self.size


@option("buffer", "prioritized", PrioritizedBufferConfig)
class PrioritizedReplay(ReplayBuffer):
    """Draws each batch in proportion to the transitions' priorities, one batch at a time
    (a gradient step's new priorities count for the next batch); its batches carry
    importance weights and the rows drawn."""

    round_at_once = False

    def __init__(self, cfg: PrioritizedBufferConfig, observation_space: gym.spaces.Box,
                 rngs: list[np.random.Generator], gamma: float, device: torch.device,
                 frame_stack: int | None = None, envs_per_agent: int = 1) -> None:
        super().__init__(cfg, observation_space, rngs, gamma, device, frame_stack,
                         envs_per_agent)
        self.alpha, self.beta_start, self.eps = cfg.alpha, cfg.beta_start, cfg.priority_eps
        # leaf slot * N + env: an agent's transitions numbered as rows_of() numbers them
        self.trees = SumTrees(len(rngs), self.capacity * envs_per_agent)
        self.max_priority = np.ones(len(rngs))  # the largest p^alpha so far, per agent
        self.beta = cfg.beta_start
        self.unranked: list[int] = []  # slots written since the trees last saw them

    @staticmethod
    def transition_bytes(observation_space: gym.spaces.Box, frame_stack: int | None = None) -> int:
        """A uniform buffer's, and at most 32 bytes of sum tree (two float64 nodes per leaf,
        leaves rounded up to a power of two)."""
        return ReplayBuffer.transition_bytes(observation_space, frame_stack) + 32

    def write(self, *transition: np.ndarray) -> None:
        """Store the transitions; they enter the trees at the largest priority so far (each
        agent's own) before the next draw, all at once."""
        self.unranked.append(self.position)
        super().write(*transition)

    def rank_new(self) -> None:
        if self.unranked:
            n = self.envs_per_agent
            leaves = (np.array(self.unranked)[:, None] * n + np.arange(n)).ravel()
            leaves = leaves[None].repeat(len(self.rngs), axis=0)
            self.trees.set(leaves, np.broadcast_to(self.max_priority[:, None], leaves.shape))
            self.unranked = []

    def anneal(self, progress: float) -> None:
        self.beta = self.beta_start + (1.0 - self.beta_start) * min(1.0, max(0.0, progress))

    def sample_rows(self, count: int, batch_size: int) -> np.ndarray:
        """(count, K, batch_size) rows: each batch stratified, one value drawn uniformly in
        each of batch_size equal parts of each agent's total priority."""
        self.rank_new()
        totals = self.trees.totals()  # (K,)
        u = np.stack([rng.random((count, batch_size)) for rng in self.rngs], axis=1)
        values = (np.arange(batch_size) + u) * (totals[:, None] / batch_size)[None]
        # values < total always; rounding could still reach past the last non-empty leaf
        values = np.minimum(values, np.nextafter(totals, 0)[:, None][None])
        agents, last = len(self.rngs), len(self) - 1
        leaves = self.trees.find(values.transpose(1, 0, 2).reshape(agents, -1))
        leaves = np.minimum(leaves, last).reshape(agents, count, batch_size)
        rows = self.rows_of(leaves.transpose(1, 0, 2), self.agent_offsets)
        unusable = ~self.usable(rows)
        while unusable.any():  # the few transitions whose oldest frames are overwritten
            for k, rng in enumerate(self.rngs):
                redraw = unusable[:, k]
                values = rng.random(int(redraw.sum())) * np.nextafter(totals[k], 0)
                found = self.trees.find(np.broadcast_to(values, (agents, len(values))))[k]
                rows[:, k][redraw] = self.rows_of(np.minimum(found, last), self.agent_offsets[k])
            unusable = ~self.usable(rows)
        return rows

    def batch(self, fields: list[torch.Tensor], rows: np.ndarray) -> Batch:
        leaves = self.numbers_of(rows)
        probabilities = self.trees.get(leaves) / self.trees.totals()[:, None]
        weights = (len(self) * probabilities) ** -self.beta
        weights /= weights.max(axis=1, keepdims=True)
        weights = torch.from_numpy(weights.astype(np.float32)).to(self.device)
        return Batch(*fields, weights=weights, indices=leaves)

    def update_priorities(self, batch: Batch, td_errors: torch.Tensor) -> None:
        priorities = (np.abs(td_errors.detach().cpu().numpy()).astype(np.float64)
                      + self.eps) ** self.alpha
        self.trees.set(batch.indices, priorities)
        self.max_priority = np.maximum(self.max_priority, priorities.max(axis=1))

    def state_dict(self) -> dict[str, Any]:
        self.rank_new()
        return {**super().state_dict(), "tree": self.trees.tree,
                "max_priority": self.max_priority, "beta": self.beta}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.trees.tree[:] = as_array(state["tree"])
        self.max_priority[:] = as_array(state["max_priority"])
        self.beta = state["beta"]
