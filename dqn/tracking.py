"""Where metrics go: SwanLab (the dashboard) and a CSV file in the run directory."""

from __future__ import annotations

import csv
import fcntl
import importlib.util
import logging
import math
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Protocol

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

    def __init__(self, cfg: SwanLabConfig, name: str, config: dict[str, Any],
                 resume_id: str | None = None) -> None:
        import swanlab

        self.swanlab = swanlab
        self.run_id: str | None = None
        self.broken = False
        _hide_swanlab_banners()
        _serialize_dashboard_writes()
        settings = swanlab.Settings(
            interactive=False,  # never wait for a login prompt
            terminal=swanlab.Settings.Terminal(proxy_type="none"),  # leave our console alone
            probe=swanlab.Settings.Probe(monitor=False),  # no hardware-sampling thread
        )
        try:
            mode = _usable_mode(cfg, settings)
            Path(cfg.log_dir).mkdir(parents=True, exist_ok=True)
            resume = {} if resume_id is None else {"id": resume_id, "resume": "allow"}
            self.run = swanlab.init(mode=mode, log_dir=cfg.log_dir, project=cfg.project,
                                    experiment_name=name, config=config, settings=settings,
                                    **resume)
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

    finish_timeout = 30  # seconds; online mode's finish() hangs if the network is gone

    def finish(self, crashed: bool = False, error: str | None = None) -> None:
        if self.broken:
            return
        kwargs = {"state": "crashed", "error": error or "unknown error"} if crashed else {}
        try:
            with _time_limit(self.finish_timeout):
                self.swanlab.finish(**kwargs)
        except TimeoutError:
            self._give_up("did not finish", TimeoutError(
                f"no answer within {self.finish_timeout} s; its files stay in the log "
                "directory for `swanlab sync`"))
        except Exception as failure:  # noqa: BLE001
            self._give_up("failed to finish", failure)


@contextmanager
def _time_limit(seconds: int) -> Iterator[None]:
    """Raise TimeoutError in the main thread after `seconds` (SIGALRM). SwanLab's
    finish() installs signal handlers, so it must run in the main thread itself; in
    other threads, or without SIGALRM, no limit applies."""
    if threading.current_thread() is not threading.main_thread() or \
            not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _usable_mode(cfg: SwanLabConfig, settings: Any) -> str:
    """`online` only when an API key is set and the API host answers within 3 s;
    otherwise warn once and log locally, so online mode can neither prompt nor hang."""
    if cfg.mode == "local" and importlib.util.find_spec("swanboard") is None:
        log.warning("logger.mode=local needs the dashboard package (pip install "
                    "'swanlab[dashboard]'); logging offline to %s instead", cfg.log_dir)
        return "offline"
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


def _serialize_dashboard_writes() -> None:
    """Make SwanLab's local-mode bookkeeping (creating the project, the experiment and its
    charts in the log directory's SQLite file) take a file lock in the log directory.

    Without it, jobs of a parallel sweep that start runs or log a new metric at the same
    moment race in that file, and the losers silently vanish from the dashboard or lose
    their curves. The lock makes them take turns; metric values are written unlocked.
    """
    try:
        from swanlab.deprecated.local import LocalCallbacker
    except ImportError:
        return
    if getattr(LocalCallbacker, "_dqn_locked", False):
        return
    initialize, create_column = LocalCallbacker.on_run_initialized, LocalCallbacker._create_column

    def locked_initialize(self, run_dir, *args, **kwargs):
        with _log_dir_lock(Path(run_dir).parent):
            return initialize(self, run_dir, *args, **kwargs)

    def locked_create_column(self, *args, **kwargs):
        with _log_dir_lock(self._run_dir.parent):
            return create_column(self, *args, **kwargs)

    LocalCallbacker.on_run_initialized = locked_initialize
    LocalCallbacker._create_column = locked_create_column
    LocalCallbacker._dqn_locked = True


@contextmanager
def _log_dir_lock(log_dir: Path) -> Iterator[None]:
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / ".dqn-dashboard.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _hide_swanlab_banners() -> None:
    """SwanLab prints several banner lines per run and has no public quiet switch; mute its
    info lines (warnings and errors still show). Harmless if its internals move."""
    try:
        from swanlab.sdk.internal.pkg import console
    except ImportError:
        return
    console.info = lambda *args, **kwargs: None


class DeferredTracker:
    """Keeps what a run logs in memory and writes it to a tracker of its own when the
    run's id is first asked for or the run finishes: SwanLab keeps one live run per
    process, so agents trained together get their runs one after another."""

    def __init__(self, cfg: Any, name: str, config: dict[str, Any]) -> None:
        self.cfg, self.name, self.config = cfg, name, config
        self.calls: list[tuple[str, tuple]] = []
        self.tracker: Tracker | None = None

    @property
    def run_id(self) -> str | None:
        return self._started().run_id

    def _started(self) -> Tracker:
        if self.tracker is None:
            self.tracker = build_tracker(self.cfg, self.name, self.config)
            for method, args in self.calls:
                getattr(self.tracker, method)(*args)
            self.calls.clear()
        return self.tracker

    def _call(self, method: str, *args: Any) -> None:
        if self.tracker is None:
            self.calls.append((method, args))
        else:
            getattr(self.tracker, method)(*args)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self._call("log", dict(metrics), step)

    def log_video(self, key: str, gif: Path, caption: str, step: int) -> None:
        self._call("log_video", key, gif, caption, step)

    def finish(self, crashed: bool = False, error: str | None = None) -> None:
        self._started().finish(crashed, error)


def build_tracker(cfg: Any, name: str, config: dict[str, Any],
                  resume_id: str | None = None) -> Tracker:
    """A SwanLab tracker for logger=swanlab (unless disabled), else a NullTracker.
    `resume_id` continues an earlier run's SwanLab record where the mode allows it."""
    if not isinstance(cfg, SwanLabConfig) or cfg.mode == "disabled":
        return NullTracker()
    return SwanLabTracker(cfg, name, config, resume_id)


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
        self.columns = columns
        self.rows: list[dict[str, Any]] = []
        self.rewrite([])

    def rewrite(self, rows: list[dict[str, Any]]) -> None:
        """Start the file afresh with `rows` (a resumed run drops rows written after its
        checkpoint: it is about to write them again)."""
        if getattr(self, "file", None) is not None:
            self.file.close()
        self.file = self.path.open("w", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=self.columns)
        self.writer.writeheader()
        self.rows = []
        for row in rows:
            self.append(row)
        self.file.flush()

    def append(self, row: dict[str, float]) -> None:
        self.rows.append(row)
        self.writer.writerow(row)
        self.file.flush()

    def close(self) -> None:
        self.file.close()
