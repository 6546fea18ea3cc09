"""Where metrics go: SwanLab (the dashboard) and a CSV file in the run directory."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Any, Protocol

from dqn.config import SwanLabConfig

log = logging.getLogger(__name__)


class Tracker(Protocol):
    run_id: str | None

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Record scalar metrics at env step `step`."""

    def log_video(self, key: str, gif: Path, caption: str, step: int) -> None:
        """Record a GIF file at env step `step`."""

    def finish(self, crashed: bool = False, error: str | None = None) -> None:
        """Close the run, marking it crashed if training raised."""


class NullTracker:
    """Tracks nothing (logger=none or logger.mode=disabled)."""

    run_id = None

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_video(self, key: str, gif: Path, caption: str, step: int) -> None:
        pass

    def finish(self, crashed: bool = False, error: str | None = None) -> None:
        pass


class SwanLabTracker:
    """One SwanLab experiment per training run.

    Tracking never stops training: if SwanLab fails to start or to log, one warning is
    printed and the run goes on with metrics.csv and summary.json as its record.
    """

    def __init__(self, cfg: SwanLabConfig, name: str, config: dict[str, Any]) -> None:
        import swanlab

        self.swanlab = swanlab
        self.run_id: str | None = None
        self.broken = False
        _hide_swanlab_banners()
        settings = swanlab.Settings(
            interactive=False,  # never wait for a login prompt
            terminal=swanlab.Settings.Terminal(proxy_type="none"),  # leave our console alone
            probe=swanlab.Settings.Probe(monitor=False),  # no hardware-sampling thread
        )
        try:
            mode = _usable_mode(cfg, settings)
            Path(cfg.log_dir).mkdir(parents=True, exist_ok=True)
            self.run = swanlab.init(mode=mode, log_dir=cfg.log_dir, project=cfg.project,
                                    experiment_name=name, config=config, settings=settings)
            self.run_id = self.run.id
        except Exception as error:  # noqa: BLE001 - any tracker failure must not end training
            self._give_up("could not start", error)

    def _give_up(self, what: str, error: BaseException) -> None:
        if not self.broken:
            log.warning("SwanLab %s (%s: %s); training goes on, metrics.csv keeps the record",
                        what, type(error).__name__, error)
        self.broken = True

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.broken:
            return
        finite = {k: float(v) for k, v in metrics.items() if math.isfinite(v)}
        try:
            self.swanlab.log(finite, step=int(step))
        except Exception as error:  # noqa: BLE001
            self._give_up("failed to log", error)

    def log_video(self, key: str, gif: Path, caption: str, step: int) -> None:
        if self.broken:
            return
        try:  # swanlab.Video takes GIF only
            self.swanlab.log({key: self.swanlab.Video(str(gif), caption=caption)}, step=int(step))
        except Exception as error:  # noqa: BLE001
            self._give_up("failed to log a video", error)

    def finish(self, crashed: bool = False, error: str | None = None) -> None:
        if self.broken:
            return
        try:
            if crashed:
                self.swanlab.finish(state="crashed", error=error or "unknown error")
            else:
                self.swanlab.finish()
        except Exception as failure:  # noqa: BLE001
            self._give_up("failed to finish", failure)


def _usable_mode(cfg: SwanLabConfig, settings: Any) -> str:
    """`online` only when an API key is set and the API host answers within 3 s;
    otherwise warn once and log locally, so online mode can neither prompt nor hang."""
    if cfg.mode != "online":
        return cfg.mode
    if not settings.api_key:
        reason = "no SwanLab API key is set (run `swanlab login` or set SWANLAB_API_KEY)"
    else:
        import requests

        try:
            requests.get(settings.api_host, timeout=3)
            return "online"
        except requests.RequestException as error:
            reason = f"{settings.api_host} is unreachable ({type(error).__name__})"
    log.warning("logger.mode=online but %s; logging locally to %s instead", reason, cfg.log_dir)
    return "local"


def _hide_swanlab_banners() -> None:
    """SwanLab prints several banner lines per run and has no public quiet switch; mute its
    info lines (warnings and errors still show). Harmless if its internals move."""
    try:
        from swanlab.sdk.internal.pkg import console
    except ImportError:
        return
    console.info = lambda *args, **kwargs: None


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


# metrics.csv: one row per evaluation.
METRICS_COLUMNS = ("env_step", "episodes", "wall_seconds", "eval_return_mean",
                   "eval_return_std", "eval_return_min", "eval_return_max", "best_return",
                   "epsilon")
# episodes.csv: one row per finished training episode, with the env step at its end.
EPISODE_COLUMNS = ("episode", "env_step", "return", "length")


class CsvFile:
    """A CSV file in the run directory, flushed after every row so a crash keeps them."""

    def __init__(self, path: Path, columns: tuple[str, ...]) -> None:
        self.path = path
        self.file = path.open("w", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=columns)
        self.writer.writeheader()
        self.file.flush()

    def append(self, row: dict[str, float]) -> None:
        self.writer.writerow(row)
        self.file.flush()

    def close(self) -> None:
        self.file.close()
