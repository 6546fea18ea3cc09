"""The typed configuration of a run: the top-level schema, validation, and the plain form
that checkpoints carry.

Each config group (network, head, buffer, exploration, target, optimizer, env, logger) is typed
by its group's settings base (`dqn.interfaces`), which the schema of every option of the
group extends (see `dqn.options`); the settings that belong to no group (train, eval,
video, seed...) are typed here. `validate` turns a composed
config into a `Config`, or raises ConfigError with one line naming the key, the value and
what is allowed. Nothing here imports Hydra: a Config can be made from plain Python.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import TYPE_CHECKING, Any, Optional

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from dqn.checks import ConfigError, at_most, choice, fail, positive, within
from dqn.interfaces import (
    EnvConfig,
    ExplorationConfig,
    HeadConfig,
    LoggerConfig,
    MemoryConfig,
    NetworkConfig,
    OptimizerConfig,
    Settings,
    TargetConfig,
)
from dqn.options import option_of, options

if TYPE_CHECKING:
    import torch

GROUPS = ("network", "head", "buffer", "exploration", "target", "optimizer", "env", "logger")
DEVICES = ("auto", "cpu", "cuda")
LOSSES = ("huber", "mse")
MAX_SEED = 2**32 - 1  # NumPy's and gymnasium's seeds are 32-bit
# Budgets beyond what any run finishes, refused instead of running for ever without a word.
MAX_ENV_STEPS = 10**12  # 12 days even at a million env steps a second
MAX_EVAL_EPISODES = 10**6  # per evaluation; 10^4 already measure a mean to 1% of its spread


@dataclass
class TrainConfig(Settings):
    total_steps: Optional[int] = 50_000  # env-step budget (at most 10^12)
    total_episodes: Optional[int] = None  # episode budget (<= 10^12); whichever comes first ends
    gamma: float = 0.99  # discount
    loss: str = "huber"
    double_q: bool = True  # Double DQN: the online network picks a* (target=none: no change)
    train_frequency: int = 64  # env steps between updates
    gradient_steps: int = 32  # gradient steps per update
    target_return: Optional[float] = None  # stop once evaluation and confirmation reach it
    checkpoint_every: Optional[int] = 10_000  # env steps between full-state last.pt saves

    def check(self) -> None:
        positive("train.total_steps", self.total_steps, optional=True)
        positive("train.total_episodes", self.total_episodes, optional=True)
        at_most("train.total_steps", self.total_steps, MAX_ENV_STEPS,
                "10^12 env steps: 12 days even at a million env steps a second")
        at_most("train.total_episodes", self.total_episodes, MAX_ENV_STEPS,
                "10^12 episodes, each at least one env step")
        if self.total_steps is None and self.total_episodes is None:
            fail("train.total_steps", None, "set train.total_steps or train.total_episodes")
        within("train.gamma", self.gamma, 0, 1)
        choice("train.loss", self.loss, LOSSES)
        positive("train.train_frequency", self.train_frequency)
        positive("train.gradient_steps", self.gradient_steps)
        positive("train.checkpoint_every", self.checkpoint_every, optional=True)


@dataclass
class EvalConfig(Settings):
    every_steps: Optional[int] = 1_000
    every_episodes: Optional[int] = None
    episodes: int = 20  # episodes per periodic evaluation (at most 10^6)
    final_episodes: int = 100  # episodes for the final evaluation of the best checkpoint (<= 10^6)
    epsilon: float = 0.0  # random actions in evaluation (0.05 for Atari, Mnih et al. 2015)

    def check(self) -> None:
        within("eval.epsilon", self.epsilon, 0, 1)
        positive("eval.every_steps", self.every_steps, optional=True)
        positive("eval.every_episodes", self.every_episodes, optional=True)
        positive("eval.episodes", self.episodes)
        positive("eval.final_episodes", self.final_episodes)
        for key, value in (("eval.episodes", self.episodes),
                           ("eval.final_episodes", self.final_episodes)):
            at_most(key, value, MAX_EVAL_EPISODES, "10^6 episodes per evaluation; 10^4 "
                    "already measure the mean return to 1% of its spread")


@dataclass
class VideoConfig(Settings):
    episodes: int = 0  # greedy episodes of the best checkpoint recorded at the end (0: off)
    max_steps: Optional[int] = None  # cut each recorded episode after this many steps

    def check(self) -> None:
        if self.episodes < 0:
            fail("video.episodes", self.episodes, "must be >= 0 (0: no video)")
        positive("video.max_steps", self.max_steps, optional=True)


@dataclass
class Config:
    network: NetworkConfig = MISSING
    head: HeadConfig = MISSING
    buffer: MemoryConfig = MISSING
    exploration: ExplorationConfig = MISSING
    target: TargetConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    env: EnvConfig = MISSING
    logger: LoggerConfig = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)  # budgets, targets, update rounds
    eval: EvalConfig = field(default_factory=EvalConfig)  # greedy evaluations of the agent
    video: VideoConfig = field(default_factory=VideoConfig)  # videos of the best checkpoint
    seed: int = 0  # seeds Python, NumPy, torch, the envs and action sampling
    num_seeds: int = 1  # agents trained together in one process: seeds seed .. seed+num_seeds-1
    device: str = "auto"
    torch_threads: int = 1
    resume: Optional[str] = None  # a run directory to continue in place

    def check(self) -> None:
        refuse_non_finite(self, prefix="")
        choice("device", self.device, DEVICES)
        positive("torch_threads", self.torch_threads)
        if not 0 <= self.seed <= MAX_SEED:
            fail("seed", self.seed, f"must be in [0, {MAX_SEED}] (a 32-bit seed)")
        positive("num_seeds", self.num_seeds)
        if self.seed + self.num_seeds - 1 > MAX_SEED:
            fail("num_seeds", self.num_seeds, f"the last seed, seed + num_seeds - 1 = "
                 f"{self.seed + self.num_seeds - 1}, must be <= {MAX_SEED} (a 32-bit seed)")
        parts: list[Settings] = [*[getattr(self, group) for group in GROUPS], self.train,
                                 self.eval, self.video]
        for part in parts:
            part.check()
        for part in parts:  # settings that depend on other sections, checked or derived
            part.against(self)


def validate(cfg: DictConfig) -> Config:
    """Check a composed config and return it as typed dataclasses.

    Raises ConfigError with one line naming the key, the value and what is allowed: for
    keys no schema knows (added with a leading `+`), values out of range or not finite, an
    env this runner cannot drive, networks or a replay memory that do not fit, a device
    that is not there.
    """
    from dqn import fastpath  # torch and gymnasium are only needed once composing succeeded
    from dqn.envs import env_maker

    fastpath.enabled()  # a DQN_FAST_PATHS value it does not know fails here, before the run
    _reject_unknown_keys(cfg, prefix="")
    config: Config = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    config.check()
    resolve_device(config.device)
    maker = env_maker(config.env)
    env = maker.make()
    space, n_actions = env.observation_space, int(env.action_space.n)
    env.close()
    check_network_fits(config, space, n_actions)
    option_of(config.buffer).cls.check_fits(config, space, maker.frame_stack)
    return config


def refuse_non_finite(part: Any, prefix: str) -> None:
    """ConfigError naming the first setting of `part` (a schema dataclass, walked into its
    sections) that holds nan or an infinity: no setting of a run means anything with one."""
    for item in fields(part):
        value = getattr(part, item.name)
        if is_dataclass(value):
            refuse_non_finite(value, f"{prefix}{item.name}.")
        elif isinstance(value, float) and not math.isfinite(value):
            fail(f"{prefix}{item.name}", value, "must be a finite number")


def check_network_fits(config: Config, observation_space: Any, n_actions: int) -> None:
    """ConfigError, in one line, when the agents' networks cannot fit in the memory of the
    device they train on: per agent, float32 weights, their gradients, two optimizer
    moments and (unless target=none) a target network. Counted without building them."""
    from dqn.nets.qnet import parameter_count
    from dqn.replay.buffer import available_memory, refuse_beyond_memory

    parameters = parameter_count(config.network, observation_space, n_actions, config.head)
    separate_target = option_of(config.target).name != "none"
    copies = 4 + separate_target
    device = resolve_device(config.device)
    available = gpu_memory(device) if device.type == "cuda" else available_memory()
    refuse_beyond_memory(
        parameters * 4 * copies * config.num_seeds,
        f"network={option_of(config.network).name} ({parameters:,} parameters)", device.type,
        f"4 bytes x {copies} copies: weights, gradients, 2 optimizer moments"
        f"{', target' if separate_target else ''}; x {config.num_seeds} agent(s)",
        "use a smaller network (network.hidden_sizes, network.features) or fewer num_seeds",
        available)


def gpu_memory(device: torch.device) -> int:
    """Bytes free on a CUDA device."""
    import torch

    return torch.cuda.mem_get_info(device)[0]


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when torch sees a GPU; asking for `cuda` without one fails."""
    import torch  # here, not at the top: config mistakes never need torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise ConfigError(f"device='cuda' but no GPU is usable (torch {torch.__version__}, "
                          f"{build}); use device=cpu or device=auto")
    return torch.device(name)


def chosen_options(config: Config) -> dict[str, str]:
    """The option chosen for each group, by group (read off the settings' types)."""
    return {group: option_of(getattr(config, group)).name for group in GROUPS}


def stored_config(config: Config, choices: dict[str, Any] | None = None) -> dict[str, Any]:
    """The config as plain containers, with the option chosen for each group: what
    checkpoints carry, so a run can be rebuilt without its overrides. `choices` (Hydra's
    runtime choices) adds the experiment and sweep presets that were used."""
    stored = asdict(config)
    stored["options"] = chosen_options(config)
    presets = {k: v for k, v in (choices or {}).items() if "/" not in k
               and not k.startswith("hydra")}
    stored["choices"] = {**presets, **stored["options"]}
    return stored


def config_from_dict(stored: dict[str, Any]) -> Config:
    """The typed config a run was started with, from what its checkpoints carry."""
    stored = with_head_group(stored)
    cfg = OmegaConf.structured(Config)
    for group in GROUPS:
        cfg[group] = OmegaConf.structured(stored_schema(stored, group))
    values = {k: v for k, v in stored.items() if k not in ("options", "choices", "schemas")}
    return validate(OmegaConf.merge(cfg, values))


def stored_schema(stored: dict[str, Any], group: str) -> type:
    """The schema of the option a stored config chose for `group` (KeyError for a config
    that names none: a checkpoint from before options were named, 0.1.0)."""
    chosen = stored.get("options", {}).get(group)
    if chosen is None:
        raise KeyError(f"the stored config names no {group} option (written before 0.1.0?)")
    return options(group)[chosen].schema


def section(stored: dict[str, Any], group: str) -> Any:
    """One group of a stored config as its schema dataclass, unvalidated (KeyError,
    TypeError or an OmegaConf error when the stored config has no usable section)."""
    stored = with_head_group(stored)
    node = OmegaConf.merge(OmegaConf.structured(stored_schema(stored, group)), stored[group])
    return OmegaConf.to_object(node)


# The head's settings that network.* held before heads were a group of their own.
HEAD_KEYS_OF_NETWORK = ("head", "noisy", "noisy_sigma0", "atoms", "v_min", "v_max")


def with_head_group(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored config as it is now: one written before heads were a config group carries
    the head in network.head (q | dueling), network.atoms (> 1: C51), network.noisy...;
    those become the head group (head=q with dueling, or head=c51). Others: unchanged."""
    network = stored.get("network")
    if not isinstance(network, dict) or "head" in stored or "head" not in network:
        return stored
    network = dict(network)
    old = {key: network.pop(key) for key in HEAD_KEYS_OF_NETWORK if key in network}
    atoms = old.pop("atoms", 1)
    head = {"dueling": old.pop("head") == "dueling", **old}
    name = "c51" if atoms > 1 else "q"
    if name == "c51":
        head["atoms"] = atoms
    migrated = {**stored, "network": network, "head": head}
    for key, value in (("options", name), ("choices", name)):
        if isinstance(stored.get(key), dict):
            migrated[key] = {**stored[key], "head": value}
    return migrated


def _reject_unknown_keys(node: Any, prefix: str) -> None:
    if isinstance(node, ListConfig) or not isinstance(node, DictConfig):
        return
    schema = OmegaConf.get_type(node)
    if is_dataclass(schema):
        allowed = [f.name for f in fields(schema)]
        for key in node.keys():
            if key not in allowed:
                raise ConfigError(
                    f"unknown key '{prefix}{key}'; allowed keys in "
                    f"'{prefix.rstrip('.') or 'the top level'}': {', '.join(allowed)}")
    for key in node.keys():
        if OmegaConf.is_missing(node, key):
            raise ConfigError(f"'{prefix}{key}' has no value; choose an option for it")
        _reject_unknown_keys(node._get_node(key), f"{prefix}{key}.")
