"""Exploration schedules: epsilon as a function of env steps and finished episodes."""

from __future__ import annotations

import math
from typing import Callable

from dqn.config import (
    ExplorationConfig,
    ExponentialExplorationConfig,
    LinearExplorationConfig,
    MultiplicativeExplorationConfig,
)

Schedule = Callable[[int, int], float]
"""epsilon = schedule(env_steps_done, episodes_done)"""


def build_schedule(cfg: ExplorationConfig) -> Schedule:
    """The epsilon schedule that `cfg` describes."""
    start, end = cfg.start, cfg.end
    if isinstance(cfg, ExponentialExplorationConfig):
        decay = cfg.decay
        return lambda step, episode: end + (start - end) * math.exp(-step / decay)
    if isinstance(cfg, MultiplicativeExplorationConfig):
        factor = cfg.factor
        return lambda step, episode: max(end, start * factor**episode)
    if isinstance(cfg, LinearExplorationConfig):
        steps = cfg.steps
        return lambda step, episode: start + (end - start) * min(1.0, step / steps)
    raise TypeError(f"no exploration schedule for {type(cfg).__name__}")
