"""The configuration schema: one dataclass per config group option, plus range checks.

Hydra composes `conf/` on top of these dataclasses, so a misspelt key or a wrong type
fails while composing. `validate` then catches what a schema cannot: keys added with a
leading `+`, and values outside their allowed range. It returns the typed `Config` that
the rest of the package reads.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

if TYPE_CHECKING:
    import torch


class ConfigError(ValueError):
    """A user mistake in the configuration; its message is one line meant for the user."""


# --- network ---------------------------------------------------------------------------
ACTIVATIONS = ("relu", "tanh", "elu", "gelu", "silu", "leaky_relu")


@dataclass
class MLPConfig:
    hidden_sizes: List[int] = field(default_factory=lambda: [256])
    activation: str = "relu"


# --- replay buffer ---------------------------------------------------------------------
@dataclass
class UniformBufferConfig:
    capacity: int = 100_000
    batch_size: int = 64
    learning_starts: int = 1_000  # env steps collected before the first gradient step


# --- exploration schedules -------------------------------------------------------------
@dataclass
class ExplorationConfig:
    start: float = 1.0
    end: float = 0.04


@dataclass
class ExponentialExplorationConfig(ExplorationConfig):
    decay: float = 1_000.0  # env steps; eps = end + (start - end) * exp(-step / decay)


@dataclass
class MultiplicativeExplorationConfig(ExplorationConfig):
    factor: float = 0.995  # per finished episode; eps <- max(end, eps * factor)


@dataclass
class LinearExplorationConfig(ExplorationConfig):
    steps: int = 8_000  # env steps to go from start to end


# --- target network updates ------------------------------------------------------------
@dataclass
class TargetConfig:
    pass


@dataclass
class HardTargetConfig(TargetConfig):
    period: int = 32  # gradient steps between copies


@dataclass
class SoftTargetConfig(TargetConfig):
    tau: float = 0.005  # Polyak factor applied after every gradient step


# --- optimizer -------------------------------------------------------------------------
@dataclass
class OptimizerConfig:
    lr: float = 2.3e-3
    eps: float = 1e-8
    weight_decay: float = 0.0
    amsgrad: bool = False
    clip_grad_value: Optional[float] = None
    clip_grad_norm: Optional[float] = None


@dataclass
class AdamConfig(OptimizerConfig):
    pass


@dataclass
class AdamWConfig(OptimizerConfig):
    weight_decay: float = 0.01  # torch's AdamW default


# --- environment -----------------------------------------------------------------------
@dataclass
class EnvConfig:
    id: str = "CartPole-v1"
    max_episode_steps: Optional[int] = None  # null keeps the env's registered time limit


# --- logger ----------------------------------------------------------------------------
LOGGER_MODES = ("local", "offline", "online", "disabled")


@dataclass
class SwanLabConfig:
    mode: str = "local"
    log_dir: str = "outputs/swanlog"
    project: str = "dqn"
    experiment_name: Optional[str] = None  # null: made from the run's overrides
    every_steps: int = 1_000  # env steps between logged training aggregates


@dataclass
class NoLoggerConfig:
    mode: str = "disabled"


# --- training loop and evaluation ------------------------------------------------------
LOSSES = ("huber", "mse")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainConfig:
    total_steps: Optional[int] = 50_000  # env-step budget
    total_episodes: Optional[int] = None  # episode budget; whichever comes first ends
    gamma: float = 0.99
    loss: str = "huber"
    double_q: bool = True  # Double DQN: the online network picks the bootstrap action
    train_frequency: int = 64  # env steps between updates
    gradient_steps: int = 32  # gradient steps per update
    target_return: Optional[float] = None  # stop once evaluation and confirmation reach it
    checkpoint_every: Optional[int] = 10_000  # env steps between full-state last.pt saves


@dataclass
class EvalConfig:
    every_steps: Optional[int] = 1_000
    every_episodes: Optional[int] = None
    episodes: int = 20
    final_episodes: int = 100


@dataclass
class VideoConfig:
    episodes: int = 0  # greedy episodes of the best checkpoint recorded at the end (0: off)
    max_steps: Optional[int] = None  # cut each recorded episode after this many steps


@dataclass
class Config:
    network: Any = MISSING
    buffer: Any = MISSING
    exploration: Any = MISSING
    target: Any = MISSING
    optimizer: Any = MISSING
    env: Any = MISSING
    logger: Any = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    seed: int = 0
    num_seeds: int = 1  # agents trained together in one process: seeds seed .. seed+num_seeds-1
    device: str = "auto"
    torch_threads: int = 1
    resume: Optional[str] = None  # a run directory to continue in place


# Each YAML option in conf/<group>/ extends one of these through its defaults list
# (`/schema/<group>/<option>@_here_`), which keeps them out of the group's choices.
SCHEMAS = {
    "network": {"mlp": MLPConfig},
    "buffer": {"uniform": UniformBufferConfig},
    "exploration": {
        "exponential": ExponentialExplorationConfig,
        "multiplicative": MultiplicativeExplorationConfig,
        "linear": LinearExplorationConfig,
    },
    "target": {"hard": HardTargetConfig, "soft": SoftTargetConfig},
    "optimizer": {"adam": AdamConfig, "adamw": AdamWConfig},
    "env": {"gym": EnvConfig},
    "logger": {"swanlab": SwanLabConfig, "none": NoLoggerConfig},
}


GROUPS = (*SCHEMAS, "experiment", "sweep")
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def groups_help() -> str:
    """One line per config group with its options, read from conf/ (for --help)."""
    lines = []
    for group in GROUPS:
        options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        lines.append(f"{group}: {', '.join(options)}")
    return "\n".join(lines)


def sqlite_url(path: str) -> str:
    """`sqlite:///path`, creating the folder the database file goes in (for Optuna)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def short_dirname(name: str, limit: int = 120) -> str:
    """`name` if it fits in `limit` characters, else its start and a hash of the whole, so
    a sweep job's folder named after many overrides stays a valid (<= 255 byte) name."""
    name = name.replace("/", "_")
    if len(name) <= limit:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{name[:limit - 9]}-{digest}"


def run_dir_for(resume: str | None, fresh: str) -> str:
    """Hydra's run directory: the run to continue (resume=DIR), else a fresh one. A
    resume= that names no directory gets a fresh one too, and the task then says so."""
    return resume if resume and Path(resume).is_dir() else fresh


def register_schemas() -> None:
    """Store the schemas in Hydra's ConfigStore and our resolvers (idempotent)."""
    OmegaConf.register_new_resolver("dqn_groups", groups_help, replace=True)
    OmegaConf.register_new_resolver("dqn_sqlite", sqlite_url, replace=True)
    OmegaConf.register_new_resolver("dqn_dirname", short_dirname, replace=True)
    OmegaConf.register_new_resolver("dqn_run_dir", run_dir_for, replace=True)
    OmegaConf.register_new_resolver(
        "dqn_hydra_subdir", lambda resume: ".hydra-resume" if resume else ".hydra",
        replace=True)
    store = ConfigStore.instance()
    store.store(name="base_config", node=Config)
    for group, options in SCHEMAS.items():
        for name, node in options.items():
            store.store(group=f"schema/{group}", name=name, node=node, package=group)


# --- validation ------------------------------------------------------------------------
def validate(cfg: DictConfig) -> Config:
    """Check a composed config and return it as typed dataclasses.

    Raises ConfigError with one line naming the key, the value and what is allowed.
    """
    from dqn.envs import make_env  # gymnasium is only needed once composing succeeded

    _reject_unknown_keys(cfg, prefix="")
    config: Config = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    _check_ranges(config)
    resolve_device(config.device)
    make_env(config.env).close()
    return config


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when torch sees a GPU; asking for `cuda` without one fails."""
    import torch  # here, not at the top: --help and config mistakes never need torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise ConfigError(f"device='cuda' but no GPU is usable (torch {torch.__version__}, "
                          f"{build}); use device=cpu or device=auto")
    return torch.device(name)


def config_from_dict(stored: dict[str, Any]) -> Config:
    """The typed config a run was started with, from the resolved config and the schema
    names that its checkpoints carry (see `to_stored`)."""
    schemas = {cls.__name__: cls for options in SCHEMAS.values() for cls in options.values()}
    cfg = OmegaConf.structured(Config)
    for group, name in stored["schemas"].items():
        cfg[group] = OmegaConf.structured(schemas[name])
    values = {k: v for k, v in stored.items() if k not in ("schemas", "choices")}
    return validate(OmegaConf.merge(cfg, values))


def to_stored(cfg: DictConfig, config: Config, choices: dict[str, Any]) -> dict[str, Any]:
    """The resolved config as plain containers, with each group's chosen option and schema
    name, which is what checkpoints carry so a run can be rebuilt without its overrides."""
    stored = OmegaConf.to_container(cfg, resolve=True)
    stored["choices"] = {group: choices.get(group) for group in GROUPS}
    stored["schemas"] = {group: type(getattr(config, group)).__name__ for group in SCHEMAS}
    return stored


def _reject_unknown_keys(node: Any, prefix: str) -> None:
    if isinstance(node, ListConfig):
        return
    if not isinstance(node, DictConfig):
        return
    schema = OmegaConf.get_type(node)
    if is_dataclass(schema):
        allowed = [f.name for f in fields(schema)]
        for key in node.keys():
            if key not in allowed:
                raise ConfigError(
                    f"unknown key '{prefix}{key}'; allowed keys in "
                    f"'{prefix.rstrip('.') or 'the top level'}': {', '.join(allowed)}"
                )
    for key in node.keys():
        if OmegaConf.is_missing(node, key):
            raise ConfigError(f"'{prefix}{key}' has no value; choose an option for it")
        _reject_unknown_keys(node._get_node(key), f"{prefix}{key}.")


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{key}={value!r} is out of range: {allowed}")


def _positive(key: str, value: Optional[float], optional: bool = False) -> None:
    if value is None and optional:
        return
    if value is None or not value > 0 or (isinstance(value, float) and math.isinf(value)):
        _fail(key, value, "must be a positive number" + (" or null" if optional else ""))


def _choice(key: str, value: str, allowed: tuple) -> None:
    if value not in allowed:
        _fail(key, value, f"must be one of {', '.join(allowed)}")


def _check_ranges(c: Config) -> None:
    _choice("device", c.device, DEVICES)
    _positive("torch_threads", c.torch_threads)
    if c.seed < 0:
        _fail("seed", c.seed, "must be >= 0")
    _positive("num_seeds", c.num_seeds)

    if not c.network.hidden_sizes:
        _fail("network.hidden_sizes", c.network.hidden_sizes, "must list at least one size")
    for size in c.network.hidden_sizes:
        _positive("network.hidden_sizes", size)
    _choice("network.activation", c.network.activation, ACTIVATIONS)

    _positive("buffer.capacity", c.buffer.capacity)
    _positive("buffer.batch_size", c.buffer.batch_size)
    if c.buffer.capacity < c.buffer.batch_size:
        _fail("buffer.capacity", c.buffer.capacity,
              f"must be >= buffer.batch_size ({c.buffer.batch_size})")
    if c.buffer.learning_starts < 0:
        _fail("buffer.learning_starts", c.buffer.learning_starts, "must be >= 0")

    _check_exploration(c.exploration)

    if isinstance(c.target, HardTargetConfig):
        _positive("target.period", c.target.period)
    if isinstance(c.target, SoftTargetConfig) and not 0 < c.target.tau <= 1:
        _fail("target.tau", c.target.tau, "must be in (0, 1]")

    o = c.optimizer
    _positive("optimizer.lr", o.lr)
    _positive("optimizer.eps", o.eps)
    if o.weight_decay < 0:
        _fail("optimizer.weight_decay", o.weight_decay, "must be >= 0")
    _positive("optimizer.clip_grad_value", o.clip_grad_value, optional=True)
    _positive("optimizer.clip_grad_norm", o.clip_grad_norm, optional=True)

    if c.env.max_episode_steps is not None:
        _positive("env.max_episode_steps", c.env.max_episode_steps)

    if isinstance(c.logger, SwanLabConfig):
        _choice("logger.mode", c.logger.mode, LOGGER_MODES)
        _positive("logger.every_steps", c.logger.every_steps)
        if not c.logger.log_dir:
            _fail("logger.log_dir", c.logger.log_dir, "must be a directory path")

    t = c.train
    _positive("train.total_steps", t.total_steps, optional=True)
    _positive("train.total_episodes", t.total_episodes, optional=True)
    if t.total_steps is None and t.total_episodes is None:
        _fail("train.total_steps", None, "set train.total_steps or train.total_episodes")
    if not 0 <= t.gamma <= 1:
        _fail("train.gamma", t.gamma, "must be in [0, 1]")
    _choice("train.loss", t.loss, LOSSES)
    _positive("train.train_frequency", t.train_frequency)
    _positive("train.gradient_steps", t.gradient_steps)
    _positive("train.checkpoint_every", t.checkpoint_every, optional=True)

    e = c.eval
    _positive("eval.every_steps", e.every_steps, optional=True)
    _positive("eval.every_episodes", e.every_episodes, optional=True)
    _positive("eval.episodes", e.episodes)
    _positive("eval.final_episodes", e.final_episodes)

    if c.video.episodes < 0:
        _fail("video.episodes", c.video.episodes, "must be >= 0 (0: no video)")
    _positive("video.max_steps", c.video.max_steps, optional=True)


def _check_exploration(x: ExplorationConfig) -> None:
    for key in ("start", "end"):
        value = getattr(x, key)
        if not 0 <= value <= 1:
            _fail(f"exploration.{key}", value, "must be in [0, 1]")
    if x.end > x.start:
        _fail("exploration.end", x.end, f"must be <= exploration.start ({x.start})")
    if isinstance(x, ExponentialExplorationConfig):
        _positive("exploration.decay", x.decay)
    if isinstance(x, MultiplicativeExplorationConfig) and not 0 < x.factor <= 1:
        _fail("exploration.factor", x.factor, "must be in (0, 1]")
    if isinstance(x, LinearExplorationConfig):
        _positive("exploration.steps", x.steps)
