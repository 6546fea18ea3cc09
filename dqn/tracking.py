"""Where metrics go: SwanLab (the dashboard) and a CSV file in the run directory."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any, Protocol

from dqn.config import SwanLabConfig

log = logging.getLogger(__name__)


class Tracker(Protocol):
    run_id: str | None

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Record scalar metrics at env step `step`."""

    def finish(self, crashed: bool = False, error: str | None = None) -> None:
        """Close the run, marking it crashed if training raised."""


class NullTracker:
    """Tracks nothing (logger=none or logger.mode=disabled)."""

    run_id = None

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def finish(self, crashed: bool = False, error: str | None = None) -> None:
        pass


class SwanLabTracker:
    """One SwanLab experiment per training run."""

    def __init__(self, cfg: SwanLabConfig, name: str, config: dict[str, Any]) -> None:
        import swanlab

        self.swanlab = swanlab
        Path(cfg.log_dir).mkdir(parents=True, exist_ok=True)
        self.run = swanlab.init(project=cfg.project, experiment_name=name, config=config,
                                logdir=cfg.log_dir, mode=cfg.mode)
        self.run_id = getattr(self.run, "id", None)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.swanlab.log(metrics, step=step)

    def finish(self, crashed: bool = False, error: str | None = None) -> None:
        if crashed:
            self.swanlab.finish(state="crashed", error=error or "")
        else:
            self.swanlab.finish()


def build_tracker(cfg: Any, name: str, config: dict[str, Any]) -> Tracker:
    """A SwanLab tracker for logger=swanlab (unless disabled), else a NullTracker."""
    if not isinstance(cfg, SwanLabConfig) or cfg.mode == "disabled":
        return NullTracker()
    return SwanLabTracker(cfg, name, config)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}, so the dashboard shows one column per value."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class MetricsFile:
    """metrics.csv in the run directory: one row per evaluation, flushed as written."""

    COLUMNS = ("env_step", "episodes", "wall_seconds", "eval_return_mean",
               "eval_return_std", "eval_return_min", "eval_return_max", "best_return",
               "epsilon")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = path.open("w", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=self.COLUMNS)
        self.writer.writeheader()
        self.file.flush()

    def append(self, row: dict[str, float]) -> None:
        self.writer.writerow(row)
        self.file.flush()

    def close(self) -> None:
        self.file.close()
