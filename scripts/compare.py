"""Compare runs: rebuild summary.csv, summary.md and curves.png from sweep or run folders;
with --board, also show each configuration in the SwanLab board as the mean over its seeds
with a 95% band, as experiments of their own beside the runs.

    python scripts/compare.py outputs/multirun/2026-11-21/10-00-00
    python scripts/compare.py outputs/multirun/2026-11-21/10-00-00 --board
    python scripts/compare.py outputs/multirun/A outputs/multirun/B --out outputs/compare
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from omegaconf import OmegaConf

from dqn.cli.args import ArgumentParser
from dqn.cli.sweeps import Job, bootstrap_ci, find_jobs, summary_markdown, write_summary

MEAN, LOW, HIGH = "mean of {n} seed{s}", "mean's 95% CI, low", "mean's 95% CI, high"
AGGREGATE = "aggregate"  # the config key that marks an experiment this script wrote


def main() -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="sweep or run directories")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write (default: the directory, if only one is given; "
                             "else outputs/compare)")
    parser.add_argument("--board", action="store_true",
                        help="also write each configuration's mean over seeds and its 95%% "
                             "band to the SwanLab folder the runs logged to, as experiments "
                             "named '<configuration> · mean of N seeds' (earlier ones of the "
                             "same names are replaced)")
    parser.add_argument("--log-dir", type=Path, default=None,
                        help="with --board: the SwanLab folder (default: the runs' "
                             "logger.log_dir)")
    args = parser.parse_args()
    missing = [d for d in args.dirs if not d.is_dir()]
    if missing:
        print(f"error: not a directory: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    jobs = find_jobs(args.dirs)
    if not jobs:
        print(f"error: no runs (folders with a .hydra record) under "
              f"{', '.join(map(str, args.dirs))}", file=sys.stderr)
        return 2
    log_dir = args.log_dir
    if args.board and log_dir is None:
        log_dir, problem = runs_log_dir(jobs)
        if problem:
            print(f"error: {problem}; name the SwanLab folder with --log-dir",
                  file=sys.stderr)
            return 2
    out = args.out or (args.dirs[0] if len(args.dirs) == 1 else Path("outputs/compare"))
    try:
        write_summary(jobs, out, board_hint=not args.board)
    except OSError as error:
        print(f"error: cannot write the summary to {out}: {error.strerror}", file=sys.stderr)
        return 1
    board_note = ""
    if args.board:
        names = write_board_configurations(jobs, log_dir)
        if not names:
            print("error: no completed run with an evaluation to aggregate", file=sys.stderr)
            return 1
        board_note = (f"\nIn the SwanLab board (`swanlab watch {log_dir}`): each configuration "
                      f"as `<configuration> · mean of N seeds` with its band "
                      f"(`· {LOW}`, `· {HIGH}`), the curves of curves.png, beside the runs; "
                      f"hide the runs with the eye icon to see the configurations alone.\n")
        with open(out / "summary.md", "a") as file:
            file.write(board_note)
    print(summary_markdown(jobs) + board_note)
    print(f"{len(jobs)} runs; wrote {out / 'summary.csv'}, {out / 'summary.md'} and "
          f"{out / 'curves.png'}" + (f"; {len(names)} experiments in {log_dir}"
                                     if args.board else ""))
    return 0


# --- the board's configurations ----------------------------------------------------------
def runs_log_dir(jobs: list[Job]) -> tuple[Path | None, str | None]:
    """The SwanLab folder the runs logged to (logger.log_dir from where each was started),
    or None and what is wrong: runs that logged to several folders, or none."""
    folders = set()
    for job in jobs:
        config = _hydra(job, "config.yaml")
        log_dir = OmegaConf.select(config, "logger.log_dir") if config else None
        if log_dir is None or OmegaConf.select(config, "logger.mode") == "disabled":
            continue
        started_in = OmegaConf.select(_hydra(job, "hydra.yaml") or {}, "hydra.runtime.cwd")
        folders.add((Path(started_in or ".") / log_dir).resolve())
    if len(folders) != 1:
        return None, ("the runs logged to no SwanLab folder" if not folders else
                      f"the runs logged to {len(folders)} SwanLab folders "
                      f"({', '.join(sorted(map(str, folders)))})")
    return folders.pop(), None


def _hydra(job: Job, name: str) -> Any:
    path = job.path / ".hydra" / name
    return OmegaConf.load(path) if path.is_file() else None


def write_board_configurations(jobs: list[Job], log_dir: Path) -> list[str]:
    """For each configuration of `jobs` (its runs' name without the seed), experiments in
    the SwanLab folder `log_dir` whose curves are the mean over its completed seeds and,
    with two seeds or more, the 95% bootstrap band of that mean (as curves.png): the
    evaluation return, the best one, the training episodes' return (per logger.every_steps,
    as the runs log it) and the final evaluation. Returns the experiments' names."""
    from dqn.run.swanlab_worker import configuration_colour
    from dqn.run.tracking import SwanLabConfig, SwanLabTracker, close_trackers, dashboard_project

    groups = configurations(jobs)
    replace_earlier(log_dir, set(groups))
    cfg = SwanLabConfig(mode="local", log_dir=str(log_dir),
                        project=dashboard_project(log_dir) or "dqn")
    written = []
    for label, group in groups.items():
        curves = [run_curves(job) for job in group]
        config = run_config(log_dir, group)
        seeds = ", ".join(str(job.seed) for job in group)
        sources = [f"seed {job.seed}: run {job.summary.get('run_name', '?')!r} in {job.path}"
                   for job in group]
        kinds = [(MEAN, 0.25, "mean")] + ([(LOW, 0.8, "low"), (HIGH, 0.8, "high")]
                                           if len(group) > 1 else [])
        for kind, lightness, statistic in kinds:
            name = f"{label} · {_kind(kind, len(group))}"
            shown = {AGGREGATE: _kind(kind, len(group)), **config, "seed": seeds}
            tracker = SwanLabTracker(cfg, name, shown, group=label,
                                     colour=configuration_colour(label, lightness))
            tracker.log_console([
                f"{_kind(kind, len(group))} of configuration {label}, over seeds {seeds}",
                *sources,
                "eval/return_mean and eval/best_return: each run's metrics.csv; "
                "train/episode_return: its episodes.csv, the mean of the episodes ending in "
                "each logger.every_steps window; final/return_mean: its summary.json",
                "band: 95% percentile bootstrap of the mean over seeds (1,000 resamples), "
                "as curves.png draws it"])
            for step, values in aggregate(curves, statistic):
                tracker.log(values, step)
            tracker.finish()
            written.append(name)
    close_trackers()
    return written


def _kind(kind: str, seeds: int) -> str:
    return kind.format(n=seeds, s="" if seeds == 1 else "s")


def configurations(jobs: list[Job]) -> dict[str, list[Job]]:
    """Completed runs with evaluations, grouped by configuration: the run's dashboard name
    without its seed (`target=hard` for `target=hard · seed=0`), else its overrides that
    differ from the other runs'."""
    from dqn.run.swanlab_worker import configuration_of

    done = [job for job in jobs if job.status == "completed" and job.evaluations]
    shared = set.intersection(*(set(job.overrides) for job in done)) if done else set()
    groups: dict[str, list[Job]] = {}
    for job in done:
        label, _ = configuration_of(job.summary.get("run_name") or "")
        groups.setdefault(label or job.configuration(shared), []).append(job)
    return groups


def run_curves(job: Job) -> dict[str, dict[int, float]]:
    """A run's curves as the board shows them: {metric: {env step: value}}."""
    curves: dict[str, dict[int, float]] = {
        "eval/return_mean": {int(r["env_step"]): r["eval_return_mean"] for r in job.evaluations},
        "eval/best_return": {int(r["env_step"]): r["best_return"] for r in job.evaluations
                             if r.get("best_return") is not None}}
    config = _hydra(job, "config.yaml")
    every = int(OmegaConf.select(config, "logger.every_steps", default=None) or 1000) \
        if config else 1000
    windows: dict[int, list[float]] = {}
    episodes = job.path / "episodes.csv"
    if episodes.is_file():
        import csv

        with episodes.open(newline="") as file:
            for row in csv.DictReader(file):
                try:
                    step, value = int(row["env_step"]), float(row["return"])
                except (KeyError, TypeError, ValueError):
                    continue
                windows.setdefault(math.ceil(step / every) * every, []).append(value)
    curves["train/episode_return"] = {step: float(np.mean(v)) for step, v in windows.items()}
    final = (job.summary.get("final_eval") or {}).get("mean")
    if final is not None:
        curves["final/return_mean"] = {int(job.summary.get("env_steps") or 0): float(final)}
    return curves


def aggregate(curves: list[dict[str, dict[int, float]]],
              statistic: str) -> list[tuple[int, dict[str, float]]]:
    """The seeds' curves as one: at each step, the mean of the seeds that have a value
    there (statistic "mean"), or the low or high end of its 95% bootstrap CI. Each run's
    final evaluation is placed at the last step any of the seeds reached."""
    last = max((step for c in curves for step in c.get("final/return_mean", {})), default=0)
    by_step: dict[int, dict[str, float]] = {}
    for metric in sorted({m for c in curves for m in c}):
        series = [c.get(metric, {}) for c in curves]
        if metric == "final/return_mean":
            series = [{last: v} for s in series for v in s.values()]
            values = [v for s in series for v in s.values()]
            by_step.setdefault(last, {})[metric] = _statistic(values, statistic)
            continue
        for step in sorted(set().union(*series)):
            values = [s[step] for s in series if step in s]
            by_step.setdefault(step, {})[metric] = _statistic(values, statistic)
    return sorted(by_step.items())


def _statistic(values: list[float], statistic: str) -> float:
    if statistic == "mean":
        return float(np.mean(values))
    low, high = bootstrap_ci(values, resamples=1_000, statistic="mean")
    return low if statistic == "low" else high


def run_config(log_dir: Path, group: list[Job]) -> dict[str, Any]:
    """The config columns of the configuration's first run, as the board shows them (its
    SwanLab folder's files/config.yaml), or {} when the run has no folder there."""
    run_id = group[0].summary.get("swanlab_run_id")
    folders = sorted(log_dir.glob(f"run-*-{run_id}")) if run_id else []
    if not folders or not (folders[-1] / "files" / "config.yaml").is_file():
        return {}
    stored = yaml.safe_load((folders[-1] / "files" / "config.yaml").read_text()) or {}
    ordered = sorted(stored.items(), key=lambda item: (item[1] or {}).get("sort", 0))
    return {key: entry.get("value") for key, entry in ordered if isinstance(entry, dict)}


def replace_earlier(log_dir: Path, labels: set[str]) -> None:
    """Delete the board's experiments that this script wrote before for one of the
    configurations `labels` (named `<label> · ...`, with an `aggregate` config column), as
    the board's own delete button does, so that a new set replaces them."""
    database = log_dir / "runs.swanlab"
    if not database.is_file():
        return
    os.environ["SWANLAB_LOG_DIR"] = str(log_dir.resolve())
    from swanboard.controller.experiment import delete_experiment
    from swanboard.db import connect
    from swanboard.db.models import Experiment

    connect(path=str(log_dir.resolve()))
    for experiment in Experiment.select():
        if not any(experiment.name.startswith(f"{label} · ") for label in labels):
            continue
        config = log_dir / experiment.run_id / "files" / "config.yaml"
        try:
            ours = AGGREGATE in (yaml.safe_load(config.read_text()) or {})
        except (OSError, yaml.YAMLError):
            ours = not (log_dir / experiment.run_id).exists()
        if ours:
            if not (log_dir / experiment.run_id).exists():
                (log_dir / experiment.run_id).mkdir()  # the board's delete removes it
            delete_experiment(experiment.id)


if __name__ == "__main__":
    sys.exit(main())
