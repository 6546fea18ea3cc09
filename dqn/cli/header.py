"""The line a run starts with: what trains, for how long, and where to look."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

from dqn.config import Config, chosen_options


def algorithm(config: Config) -> str:
    """A short name for what the chosen options add up to: `PQN`, `DQN`, or DQN with its
    family's components (`DQN + double, dueling, C51, 3-step, prioritized`)."""
    options = chosen_options(config)
    if options["buffer"] == "rollout":
        return "PQN"
    head, buffer = config.head, config.buffer
    parts = [name for name, used in (
        ("double", config.train.double_q and options["target"] != "none"),
        ("dueling", head.dueling),
        ("noisy", head.noisy),
        (head.title, bool(head.title)),
        (f"{buffer.n_step}-step", buffer.n_step > 1),
        ("prioritized", options["buffer"] == "prioritized"),
    ) if used]
    return "DQN" + (f" + {', '.join(parts)}" if parts else "")


def header(config: Config, choices: dict[str, Any], run_dir: Path, device: str) -> str:
    """One line: env, preset, algorithm, budget, seeds and device, then the run's folder
    and how to see it in the dashboard."""
    budget = [f"{config.train.total_steps:,} env steps"] if config.train.total_steps else []
    if config.train.total_episodes:
        budget.append(f"{config.train.total_episodes:,} episodes")
    seeds = (f"seed {config.seed}" if config.num_seeds == 1
             else f"seeds {config.seed}-{config.seed + config.num_seeds - 1}")
    envs = f" x {config.env.num_envs} envs" if config.env.num_envs > 1 else ""
    preset = choices.get("experiment") or "default"
    where = f"run folder {_relative(run_dir)}"
    if chosen_options(config)["logger"] == "swanlab":
        log_dir = shlex.quote(_relative(Path(config.logger.log_dir)))
        if config.logger.mode == "local":
            where += f"; dashboard: swanlab watch {log_dir}"
        elif config.logger.mode == "offline":
            where += f"; SwanLab offline log in {log_dir}"
    return (f"{config.env.id}{envs} · preset {preset} · {algorithm(config)} · "
            f"{' or '.join(budget)} · {seeds} · {device} | {where}")


def _relative(path: Path) -> str:
    """`path` relative to the working directory when it lies inside it."""
    absolute = path.resolve()
    try:
        return str(absolute.relative_to(Path(os.getcwd()).resolve()))
    except ValueError:
        return str(absolute)
