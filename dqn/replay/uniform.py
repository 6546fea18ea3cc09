"""Uniform experience replay (Mnih et al. 2015): every stored transition equally likely."""

from __future__ import annotations

from dataclasses import dataclass

from dqn.options import option
from dqn.replay.buffer import ReplayBuffer, ReplayConfig


@dataclass
class UniformBufferConfig(ReplayConfig):
    pass


@option("buffer", "uniform", UniformBufferConfig)
class UniformReplay(ReplayBuffer):
    """Draws every batch uniformly, with replacement, from the stored transitions."""
