"""Where metrics go: SwanLab (the dashboard), through a process of its own, and CSV files
in the run directory."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
import secrets
import select
import shlex
import sqlite3
import string
import subprocess
import sys
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from dqn.checks import choice, fail
from dqn.interfaces import LoggerConfig, Tracker
from dqn.options import build, option

log = logging.getLogger("dqn")
LOGGER_MODES = ("local", "offline", "online", "disabled")


@dataclass
class NoLoggerConfig(LoggerConfig):
    """Nothing goes to a tracker; training aggregates are still made every `every_steps`
    (checked for NaN) and metrics.csv written."""

    mode: str = "disabled"  # disabled: nothing goes to a tracker


@dataclass
class SwanLabConfig(LoggerConfig):
    mode: str = "local"  # local, offline (sync later), online (opt-in), disabled
    log_dir: str = "outputs/swanlog"  # one SwanLab folder for every run
    project: str = "dqn"  # the SwanLab project; the local dashboard: one per log_dir
    experiment_name: Optional[str] = None  # null: made from the run's overrides

    def check(self) -> None:
        super().check()
        choice("logger.mode", self.mode, LOGGER_MODES)
        if not self.log_dir:
            fail("logger.log_dir", self.log_dir, "must be a directory path")
        if not re.fullmatch(r"[0-9A-Za-z_\-+.]{1,100}", self.project):
            fail("logger.project", self.project, "SwanLab takes 1-100 letters, digits, _ - + .")
        if self.experiment_name is not None and not 1 <= len(self.experiment_name) <= 512:
            fail("logger.experiment_name", self.experiment_name,
                 "SwanLab takes 1-512 characters, or null for a name made from the overrides")


@option("logger", "none", NoLoggerConfig)
class NullTracker(Tracker):
    """Tracks nothing (logger=none or logger.mode=disabled)."""

    run_id = None

    def __init__(self, *args: Any) -> None:
        pass

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_video(self, key: str, gif: Path, caption: str, step: int) -> None:
        pass

    def finish(self, crashed: bool = False, error: str | None = None) -> None:
        pass


def build_tracker(cfg: LoggerConfig, name: str, config: dict[str, Any],
                  resume_id: str | None = None) -> Tracker:
    """The tracker of the logger option `cfg` for a run named `name` with the flattened
    `config`; `resume_id` continues an earlier run's record where the mode allows it."""
    return build(cfg, name, config, resume_id)


@option("logger", "swanlab", SwanLabConfig)
def swanlab_tracker(cfg: SwanLabConfig, name: str, config: dict[str, Any],
                    resume_id: str | None = None) -> Tracker:
    if cfg.mode == "disabled":
        return NullTracker()
    warning = hidden_project_warning(cfg)
    if warning and warning not in _warned:
        _warned.add(warning)
        log.warning("%s", warning)
    return SwanLabTracker(cfg, name, dashboard_config(config, name), resume_id,
                          seed=config.get("seed"))


# Keys of the stored config that only record how it was composed or where it is logged:
# not settings of the run, so not columns of the dashboard.
COMPOSITION_KEYS = ("logger.mode", "logger.log_dir", "logger.project", "logger.experiment_name",
                    "resume", "num_seeds")
COMPOSITION_PREFIXES = ("choices.", "options.", "schemas.")
NOT_SHOWN_GROUPS = ("env", "logger")  # env.id names the env; the logger is this dashboard


def dashboard_config(config: dict[str, Any], name: str) -> dict[str, Any]:
    """A run's flattened stored config as the dashboard's columns, in this order: the keys
    its name sets (a sweep's `target=hard · seed=0`: target, seed; a single run's
    overrides), the option chosen in each group and the presets used (`head: qr`,
    `experiment: minatar_dqn`), then every other setting once. Left out: what only records
    how the config was composed (choices.*, options.*) or where it is logged (logger.mode,
    log_dir, project, experiment_name), resume and num_seeds. A null is the string "null"
    (SwanLab would store a null value as {}; the board shows that as {} or [object Object])."""
    options = {k.partition(".")[2]: v for k, v in config.items() if k.startswith("options.")}
    presets = {k.partition(".")[2]: v for k, v in config.items()
               if k.startswith("choices.") and v is not None and k[8:] not in options}
    chosen = {group: value for group, value in {**presets, **options}.items()
              if group not in NOT_SHOWN_GROUPS}
    settings = {k: v for k, v in config.items()
                if not k.startswith(COMPOSITION_PREFIXES) and k not in COMPOSITION_KEYS}
    columns = {**chosen, **settings}
    first: dict[str, Any] = {}
    for key, value in named_settings(name):
        if key in columns:
            first[key] = columns[key]
        elif value is not None and key.partition(".")[0] not in ("hydra", "logger"):
            first[key] = value  # a swept group not shown otherwise (env=acrobot)
    return {key: "null" if value is None else value
            for key, value in {**first, **columns}.items()}


def named_settings(name: str) -> list[tuple[str, str | None]]:
    """The (key, value) pairs a run's name sets: a sweep's `target=hard · seed=0`, or a
    single run's overrides (`seed=3,train.gamma=0.9`: keys only, values being ambiguous
    there)."""
    name = name.removesuffix(" (resumed)")
    if " · " in name or re.fullmatch(r"[\w.+~/@-]+=[^,]*", name):
        pairs = [part.partition("=") for part in name.split(" · ")]
        return [(key.lstrip("+~"), value) for key, sep, value in pairs
                if sep and re.fullmatch(r"[\w.+~/@-]+", key)]
    return [(key.lstrip("+~"), None) for key in re.findall(r"(?:^|,)([\w.+~/@-]+)=", name)]


_warned: set[str] = set()  # once per process, not once per agent of a num_seeds job


def hidden_project_warning(cfg: SwanLabConfig) -> str | None:
    """What to tell a user whose logger.project the local dashboard will not show: it keeps
    one project per log folder, the first one logged there, and lists every later run under
    it. None when the project shows (or the mode has no local dashboard)."""
    if cfg.mode != "local":
        return None
    shown = dashboard_project(Path(cfg.log_dir))
    if shown is None or shown == cfg.project:
        return None
    return (f"logger.project={cfg.project!r} is not shown by the local dashboard: "
            f"{cfg.log_dir} already holds project {shown!r} and this run is listed under it "
            f"(one project per folder); to see {cfg.project!r} apart, also set "
            f"logger.log_dir={cfg.log_dir.rstrip('/')}-{cfg.project}")


def dashboard_project(log_dir: Path) -> str | None:
    """The project that `swanlab watch LOG_DIR` shows: the first one logged in local mode
    into that folder (SwanLab's dashboard database, runs.swanlab), or None."""
    database = log_dir / "runs.swanlab"
    if not database.is_file():
        return None
    try:
        with closing(sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro",
                                     uri=True)) as connection:
            row = connection.execute("SELECT name FROM project ORDER BY id LIMIT 1").fetchone()
    except sqlite3.Error:  # another dashboard version, or a broken file: nothing to say
        return None
    return row[0] if row else None


class SwanLabTracker(Tracker):
    """One SwanLab experiment, written by this process's SwanLab worker (see
    dqn/run/swanlab_worker.py): training only sends it messages, so importing SwanLab,
    creating the run and writing its backlog cost the training loop nothing. The run's id
    is made here, so it is known at once (summary.json and last.pt carry it)."""

    def __init__(self, cfg: SwanLabConfig, name: str, config: dict[str, Any],
                 resume_id: str | None = None, *, seed: Any = None,
                 group: str | None = None, colour: str | None = None) -> None:
        """`config` goes to the dashboard as it is (see dashboard_config); `seed` picks this
        run's console lines in a num_seeds job (those labelled `seed N: `, and the
        unlabelled ones); `group` and `colour` replace those made from the name."""
        self.run_id = resume_id or new_run_id()
        self.worker = SwanLabWorker.shared()
        self._send("start", cfg={"mode": cfg.mode, "log_dir": cfg.log_dir,
                                 "project": cfg.project}, name=name, config=config,
                   group=group, colour=colour, process=this_process())
        self.console = ConsoleLines(self, seed)

    def _send(self, op: str, **fields: Any) -> None:
        self.worker.send({"run": self.run_id, "op": op, **fields})

    def log_console(self, lines: list[str]) -> None:
        """Lines of the run's console log (the board's Logs tab)."""
        if lines:
            self._send("console", lines=lines)

    def log(self, metrics: dict[str, float], step: int) -> None:
        finite = {k: float(v) for k, v in metrics.items() if math.isfinite(v)}
        self._send("log", metrics=finite, step=int(step))

    def log_video(self, key: str, gif: Path, caption: str, step: int) -> None:
        self._send("video", key=key, gif=str(gif), caption=caption, step=int(step))

    def finish(self, crashed: bool = False, error: str | None = None) -> None:
        self.console.close()
        self._send("finish", crashed=crashed, error=error)


def this_process() -> dict[str, Any]:
    """What the dashboard's environment card says of the training process."""
    return {"pid": os.getpid(), "command": shlex.join(getattr(sys, "orig_argv", sys.argv)),
            "cwd": os.getcwd(), "executable": sys.executable}


LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's job log


class ConsoleLines(logging.Handler):
    """Sends the process's log lines (INFO and above, as its log file has them) to a run's
    SwanLab record while the run is open: first the lines its log file (Hydra's
    train.log) already holds, then each new one. In a num_seeds job, lines labelled for
    another seed (`seed 3: ...`) are left to that seed's run."""

    def __init__(self, tracker: SwanLabTracker, seed: Any = None) -> None:
        super().__init__(logging.INFO)
        self.tracker, self.busy, self.closed = tracker, False, False
        self.other_seed = re.compile(rf"seed (?!{re.escape(str(seed))}:)\d+: ")
        root = logging.getLogger()
        files = [h for h in root.handlers if isinstance(h, logging.FileHandler)]
        self.setFormatter(files[0].formatter if files and files[0].formatter
                          else logging.Formatter(LOG_FORMAT))
        if files:
            try:
                backlog = Path(files[0].baseFilename).read_text(errors="replace")
            except OSError:
                backlog = ""
            tracker.log_console([line for line in backlog.splitlines()
                                 if not self.other_seed.search(line)])
        root.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        # busy: a warning the worker's reply raises while this line is sent; closed: the
        # run is finished, though a handler list saved before (tqdm's logging redirect)
        # may have been put back with this handler in it
        if self.busy or self.closed:
            return
        self.busy = True
        try:
            if not self.other_seed.match(record.getMessage()):
                self.tracker.log_console(self.format(record).splitlines())
        except Exception:  # noqa: BLE001 - a log line never stops training
            self.handleError(record)
        finally:
            self.busy = False

    def close(self) -> None:
        self.closed = True
        logging.getLogger().removeHandler(self)
        super().close()


def new_run_id() -> str:
    """A fresh run id in SwanLab's own format (8 lowercase letters and digits), drawn from
    the operating system so that no seeded generator moves."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


class SwanLabWorker:
    """The process that writes this process's SwanLab runs (started on first use)."""

    command = [sys.executable, "-m", "dqn.run.swanlab_worker"]
    finish_timeout = 30.0  # seconds for each run the worker still has to write at the end
    _shared: "SwanLabWorker | None" = None

    @classmethod
    def shared(cls) -> "SwanLabWorker":
        if cls._shared is None or cls._shared.closed:
            cls._shared = cls()
        return cls._shared

    def __init__(self) -> None:
        self.closed = self.broken = False
        self.runs: set[str] = set()
        read_fd, write_fd = os.pipe()
        package_root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ,
               "PYTHONPATH": os.pathsep.join(p for p in (package_root,
                                                         os.environ.get("PYTHONPATH")) if p)}
        try:
            self.process = subprocess.Popen(
                [*self.command, str(write_fd)], stdin=subprocess.PIPE, pass_fds=(write_fd,),
                env=env, text=True, start_new_session=True)  # Ctrl-C is for training only
        except OSError as error:
            os.close(read_fd)
            self._give_up("could not start", error)
            return
        finally:
            os.close(write_fd)
        self.replies = os.fdopen(read_fd)

    def send(self, message: dict[str, Any]) -> None:
        if self.broken:
            return
        self.runs.add(message["run"])
        try:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
        except (OSError, ValueError) as error:
            self._give_up("stopped", error)
        self._read_replies(timeout=0)

    def _read_replies(self, timeout: float) -> bool:
        """Log the worker's warnings that have arrived (waiting up to `timeout` s for
        them); True once the worker said it is done."""
        deadline = time.monotonic() + timeout
        while True:
            ready, _, _ = select.select([self.replies], [], [],
                                        max(0.0, deadline - time.monotonic()))
            if not ready:
                return False
            line = self.replies.readline()
            if not line:  # the worker exited
                return True
            reply = json.loads(line)
            if reply["op"] == "done":
                return True
            log.warning("%s", reply["text"])

    def _give_up(self, what: str, error: BaseException) -> None:
        if not self.broken:
            log.warning("SwanLab %s (%s: %s); training goes on, metrics.csv keeps the record",
                        what, type(error).__name__, error)
        self.broken = True

    def close(self) -> None:
        """Let the worker write what it was sent and wait for it: at most finish_timeout
        seconds per run; a worker still busy then is stopped, its files stay in the log
        directory for `swanlab sync`."""
        if self.closed:
            return
        self.closed = True
        if not hasattr(self, "process"):
            return
        try:
            self.process.stdin.close()
        except OSError:
            pass
        done = self._read_replies(timeout=self.finish_timeout * max(1, len(self.runs)))
        if not done:
            self.process.kill()
            self._give_up("did not finish", TimeoutError(
                f"no answer within {self.finish_timeout * max(1, len(self.runs)):g} s; its "
                "files stay in the log directory for `swanlab sync`"))
        self.process.wait()
        self.replies.close()


def close_trackers() -> None:
    """Wait for this process's SwanLab worker to write every run it was given."""
    if SwanLabWorker._shared is not None:
        SwanLabWorker._shared.close()


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}, so the dashboard shows one column per value."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# metrics.csv: one row per evaluation; then a column for each scalar the exploration logs
# (`epsilon` for the epsilon-greedy options, `temperature` for boltzmann).
METRICS_COLUMNS = ("env_step", "episodes", "wall_seconds", "eval_return_mean",
                   "eval_return_std", "eval_return_min", "eval_return_max", "best_return")
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
