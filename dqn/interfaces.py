"""Every config group's interface, in one place.

A group is two contracts. Its settings: the dataclass every option's schema extends,
which types the group in `dqn.config.Config` (Hydra then refuses a schema of another
group) and gives every option `check()` and `against(config)`. Its behaviour: the abstract
class every option's class implements, whose docstrings say what each method receives and
returns; the loop and the agent call these methods and nothing else, never asking which
option they hold. `INTERFACES` lists both for each group; the registry refuses, in one
line naming the missing method, an option that does not implement its group's interface
(`dqn.options.check_implements`), and docs/architecture.md's table is generated from it.

Shapes: K agents (num_seeds) lead every tensor, then B samples or N envs. Nothing here
imports torch or gymnasium (their types are only annotations), so the configuration layer
and `--help` stay light.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    ClassVar,
    Iterator,
    NamedTuple,
    Optional,
    Protocol,
    Union,
)

from dqn.checks import at_least, choice, fail, positive

if TYPE_CHECKING:
    from pathlib import Path

    import gymnasium as gym
    import numpy as np
    import torch
    from gymnasium.vector import VectorEnv

NORMS = ("none", "layer")
LR_DECAYS = ("none", "linear")
VECTORIZATIONS = ("sync", "async")


class Settings:
    """What every schema can do (each has no-op defaults): `check()` raises ConfigError
    for a value outside its range; `against(config)` checks, or derives, what depends on
    other sections of the whole Config (`exploration.fraction` of the budget)."""

    def check(self) -> None:
        pass

    def against(self, config: Any) -> None:
        pass


def unedited(module: Any, cls: type, *methods: str) -> bool:
    """Whether `module` runs `cls`'s own `methods`: a subclass that overrides one of them
    gets False, so a fast form written for `cls` is never used in its place."""
    return all(getattr(type(module), name) is getattr(cls, name) for name in methods)


# --- network: observations -> features ---------------------------------------------------
@dataclass
class NetworkConfig(Settings):
    """Settings every encoder option has (the head on top is the `head` group's)."""

    norm: str = "none"  # none | layer: LayerNorm after every hidden layer (PQN's networks)

    def check(self) -> None:
        choice("network.norm", self.norm, NORMS)


class Encoder(ABC):
    """A network option: an nn.Module built as `Class(cfg, obs_shape, obs_dtype)`.

    forward(obs (..., *obs_shape)) -> features (..., out_features), float32, for any
        leading dimensions; observations come in their own dtype (uint8 pixels too).
    out_features: int, the width of the features, set by __init__.
    Fast forms it may offer (see `dqn.fastpath`): `stackable()`, True when its layers,
    each stacked K times, compute K encoders at once; `as_layers()`, layers that compose
    to forward, or None. Each must hold for this class's own forward only (see
    `unedited`), so that a subclass editing forward loses them.
    """

    out_features: int

    @abstractmethod
    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Features (..., out_features) of observations (..., *obs_shape)."""

    def stackable(self) -> bool:
        return False

    def as_layers(self) -> list | None:
        return None


# --- head: features -> outputs per action, their Q-values and their loss ---------------------
@dataclass
class HeadConfig(Settings):
    """Settings every head has. `title`: what the run's first line calls the head's
    algorithm ("" for a plain Q head)."""

    title: ClassVar[str] = ""
    dueling: bool = False  # V(s) + A(s, a) - mean_a' A(s, a') (Wang et al. 2016), per output
    noisy: bool = False  # NoisyNet linear layers (factorised Gaussian noise; exploration=none)
    noisy_sigma0: float = 0.5  # initial noise scale: sigma = sigma0 / sqrt(fan-in)
    v_min: float = -10.0  # the return range of a head with a fixed support (c51, hl_gauss)
    v_max: float = 10.0  # the support's upper end (heads without a support ignore both)

    def check(self) -> None:
        positive("head.noisy_sigma0", self.noisy_sigma0)
        if not self.v_max > self.v_min:
            fail("head.v_max", self.v_max, f"must be > head.v_min ({self.v_min})")


class LossTerms(NamedTuple):
    per_sample: torch.Tensor  # (K, B) the loss of each sample
    td_errors: torch.Tensor  # (K, B) what prioritized replay ranks samples by (detached)
    q_taken: torch.Tensor  # (K, B) Q(s, a) of the actions taken (detached)


# The forward passes of one gradient step a head may ask for, beyond the online network's
# output at s (always made), and the role each pass's draws are sampled for (see
# `Head.sample`): a pass that picks actions draws as acting does.
TD_NEEDS: dict[str, str] = {
    "next_output": "target",  # the target network's output at a*, (K, B, *event)
    "next_actions": "act",  # a* (K, B): the target's greedy actions, or with Double DQN
    # (train.double_q and a separate target) the online network's at s'
    "target_next": "target",  # the target network's output at s', (K, B, A, *event)
    "online_next": "act",  # the online network's output at s', (K, B, A, *event)
    "target_at_s": "target",  # the target network's output at s, (K, B, A, *event)
}


class TDContext:
    """What one gradient step's loss may use, for K agents' batches of B transitions;
    every tensor leads with (K, B). The agent computes it once per step
    (`dqn.agent.Agents.context`): the online output at s and the batch always, and of
    TD_NEEDS exactly what the head declares in `Head.needs`; reading anything else is an
    AttributeError that names the missing need. Every field but `online` is detached.

    online: the online network's output at s, (K, B, A, *event), differentiable.
    actions: (K, B) int64, the actions taken.
    rewards, discounts: (K, B) from replay (discount gamma^k for a k-step transition, 0
        where the episode terminated); None from a rollout memory.
    returns: (K, B) the targets a rollout memory computed (Q(lambda)); None from replay,
        and there the next-state fields of TD_NEEDS are not available.
    weights: (K, B) importance weights of prioritized replay, or None. The agent applies
        them to the per-sample loss; a head need not.
    draws: what the head sampled (`Head.sample`) for each pass made, by field name
        ("online", and each of TD_NEEDS computed; the pass picking a* is "online_next"
        with Double DQN, else "next_actions", a target pass of its own with the acting
        role's draws); empty for a head that draws nothing.
    next_output, next_actions, target_next, online_next, target_at_s: see TD_NEEDS.
    """

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    def __getattr__(self, name: str) -> Any:
        if name in TD_NEEDS:
            raise AttributeError(
                f"TDContext.{name} was not computed: a head that reads it lists "
                f"{name!r} in its `needs` (and it needs a replay memory's next observations)")
        raise AttributeError(f"TDContext has no field {name!r} (dqn/interfaces.py lists them)")

    def scalar_target(self, q_values: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """One target per sample (K, B): a rollout's returns as they are, or
        r + discount * Q(s', a*) with Q read off `next_output` by `q_values`."""
        if self.returns is not None:
            return self.returns
        return self.rewards.addcmul(self.discounts, q_values(self.next_output))


class Head(ABC):
    """A head option: an nn.Module built as `Class(cfg, in_features, n_actions)`
    (`dqn.nets.heads.LinearHead` has the layers every head here shares: dueling, noisy).

    forward(features (..., F), draws) -> output (..., A, *event): one output per action,
        where `event` is () for one value per action and (M,) for a distribution of M
        logits, quantiles or bins. `draws` is what `sample` drew for this pass (one
        agent's (..., *draw_shape)); it is passed only to a head whose `sample` draws.
    q_values(output (..., *event)) -> (...): the expected return of each output, so
        (..., A, *event) -> (..., A), or of one action's output (..., *event) -> (...).
    taken(output (..., A, *event), actions (...)) -> (..., *event): the actions' outputs.
    loss(context: TDContext, regression) -> LossTerms: per-sample loss (differentiable),
        TD errors for prioritized replay and Q(s, a), all (K, B). `regression` is
        train.loss (huber | mse), for a head that regresses Q-values; a head with a loss
        of its own does not read it. A head that cannot learn from a rollout memory's
        returns refuses buffer=rollout in its schema's `against`.
    needs: which of TD_NEEDS `loss` reads; only those are computed (default: the target's
        output at a*, the DQN bootstrap).

    Randomness: a head whose forward samples (fractions, noise) does not draw inside
    forward. It says what one pass draws in `sample(role, batch, generator)`: role "act"
    (acting, and choosing a*), "online" (the online pass at s) or "target" (the target
    network's passes), `batch` the number of observations; it draws only from
    `generator`, the agent's own seeded stream that the run checkpoints (evaluation has
    its own). The agent stacks the K agents' draws and passes them to forward, so
    forward is a deterministic function of features and draws: batched K agents
    (torch.func.vmap) get their own draws, and a resumed run draws what it would have.
    Fast forms, as an Encoder's: `stackable()` and `as_layers()` (layers equal to
    forward and q_values together); a head that draws offers neither.
    """

    needs: ClassVar[frozenset[str]] = frozenset({"next_output"})

    @abstractmethod
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Outputs (..., A, *event) of features (..., F) (and draws, for a head that
        samples)."""

    @abstractmethod
    def q_values(self, output: torch.Tensor) -> torch.Tensor:
        """Expected returns of outputs: (..., *event) -> (...)."""

    @abstractmethod
    def taken(self, output: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The outputs (..., *event) of the actions (...) taken."""

    @abstractmethod
    def loss(self, context: TDContext, regression: str) -> LossTerms:
        """Per-sample loss, TD errors and Q(s, a) (K, B) of the actions taken."""

    def sample(self, role: str, batch: int, generator: torch.Generator
               ) -> torch.Tensor | None:
        """What one forward pass of `batch` observations draws, for one agent, from
        `generator` alone; None (the default): this head's forward draws nothing."""
        return None

    def stackable(self) -> bool:
        return False

    def as_layers(self) -> list | None:
        return None

    @classmethod
    def check_class(cls) -> str | None:
        """What is wrong with this head class as an option (registration refuses it),
        or None."""
        unknown = sorted(set(cls.needs) - set(TD_NEEDS))
        if unknown:
            return (f"its needs name {', '.join(map(repr, unknown))}, not among "
                    f"{', '.join(TD_NEEDS)}")
        return None


# --- buffer: what is kept of experience, and the batches drawn from it ----------------------
@dataclass
class MemoryConfig(Settings):
    """Settings every buffer option extends (replay rings: `dqn.replay.ReplayConfig`;
    PQN's rollout: `dqn.replay.rollout.RolloutConfig`)."""


class Batch(NamedTuple):
    """Transitions of K agents, each field with leading dimensions (K, B). A batch either
    bootstraps (rewards, next_obs, discounts) or carries its targets (returns)."""

    obs: torch.Tensor  # (K, B, *obs_shape) in the observation's dtype
    actions: torch.Tensor  # (K, B) int64
    rewards: Optional[torch.Tensor]  # (K, B) float32
    next_obs: Optional[torch.Tensor]  # (K, B, *obs_shape)
    # (K, B) float32: gamma^k for a k-step transition, 0 where the episode terminated
    discounts: Optional[torch.Tensor]
    weights: Optional[torch.Tensor] = None  # (K, B) importance weights, where the buffer has them
    indices: Optional[np.ndarray] = None  # (K, B) rows drawn, where the buffer needs them back
    returns: Optional[torch.Tensor] = None  # (K, B) float32 targets computed by the memory


class Memory(ABC):
    """A buffer option, built as `Class(cfg, observation_space, rngs, gamma, device,
    frame_stack, envs_per_agent)` for K = len(rngs) agents (each draws with its own
    generator) of N = envs_per_agent envs each. The loop calls every method every time,
    in this order; a method an option has no use for does nothing.

    batch_size: int, transitions per gradient step and agent.
    """

    batch_size: int

    @classmethod
    @abstractmethod
    def check_fits(cls, config: Any, observation_space: gym.spaces.Box,
                   frame_stack: int | None) -> None:
        """ConfigError, in one line, when this memory cannot serve the run `config` (a
        Config) on this machine: before anything is built."""

    @abstractmethod
    def add(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
            next_obs: np.ndarray, terminated: np.ndarray, truncated: np.ndarray,
            ended: np.ndarray | None = None) -> None:
        """Store one vector step: a row per (agent, env), K * N, agent by agent.
        `rewards` and `terminated` are what the agent learns from; `ended` marks envs
        whose episode ended (terminated or truncated) and whose next_obs is the last
        one, not the reset observation the env continues from."""

    @abstractmethod
    def updates_due(self, before: int, step: int, train: Any) -> int:
        """Gradient steps due after the vector step from env step `before` to `step`
        (`train`: the TrainConfig); 0 for none."""

    @abstractmethod
    def anneal(self, progress: float) -> None:
        """The fraction (0 to 1) of the training budget spent, before a round of updates."""

    @abstractmethod
    def compute_returns(self, bootstrap_values: Callable[[torch.Tensor], torch.Tensor]
                        ) -> None:
        """Before a round of updates: a memory whose batches carry their targets (Batch.
        returns) computes them with `bootstrap_values`, next observations (K, M, ...) ->
        Q_target(s', a*) (K, M)."""

    @abstractmethod
    def sample_batches(self, batch_size: int, count: int) -> Iterator[Batch]:
        """The `count` batches (K, batch_size) of one round of updates."""

    @abstractmethod
    def update_priorities(self, batch: Batch, td_errors: torch.Tensor) -> None:
        """What the gradient step on `batch` found: per-sample TD errors (K, B)."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume bitwise (arrays may be views, not copies)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned, into a memory built with the same settings."""


# --- exploration: how an agent acts while training -------------------------------------------
@dataclass
class ExplorationConfig(Settings):
    """Settings every exploration option extends."""


class ActionValues(Protocol):
    """What a policy may ask about one agent's N envs. Each is computed on first use
    (a forward pass; one serves all K agents), so a policy that asks for nothing (every
    env explores) costs none."""

    envs: int  # N
    n_actions: int  # A

    def q_values(self) -> np.ndarray:
        """Q-values (N, A)."""

    def greedy(self) -> np.ndarray:
        """Greedy actions (N,) (int64), argmax of the Q-values."""


@dataclass(frozen=True)
class ExplorationContext:
    """What the loop tells an exploration when it is built: the agent it serves."""

    envs: int  # N: the envs the agent acts in (env.num_envs); select() gets N actions
    n_actions: int  # A: the action space's size
    total_steps: int | None  # the env-step budget (train.total_steps), or None
    seed: int  # the agent's seed (its draws come from the generator select() is given)


class Exploration(ABC):
    """An exploration option, built as `Class(cfg, context)` with an ExplorationContext:
    one instance per agent (seed), since its parameter may follow that agent's own
    finished episodes, and each agent logs its own.

    Its methods depend only on their arguments (the schedule is a function of `step`, env
    steps summed over the agent's envs, and `episodes`, its finished episodes), so there
    is nothing to checkpoint beyond the generator the run already saves.
    """

    # short names of its scalars for the console line (`eps 0.976`); others show in full
    SHORT: ClassVar[dict[str, str]] = {}

    @abstractmethod
    def select(self, values: ActionValues, step: int, episodes: int,
               rng: np.random.Generator) -> np.ndarray:
        """Actions (N,) (int64) for one agent's N envs. Ask `values` only for what is
        needed and draw only from `rng` (the agent's action generator), in an order that
        does not depend on anything but the arguments."""

    @abstractmethod
    def scalars(self, step: int, episodes: int) -> dict[str, float]:
        """Its parameters at that point, by name, the same names at every call: logged as
        `train/NAME`, and a metrics.csv column NAME."""

    def describe(self, scalars: dict[str, float]) -> str:
        """`scalars` as the console shows them: `eps 0.976`."""
        return " | ".join(f"{self.SHORT.get(name, name)} {value:.3f}"
                          for name, value in scalars.items())


# --- target: the network TD targets bootstrap from -----------------------------------------
@dataclass
class TargetConfig(Settings):
    """Settings every target option extends."""


class TargetUpdate(ABC):
    """A target option, built as `Class(cfg)`."""

    @abstractmethod
    def network(self, online: torch.nn.Module) -> torch.nn.Module:
        """The target network for `online` (K agents' Ensemble): a copy, or `online`
        itself when targets bootstrap from the online network."""

    @abstractmethod
    def __call__(self, online: torch.nn.Module, target: torch.nn.Module,
                 gradient_steps: int) -> None:
        """Bring `target` up to date after gradient step number `gradient_steps`."""


# --- optimizer: torch's own interface -------------------------------------------------------
@dataclass
class OptimizerConfig(Settings):
    """Settings every optimizer option has. An optimizer option is a function
    `(cfg, params) -> torch.optim.Optimizer`; the agent uses only torch's public
    Optimizer interface (param_groups, step, state_dict) and applies `clip_grad_*` and
    `lr_decay` itself."""

    lr: float = 2.3e-3  # learning rate
    eps: float = 1e-8  # added to the adaptive step's denominator, for numerical stability
    weight_decay: float = 0.0  # L2 penalty: weight_decay x weights added to the gradients
    clip_grad_value: Optional[float] = None  # clip each gradient element to [-v, v]
    clip_grad_norm: Optional[float] = None  # clip each agent's gradient norm
    lr_decay: str = "none"  # none | linear: lr falls linearly to 0 over the training budget

    def check(self) -> None:
        positive("optimizer.lr", self.lr)
        choice("optimizer.lr_decay", self.lr_decay, LR_DECAYS)
        positive("optimizer.eps", self.eps)
        at_least("optimizer.weight_decay", self.weight_decay, 0)
        positive("optimizer.clip_grad_value", self.clip_grad_value, optional=True)
        positive("optimizer.clip_grad_norm", self.clip_grad_norm, optional=True)


# --- env: the environments an agent trains and is evaluated on -------------------------------
@dataclass
class EnvConfig(Settings):
    """How many envs each agent trains on, and how they are stepped: settings of every
    env option."""

    num_envs: int = 1  # training envs per agent, one batched action per vector step
    vectorization: str = "sync"  # sync: in this process; async: one process per env

    def check(self) -> None:
        positive("env.num_envs", self.num_envs)
        choice("env.vectorization", self.vectorization, VECTORIZATIONS)

    def against(self, config: Any) -> None:
        """One vector step of all envs must fit in the env-step budget."""
        total = config.train.total_steps
        if total is not None and self.num_envs > total:
            fail("env.num_envs", self.num_envs, f"must be <= train.total_steps ({total}): one "
                 f"vector step of all envs is already {self.num_envs} env steps")


class EnvMaker(ABC):
    """An env option, built as `Class(cfg)`: it makes single envs (training, evaluation,
    video) and, where the env has one, a vectorised implementation (evaluation plays many
    episodes at once). Every env it makes has a Box observation and Discrete actions.

    frame_stack: observations are stacks of this many frames (replay stores each frame
    once), or None.
    """

    frame_stack: int | None = None

    @abstractmethod
    def make(self, render_mode: str | None = None) -> gym.Env:
        """One env; ConfigError in one line when the settings name one it cannot make."""

    @abstractmethod
    def make_vector(self, num_envs: int) -> VectorEnv | None:
        """`num_envs` envs stepped as one by the env's own vectorised implementation, or
        None where it has none."""

    @abstractmethod
    def for_learning(self, rewards: np.ndarray, terminated: np.ndarray,
                     infos: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """The rewards and terminations (N,) the agent learns from, given a vector step's
        (the env's own are what is logged and evaluated): Atari clips rewards and may end
        on a life lost."""


# --- logger: where metrics go besides the run's CSV files ----------------------------------
@dataclass
class LoggerConfig(Settings):
    """Settings every logger option has."""

    mode: str = "disabled"  # the logger option's modes; disabled: nothing is sent
    every_steps: int = 1_000  # env steps between logged training aggregates

    def check(self) -> None:
        positive("logger.every_steps", self.every_steps)


class Tracker(ABC):
    """A logger option: a class or function `(cfg, name, config, resume_id) -> Tracker`
    for a run named `name` with the flattened `config`; `resume_id` continues an earlier
    run's record where it can.

    run_id: the tracker's id of the run (stored to resume it), or None.
    """

    run_id: str | None = None

    @abstractmethod
    def log(self, metrics: dict[str, float], step: int) -> None:
        """Record scalar metrics at env step `step`."""

    @abstractmethod
    def log_video(self, key: str, gif: Path, caption: str, step: int) -> None:
        """Record a GIF file at env step `step`."""

    @abstractmethod
    def finish(self, crashed: bool = False, error: str | None = None) -> None:
        """Close the run, marking it crashed if training raised."""


@dataclass(frozen=True)
class Interface:
    """A config group's two contracts: `settings`, the base of its options' schemas, and
    `behaviour`, what its options build (an abstract class here, or torch's Optimizer)."""

    group: str
    settings: type
    behaviour: Union[type, str]  # a class, or "module:Name" imported only when checked
    built_as: str  # how the part is built from its settings

    def behaviour_class(self) -> type:
        if isinstance(self.behaviour, type):
            return self.behaviour
        import importlib

        module, name = self.behaviour.split(":")
        return getattr(importlib.import_module(module), name)


INTERFACES: dict[str, Interface] = {
    interface.group: interface for interface in (
        Interface("network", NetworkConfig, Encoder, "Class(cfg, obs_shape, obs_dtype)"),
        Interface("head", HeadConfig, Head, "Class(cfg, in_features, n_actions); loss() gets "
                  "a TDContext with what its needs name"),
        Interface("buffer", MemoryConfig, Memory, "Class(cfg, observation_space, rngs, gamma, "
                  "device, frame_stack, envs_per_agent)"),
        Interface("exploration", ExplorationConfig, Exploration, "Class(cfg, context: "
                  "ExplorationContext(envs, n_actions, total_steps, seed))"),
        Interface("target", TargetConfig, TargetUpdate, "Class(cfg)"),
        Interface("optimizer", OptimizerConfig, "torch.optim:Optimizer", "function(cfg, params)"),
        Interface("env", EnvConfig, EnvMaker, "Class(cfg)"),
        Interface("logger", LoggerConfig, Tracker, "Class or function(cfg, name, config, "
                  "resume_id)"),
    )
}
