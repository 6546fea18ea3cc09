"""The process that writes a training job's SwanLab runs: `python -m dqn.run.swanlab_worker FD`.

The training process sends it JSON lines on stdin (start, log, video, console, finish) and
never waits for SwanLab: importing it, creating a run and writing its backlog happen here,
on another core, while training goes on. Replies (warnings, `done` at the end) go to the
file descriptor FD, one JSON line each.

The training's console lines (`console` messages) are printed to this process's stdout,
which SwanLab's terminal capture records as the run's log (the local board's Logs tab, and
the record that `swanlab sync` uploads); that stdout goes nowhere else.

Where the local board (swanboard 0.1.10) reads what swanlab 0.10.3 writes differently,
this process writes it the board's way (see docs/dashboard.md, "What the board is given"):
metric folders numbered from 0, the config in the order we give it, and the environment
card's keys in the run's metadata file.

SwanLab keeps one live run per process, so runs are written one at a time: the first
run started is live at once; messages for the others are kept until the live one
finishes, then the next run is created and given its messages (a num_seeds job's agents
appear one after another). When stdin closes without a finish (the training process was
killed), every open run is written and marked crashed, so nothing logged is lost.

This module imports neither torch nor the rest of the package, so it starts quickly.
"""

from __future__ import annotations

import colorsys
import importlib.util
import json
import os
import re
import signal
import sys
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, TextIO

KILLED = "the training process ended without finishing this run"


class Writer:
    """Turns the messages of the training process into SwanLab calls."""

    def __init__(self, replies: TextIO) -> None:
        self.replies = replies
        self.swanlab: Any = None
        self.live: str | None = None  # the run id being written
        self.broken: set[str] = set()  # runs SwanLab failed on: their messages are dropped
        self.finished: set[str] = set()  # runs whose finish came: later messages are dropped
        self.pending: dict[str, list[dict[str, Any]]] = {}  # run id -> its messages, in order
        self.run_dir: Path | None = None  # the live run's folder in the log directory
        self.process: dict[str, Any] = {}  # the live run's training process: pid, command...

    def reply(self, **message: Any) -> None:
        self.replies.write(json.dumps(message) + "\n")
        self.replies.flush()

    def warn(self, run: str | None, what: str, error: BaseException | str) -> None:
        if run is not None:
            self.broken.add(run)
        reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self.reply(op="warning", text=f"SwanLab {what} ({reason}); training goes on, "
                                      "metrics.csv keeps the record")

    def handle(self, message: dict[str, Any]) -> None:
        run, op = message["run"], message["op"]
        if run in self.finished and op != "start":  # late: the run is written and closed
            return
        if op == "finish":
            self.finished.add(run)
        elif op == "start":
            self.finished.discard(run)
        if self.live is None and op == "start":
            self.live = run
        if run != self.live:
            self.pending.setdefault(run, []).append(message)
            return
        if run not in self.broken:
            self.write(message)
        if op == "finish":
            self.next_run()

    def next_run(self) -> None:
        """After the live run finished: make the oldest waiting run live, giving it the
        messages it has waited with (and again, if those end with its finish)."""
        self.live = None
        while self.pending and self.live is None:
            run = next(iter(self.pending))
            messages = self.pending.pop(run)
            self.live = run
            for message in messages:
                if run not in self.broken:
                    self.write(message)
            if messages[-1]["op"] == "finish":
                self.live = None

    def write(self, message: dict[str, Any]) -> None:
        run, op = message["run"], message["op"]
        try:
            if op == "start":
                self.start(message)
            elif op == "log":
                self.swanlab.log(message["metrics"], step=message["step"])
            elif op == "video":
                video = self.swanlab.Video(message["gif"], caption=message["caption"])
                self.swanlab.log({message["key"]: video}, step=message["step"])
            elif op == "console":
                sys.stdout.write("".join(f"{line}\n" for line in message["lines"]))
                sys.stdout.flush()
            elif op == "finish":
                kwargs = ({"state": "crashed", "error": message["error"] or "unknown error"}
                          if message["crashed"] else {})
                self.swanlab.finish(**kwargs)
                if self.run_dir is not None:
                    for_the_board(self.run_dir, self.process)
                self.run_dir = None
        except Exception as error:  # noqa: BLE001 - tracking failures never end training
            self.warn(run, {"start": "could not start", "finish": "failed to finish"}.get(
                op, "failed to log"), error)

    def start(self, message: dict[str, Any]) -> None:
        if self.swanlab is None:
            import swanlab

            self.swanlab = swanlab
            quiet_console()
            serialize_dashboard_writes()
            number_metric_folders_from_zero()
        swanlab, cfg = self.swanlab, message["cfg"]
        settings = swanlab.Settings(
            interactive=False,  # never wait for a login prompt
            # record what this process prints: the training's console lines, nothing else
            terminal=swanlab.Settings.Terminal(proxy_type="stdout"),
            probe=swanlab.Settings.Probe(monitor=False),  # no hardware-sampling thread
        )
        mode = self.usable_mode(cfg, settings)
        Path(cfg["log_dir"]).mkdir(parents=True, exist_ok=True)
        group, colour = configuration_of(message["name"])
        group, colour = message.get("group") or group, message.get("colour") or colour
        run = swanlab.init(mode=mode, log_dir=cfg["log_dir"], project=cfg["project"],
                           experiment_name=message["name"], config=message["config"],
                           group=group, color=colour,
                           settings=settings, id=message["run"], resume="allow")
        self.run_dir, self.process = Path(run.dir), message.get("process") or {}
        for_the_board(self.run_dir, self.process)

    def usable_mode(self, cfg: dict[str, Any], settings: Any) -> str:
        """`online` only when an API key is set and the API host answers within 3 s;
        otherwise warn and log locally, so online mode can neither prompt nor hang."""
        mode, log_dir = cfg["mode"], cfg["log_dir"]
        if mode == "local" and importlib.util.find_spec("swanboard") is None:
            self.reply(op="warning", text=(
                "logger.mode=local needs the dashboard package (pip install "
                f"'swanlab[dashboard]'); logging offline to {log_dir} instead"))
            return "offline"
        if mode != "online":
            return mode
        if not settings.api_key:
            reason = "no SwanLab API key is set (run `swanlab login` or set SWANLAB_API_KEY)"
        else:
            import requests

            try:
                requests.get(settings.api_host, timeout=3)
                return "online"
            except requests.RequestException as error:
                reason = f"{settings.api_host} is unreachable ({type(error).__name__})"
        self.reply(op="warning", text=f"logger.mode=online but {reason}; logging locally "
                                      f"to {log_dir} instead")
        return "local"

    def close(self) -> None:
        """stdin closed: every run whose finish never came is written and marked crashed."""
        while self.live is not None:
            self.handle({"run": self.live, "op": "finish", "crashed": True, "error": KILLED})


def quiet_console() -> None:
    """SwanLab prints several banner lines per run and has no public quiet switch; mute its
    info lines, and send its warnings and errors to stderr (stdout is the runs' log).
    Harmless if its internals move."""
    try:
        from swanlab.sdk.internal.pkg import console
    except ImportError:
        return
    console.info = lambda *args, **kwargs: None
    if hasattr(console, "c"):
        console.c.file = sys.stderr


def number_metric_folders_from_zero() -> None:
    """Number each run's metric folders (logs/N/) from 0, as the local board reads them.

    swanlab 0.10.3's local mode numbers them from 1 while the board gives each metric a
    `sort` from 0 and, in the experiments table's summaries (`/api/v1/project/summaries`),
    reads metric k from folder k: the first metric showed "TypeError" and every later one
    the value of the one before. Each run's card reads the folder by name and was right;
    it stays right. See docs/dashboard.md for the reproduction.
    """
    try:
        from swanlab.deprecated.local import LocalCallbacker
    except ImportError:
        return
    init = LocalCallbacker.__init__

    def init_from_zero(self, *args, **kwargs):
        init(self, *args, **kwargs)
        if getattr(self, "_next_kid", None) == 1:
            self._next_kid = 0

    LocalCallbacker.__init__ = init_from_zero


def for_the_board(run_dir: Path, process: dict[str, Any]) -> None:
    """Rewrite two files of a run's folder the way the local board reads them: the config
    in the order it was given (swanlab sorts it by name; the board shows it in file order)
    and the environment card's keys in the metadata (see board_metadata). Both files stay
    what they were otherwise; `swanlab sync` reads neither (the run's record holds both)."""
    try:
        keep_config_order(run_dir / "files" / "config.yaml")
        path = run_dir / "files" / "swanlab-metadata.json"
        if path.is_file():
            metadata = json.loads(path.read_text())
            write_atomically(path, json.dumps({**metadata,
                                               **board_metadata(metadata, process)}))
    except (OSError, ValueError):  # a file SwanLab has not written (yet): left as it is
        pass


def keep_config_order(path: Path) -> None:
    """config.yaml's entries ({key: {value, desc, sort}}) in the order of their `sort`."""
    import yaml

    if not path.is_file():
        return
    config = yaml.safe_load(path.read_text())
    if not isinstance(config, dict):
        return
    ordered = dict(sorted(config.items(), key=lambda item: (item[1] or {}).get("sort", 0)))
    write_atomically(path, yaml.safe_dump(ordered, allow_unicode=True, sort_keys=False,
                                          default_flow_style=False))


def board_metadata(metadata: dict[str, Any], process: dict[str, Any]) -> dict[str, Any]:
    """The flat keys the local board's environment card reads (hostname, OS, Python, the
    command...), from what swanlab 0.10 writes nested (runtime, hardware, git) and from
    the training process (`process`: its pid, command, directory and interpreter; SwanLab's
    own runtime entry describes this worker)."""
    runtime, git = metadata.get("runtime") or {}, metadata.get("git") or {}
    hardware = metadata.get("hardware") or {}
    cpu, memory = hardware.get("cpu") or {}, hardware.get("memory") or {}
    flat = {
        "hostname": runtime.get("hostname"),
        "os": runtime.get("os_pretty") or runtime.get("os"),
        "pid": process.get("pid"),
        "python": runtime.get("python_version"),
        "python_verbose": runtime.get("python_verbose"),
        "executable": process.get("executable") or runtime.get("python_executable"),
        "cwd": process.get("cwd") or runtime.get("cwd"),
        "command": process.get("command"),
        "git_remote": git.get("remote_url"),
        "git_info": [git.get("branch"), git.get("commit")] if git.get("commit") else None,
        "cpu": {"brand": cpu.get("brand"), "cores": cpu.get("logical_count")},
        "memory": memory.get("total"),
    }
    accelerators = hardware.get("accelerators") or []
    if accelerators:
        first = accelerators[0]
        devices = first.get("devices") or []
        gpu = {"driver": first.get("version"), "cuda": first.get("cuda_version"),
               "cores": len(devices), "type": [d.get("name") for d in devices],
               "memory": [round((d.get("memory") or 0) / (1024 if d.get("memory_unit") == "MB"
                                                          else 1), 1) for d in devices]}
        flat["gpu"] = {"nvidia": gpu} if first.get("vendor") == "nvidia" else gpu
    return {key: value for key, value in flat.items() if value is not None}


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def serialize_dashboard_writes() -> None:
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
    initialize, create_column = LocalCallbacker.on_run_initialized, LocalCallbacker._create_column

    def locked_initialize(self, run_dir, *args, **kwargs):
        with log_dir_lock(Path(run_dir).parent):
            return initialize(self, run_dir, *args, **kwargs)

    def locked_create_column(self, *args, **kwargs):
        with log_dir_lock(self._run_dir.parent):
            return create_column(self, *args, **kwargs)

    LocalCallbacker.on_run_initialized = locked_initialize
    LocalCallbacker._create_column = locked_create_column


@contextmanager
def log_dir_lock(log_dir: Path) -> Iterator[None]:
    import fcntl

    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / ".dqn-dashboard.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def main(reply_fd: int) -> None:
    # A stop signal is for training, which then finishes its runs and closes our stdin;
    # Slurm sends SIGUSR2 and SIGTERM to every process of a job step, this one included,
    # and dying of them here would lose the runs not yet written. (If training is
    # killed outright, stdin closes all the same.)
    for stop in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2):
        signal.signal(stop, signal.SIG_IGN)
    # What this process prints is a run's log (see Writer.write), never the user's terminal.
    sys.stdout = open(os.devnull, "w", encoding="utf-8")
    with os.fdopen(reply_fd, "w") as replies:
        writer = Writer(replies)
        for line in sys.stdin:
            if line.strip():
                writer.handle(json.loads(line))
        writer.close()
        writer.reply(op="done")


def configuration_of(name: str) -> tuple[str | None, str | None]:
    """A sweep run's configuration (its name without the seed: `target=hard` for
    `target=hard · seed=0`) as its SwanLab group, and a colour of that configuration's
    family: the hue from the configuration, lighter or darker by seed. (None, None) for a
    name without both."""
    parts = name.split(" · ")
    config = " · ".join(p for p in parts if not p.startswith("seed="))
    if len(parts) < 2 or not config:
        return None, None
    seeds = re.findall(r"(?:^| · )seed=(\d+)", name)  # `seed=3 (resumed)` too
    seed = int(seeds[-1]) if seeds else 0
    return config, configuration_colour(config, (0.35, 0.5, 0.65)[seed % 3])


def configuration_colour(config: str, lightness: float, saturation: float = 0.75) -> str:
    """The colour of configuration `config` (its hue) at `lightness` (0 black .. 1 white):
    a sweep's seeds are 0.35-0.65, its aggregates darker (the mean) and lighter (the band)."""
    hue = (zlib.crc32(config.encode()) * 0.618033988749895) % 1.0
    red, green, blue = colorsys.hls_to_rgb(hue, lightness, saturation)
    return "#{:02x}{:02x}{:02x}".format(*(round(c * 255) for c in (red, green, blue)))


if __name__ == "__main__":
    main(int(sys.argv[1]))
