"""Exploration schedules: epsilon as a function of env steps and finished episodes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from dqn.options import ConfigError, fail, option, positive, within


@dataclass
class ExplorationConfig:
    start: float = 1.0  # epsilon at env step 0
    end: float = 0.04  # the floor epsilon ends at

    def check(self) -> None:
        within("exploration.start", self.start, 0, 1)
        within("exploration.end", self.end, 0, 1)
        if self.end > self.start:
            fail("exploration.end", self.end, f"must be <= exploration.start ({self.start})")


DEFAULT_STEPS = 8_000  # the linear schedule's length when neither steps nor fraction is set


@dataclass
class LinearExplorationConfig(ExplorationConfig):
    """The schedule's length is `steps`, or `fraction` of the env-step budget: one of the
    two (neither: DEFAULT_STEPS). Validation sets `steps` from `fraction`."""

    steps: Optional[int] = None  # env steps to go from start to end
    fraction: Optional[float] = None  # if set: steps = fraction x train.total_steps

    def check(self) -> None:
        super().check()
        positive("exploration.steps", self.steps, optional=True)
        if self.fraction is not None:
            within("exploration.fraction", self.fraction, 0, 1, open_low=True)

    def against(self, config) -> None:
        """With `fraction`, steps becomes fraction x train.total_steps; an explicit `steps`
        beside it is refused (a config validated before, whose steps were set from its
        fraction, passes again)."""
        if self.fraction is None:
            self.steps = DEFAULT_STEPS if self.steps is None else self.steps
            return
        if config.train.total_steps is None:
            fail("exploration.fraction", self.fraction, "needs train.total_steps (it is a "
                 "fraction of the env-step budget); set exploration.steps instead")
        from_fraction = max(1, round(self.fraction * config.train.total_steps))
        if self.steps is not None and self.steps != from_fraction:
            raise ConfigError(
                f"exploration.steps={self.steps} and exploration.fraction={self.fraction} "
                f"both set the schedule's length ({self.fraction} x train.total_steps = "
                f"{from_fraction}): set one, and the other to null")
        self.steps = from_fraction


@dataclass
class ExponentialExplorationConfig(ExplorationConfig):
    decay: float = 1_000.0  # env steps; eps = end + (start - end) * exp(-step / decay)

    def check(self) -> None:
        super().check()
        positive("exploration.decay", self.decay)


@dataclass
class MultiplicativeExplorationConfig(ExplorationConfig):
    factor: float = 0.995  # per finished episode; eps <- max(end, eps * factor)

    def check(self) -> None:
        super().check()
        within("exploration.factor", self.factor, 0, 1, open_low=True)


@dataclass
class NoExplorationConfig:
    pass


@option("exploration", "none", NoExplorationConfig)
class NoExploration:
    """epsilon = 0: always the greedy action (for noisy networks, which explore through
    their noise)."""

    def __init__(self, cfg: NoExplorationConfig) -> None:
        pass

    def __call__(self, step: int, episodes: int) -> float:
        return 0.0


@option("exploration", "linear", LinearExplorationConfig)
class LinearSchedule:
    """epsilon falls linearly from start to end over `steps` env steps, then stays."""

    def __init__(self, cfg: LinearExplorationConfig) -> None:
        self.start, self.end, self.steps = cfg.start, cfg.end, cfg.steps

    def __call__(self, step: int, episodes: int) -> float:
        return self.start + (self.end - self.start) * min(1.0, step / self.steps)


@option("exploration", "exponential", ExponentialExplorationConfig)
class ExponentialSchedule:
    """epsilon = end + (start - end) * exp(-step / decay), per env step."""

    def __init__(self, cfg: ExponentialExplorationConfig) -> None:
        self.start, self.end, self.decay = cfg.start, cfg.end, cfg.decay

    def __call__(self, step: int, episodes: int) -> float:
        return self.end + (self.start - self.end) * math.exp(-step / self.decay)


@option("exploration", "multiplicative", MultiplicativeExplorationConfig)
class MultiplicativeSchedule:
    """epsilon = max(end, start * factor^episodes): multiplied by `factor` after each
    finished episode, floored at end."""

    def __init__(self, cfg: MultiplicativeExplorationConfig) -> None:
        self.start, self.end, self.factor = cfg.start, cfg.end, cfg.factor

    def __call__(self, step: int, episodes: int) -> float:
        return max(self.end, self.start * self.factor**episodes)
