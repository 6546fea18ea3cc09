"""Exploration: how an agent picks its actions while training, and what it logs of it.

Each `exploration=` option is one class implementing `dqn.interfaces.Exploration`: from
the Q-values of one agent's N envs (asked for only when needed: see `ActionValues`) and
the agent's own generator it selects N actions, and `scalars` says what it logs (`epsilon`,
`temperature`). The schedule of its parameter lives in the class, as a function of env
steps and the agent's finished episodes, so a policy holds no state of its own and a
resumed run continues bitwise. `epsilon_greedy` is the one epsilon-greedy rule: training,
evaluation (`eval.epsilon`) and video all call it, each with its own generator.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from dqn.checks import ConfigError, at_least, fail, positive, within
from dqn.interfaces import ActionValues, Exploration, ExplorationConfig, ExplorationContext
from dqn.nets import greedy_actions
from dqn.options import option


def epsilon_greedy(greedy: Callable[[], np.ndarray], epsilon: float | np.ndarray,
                   rng: np.random.Generator, n_actions: int, envs: int) -> np.ndarray:
    """Actions (N,) for N envs, each random with probability `epsilon` (one for all, or
    each env's own (N,)): `rng.random(N)`
    decides which envs explore (a draw below epsilon), then `rng.integers` gives those
    uniform random actions in env order; the others take `greedy()`'s actions, asked for
    only when some env does not explore."""
    explore = rng.random(envs) < epsilon
    if explore.all():
        actions = np.zeros(envs, dtype=np.int64)
    else:
        actions = np.array(greedy(), dtype=np.int64)
    if explore.any():
        actions[explore] = rng.integers(n_actions, size=int(explore.sum()))
    return actions


class JointValues:
    """The Q-values (K, N, A) of all K agents' observations, computed by `compute` on
    first use: one forward pass serves every agent, none is made when no agent asks.
    `of(k)` is agent k's `ActionValues`."""

    def __init__(self, compute: Callable[[], np.ndarray], agents: int, envs: int,
                 n_actions: int) -> None:
        self.compute, self.agents, self.envs, self.n_actions = compute, agents, envs, n_actions
        self._q: np.ndarray | None = None
        self._greedy: np.ndarray | None = None

    def q_values(self) -> np.ndarray:
        if self._q is None:
            self._q = self.compute()
        return self._q

    def greedy(self) -> np.ndarray:
        if self._greedy is None:
            self._greedy = greedy_actions(self.q_values())
        return self._greedy

    def of(self, k: int) -> "AgentValues":
        return AgentValues(self, k)


class AgentValues:
    """Agent k's rows of JointValues: its `ActionValues`."""

    def __init__(self, joint: JointValues, k: int) -> None:
        self.joint, self.k = joint, k
        self.envs, self.n_actions = joint.envs, joint.n_actions

    def q_values(self) -> np.ndarray:
        return self.joint.q_values()[self.k]

    def greedy(self) -> np.ndarray:
        return self.joint.greedy()[self.k]


# --- epsilon-greedy options ----------------------------------------------------------------
@dataclass
class EpsilonConfig(ExplorationConfig):
    """Settings every epsilon-greedy schedule has."""

    start: float = 1.0  # epsilon at env step 0
    end: float = 0.04  # the floor epsilon ends at

    def check(self) -> None:
        within("exploration.start", self.start, 0, 1)
        within("exploration.end", self.end, 0, 1)
        if self.end > self.start:
            fail("exploration.end", self.end, f"must be <= exploration.start ({self.start})")


DEFAULT_STEPS = 8_000  # a schedule's length when neither steps nor fraction is set


@dataclass
class LinearExplorationConfig(EpsilonConfig):
    """The schedule's length is `steps`, or `fraction` of the env-step budget: one of the
    two (neither: DEFAULT_STEPS). Validation sets `steps` from `fraction`."""

    steps: Optional[int] = None  # env steps from start to end (null: fraction, else 8000)
    fraction: Optional[float] = None  # if set: steps = fraction x train.total_steps

    def check(self) -> None:
        super().check()
        positive("exploration.steps", self.steps, optional=True)
        if self.fraction is not None:
            within("exploration.fraction", self.fraction, 0, 1, open_low=True)

    def against(self, config) -> None:
        """With `fraction`, steps becomes fraction x train.total_steps (see
        `schedule_length`)."""
        self.steps = schedule_length(self.steps, self.fraction, config)


def schedule_length(steps: Optional[int], fraction: Optional[float], config) -> int:
    """The length in env steps of a schedule set by `exploration.steps` or
    `exploration.fraction` of train.total_steps (neither: DEFAULT_STEPS). An explicit
    `steps` beside a fraction is refused, unless it is the one the fraction gives (a config
    validated before, whose steps were set from its fraction, passes again)."""
    if fraction is None:
        return DEFAULT_STEPS if steps is None else steps
    if config.train.total_steps is None:
        fail("exploration.fraction", fraction, "needs train.total_steps (it is a "
             "fraction of the env-step budget); set exploration.steps instead")
    from_fraction = max(1, round(fraction * config.train.total_steps))
    if steps is not None and steps != from_fraction:
        raise ConfigError(
            f"exploration.steps={steps} and exploration.fraction={fraction} "
            f"both set the schedule's length ({fraction} x train.total_steps = "
            f"{from_fraction}): set one, and the other to null")
    return from_fraction


@dataclass
class ExponentialExplorationConfig(EpsilonConfig):
    decay: float = 1_000.0  # env steps; eps = end + (start - end) * exp(-step / decay)

    def check(self) -> None:
        super().check()
        positive("exploration.decay", self.decay)


@dataclass
class MultiplicativeExplorationConfig(EpsilonConfig):
    factor: float = 0.995  # per finished episode; eps <- max(end, eps * factor)

    def check(self) -> None:
        super().check()
        within("exploration.factor", self.factor, 0, 1, open_low=True)


@dataclass
class NoExplorationConfig(ExplorationConfig):
    pass


class EpsilonGreedy(Exploration):
    """Epsilon-greedy (`epsilon_greedy`) with epsilon from the schedule `epsilon`."""

    SHORT = {"epsilon": "eps"}

    @abstractmethod
    def epsilon(self, step: int, episodes: int) -> float:
        """The probability of a random action at env step `step`, after `episodes`
        finished episodes."""

    def select(self, values: ActionValues, step: int, episodes: int,
               rng: np.random.Generator) -> np.ndarray:
        return epsilon_greedy(values.greedy, self.epsilon(step, episodes), rng,
                              values.n_actions, values.envs)

    def scalars(self, step: int, episodes: int) -> dict[str, float]:
        return {"epsilon": self.epsilon(step, episodes)}


@option("exploration", "none", NoExplorationConfig)
class NoExploration(EpsilonGreedy):
    """epsilon = 0: always the greedy action (for noisy networks, which explore through
    their noise); draws nothing."""

    def __init__(self, cfg: NoExplorationConfig, context: ExplorationContext) -> None:
        pass

    def epsilon(self, step: int, episodes: int) -> float:
        return 0.0

    def select(self, values: ActionValues, step: int, episodes: int,
               rng: np.random.Generator) -> np.ndarray:
        return np.array(values.greedy(), dtype=np.int64)


@option("exploration", "linear", LinearExplorationConfig)
class LinearSchedule(EpsilonGreedy):
    """epsilon falls linearly from start to end over `steps` env steps, then stays."""

    def __init__(self, cfg: LinearExplorationConfig, context: ExplorationContext) -> None:
        self.start, self.end, self.steps = cfg.start, cfg.end, cfg.steps

    def epsilon(self, step: int, episodes: int) -> float:
        return self.start + (self.end - self.start) * min(1.0, step / self.steps)


@option("exploration", "exponential", ExponentialExplorationConfig)
class ExponentialSchedule(EpsilonGreedy):
    """epsilon = end + (start - end) * exp(-step / decay), per env step."""

    def __init__(self, cfg: ExponentialExplorationConfig, context: ExplorationContext) -> None:
        self.start, self.end, self.decay = cfg.start, cfg.end, cfg.decay

    def epsilon(self, step: int, episodes: int) -> float:
        return self.end + (self.start - self.end) * math.exp(-step / self.decay)


@option("exploration", "multiplicative", MultiplicativeExplorationConfig)
class MultiplicativeSchedule(EpsilonGreedy):
    """epsilon = max(end, start * factor^episodes): multiplied by `factor` after each
    finished episode, floored at end."""

    def __init__(self, cfg: MultiplicativeExplorationConfig, context: ExplorationContext) -> None:
        self.start, self.end, self.factor = cfg.start, cfg.end, cfg.factor

    def epsilon(self, step: int, episodes: int) -> float:
        return max(self.end, self.start * self.factor**episodes)


# --- Boltzmann ---------------------------------------------------------------------------
@dataclass
class BoltzmannExplorationConfig(ExplorationConfig):
    """The temperature's schedule: linear from start to end over `steps` env steps, or
    `fraction` of the env-step budget (neither: DEFAULT_STEPS), then it stays at end."""

    start: float = 1.0  # temperature at env step 0, in units of Q (CartPole: near uniform)
    end: float = 0.05  # the temperature it ends at (> 0; smaller: closer to greedy)
    steps: Optional[int] = None  # env steps from start to end (null: fraction, else 8000)
    fraction: Optional[float] = None  # if set: steps = fraction x train.total_steps

    def check(self) -> None:
        positive("exploration.start", self.start)
        positive("exploration.end", self.end)
        if self.end > self.start:
            fail("exploration.end", self.end, f"must be <= exploration.start ({self.start})")
        positive("exploration.steps", self.steps, optional=True)
        if self.fraction is not None:
            within("exploration.fraction", self.fraction, 0, 1, open_low=True)

    def against(self, config) -> None:
        self.steps = schedule_length(self.steps, self.fraction, config)


@option("exploration", "boltzmann", BoltzmannExplorationConfig)
class Boltzmann(Exploration):
    """Actions sampled from softmax(Q / temperature), the temperature falling linearly
    from start to end; each env's action from one uniform draw of the agent's generator
    (inverse CDF), in env order."""

    SHORT = {"temperature": "temp"}

    def __init__(self, cfg: BoltzmannExplorationConfig, context: ExplorationContext) -> None:
        self.start, self.end, self.steps = cfg.start, cfg.end, cfg.steps

    def temperature(self, step: int, episodes: int) -> float:
        return self.start + (self.end - self.start) * min(1.0, step / self.steps)

    def select(self, values: ActionValues, step: int, episodes: int,
               rng: np.random.Generator) -> np.ndarray:
        q = np.asarray(values.q_values(), dtype=np.float64)
        weights = np.exp((q - q.max(-1, keepdims=True)) / self.temperature(step, episodes))
        cumulative = weights.cumsum(-1)
        draws = rng.random(values.envs) * cumulative[:, -1]
        actions = (cumulative <= draws[:, None]).sum(-1)
        return np.minimum(actions, values.n_actions - 1).astype(np.int64)

    def scalars(self, step: int, episodes: int) -> dict[str, float]:
        return {"temperature": self.temperature(step, episodes)}


# --- Ape-X ----------------------------------------------------------------------------------
@dataclass
class ApexExplorationConfig(ExplorationConfig):
    """Ape-X's fixed epsilons, one per env (Horgan et al. 2018)."""

    epsilon: float = 0.4  # eps: env i of N explores with eps^(1 + alpha i / (N - 1))
    alpha: float = 7.0  # how far the envs' epsilons spread below eps (N = 1: eps itself)

    def check(self) -> None:
        within("exploration.epsilon", self.epsilon, 0, 1)
        at_least("exploration.alpha", self.alpha, 0)


@option("exploration", "apex", ApexExplorationConfig)
class ApexExploration(Exploration):
    """Epsilon-greedy with each of the agent's N envs at its own fixed epsilon,
    eps_i = eps^(1 + alpha i / (N - 1)) for i = 0 .. N - 1 (Ape-X: eps = 0.4, alpha = 7),
    so env 0 explores most and env N - 1 least; N comes from the build context. Logs the
    envs' mean epsilon as `epsilon`."""

    SHORT = {"epsilon": "eps"}

    def __init__(self, cfg: ApexExplorationConfig, context: ExplorationContext) -> None:
        spread = np.arange(context.envs) / max(context.envs - 1, 1)
        self.epsilons = cfg.epsilon ** (1 + cfg.alpha * spread)

    def select(self, values: ActionValues, step: int, episodes: int,
               rng: np.random.Generator) -> np.ndarray:
        return epsilon_greedy(values.greedy, self.epsilons, rng, values.n_actions, values.envs)

    def scalars(self, step: int, episodes: int) -> dict[str, float]:
        return {"epsilon": float(self.epsilons.mean())}
