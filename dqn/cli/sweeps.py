"""Sweep summaries: one row per job, statistics per configuration, and learning curves.

Every job of a multirun refreshes the summary of its sweep directory when it ends, from
the files the jobs wrote (summary.json, metrics.csv, .hydra/), so a failed or killed job
cannot take the summary with it. `scripts/compare.py` rebuilds the same files for any
set of sweep or run directories.
"""

from __future__ import annotations

import csv
import fcntl
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from omegaconf import OmegaConf

SUMMARY_COLUMNS = ("job", "overrides", "seed", "status", "error", "best_eval_return",
                   "final_mean", "final_std", "steps_to_solve", "seconds_to_solve",
                   "wall_seconds")


@dataclass
class Job:
    """One training run, read back from its directory."""

    path: Path
    overrides: list[str]
    summary: dict[str, Any]
    threshold: float | None  # return that counts as solved
    evaluations: list[dict[str, float]] = field(default_factory=list)
    name: str = ""  # the job folder's name, and the agent's folder for num_seeds > 1
    env: str = "?"  # the env id it trained on

    @property
    def status(self) -> str:
        return self.summary.get("status", "missing")

    @property
    def seed(self) -> Any:
        return self.summary.get("seed", _override_value(self.overrides, "seed"))

    def configuration(self, shared: set[str] = frozenset()) -> str:
        """The job's overrides without the seed and without `shared` ones: jobs that
        differ only by seed share a configuration."""
        kept = [o for o in self.overrides
                if o.split("=", 1)[0].lstrip("+~") != "seed" and o not in shared]
        return " ".join(sorted(kept)) or "(all jobs alike)"

    @property
    def final_mean(self) -> float | None:
        return (self.summary.get("final_eval") or {}).get("mean")

    @property
    def solved(self) -> bool:
        return (self.final_mean is not None and self.threshold is not None
                and self.final_mean >= self.threshold)

    def first_solve(self) -> tuple[float | None, float | None]:
        """(env steps, seconds) at the first evaluation that reached the threshold: the
        confirmed solve when train.target_return was set, else read from metrics.csv."""
        if self.summary.get("solved_step") is not None:
            return self.summary["solved_step"], self.summary.get("solved_seconds")
        if self.threshold is None:
            return None, None
        for row in self.evaluations:
            if row["eval_return_mean"] >= self.threshold:
                return row["env_step"], row["wall_seconds"]
        return None, None

    def row(self) -> dict[str, Any]:
        steps, seconds = self.first_solve()
        final = self.summary.get("final_eval") or {}
        return {"job": self.name or self.path.name, "overrides": " ".join(self.overrides),
                "seed": self.seed, "status": self.status,
                "error": self.summary.get("error", ""),
                "best_eval_return": self.summary.get("best_eval_return"),
                "final_mean": final.get("mean"), "final_std": final.get("std"),
                "steps_to_solve": steps, "seconds_to_solve": seconds,
                "wall_seconds": self.summary.get("wall_seconds")}


def _override_value(overrides: list[str], key: str) -> str | None:
    for override in overrides:
        name, _, value = override.partition("=")
        if name.lstrip("+~") == key:
            return value
    return None


def find_jobs(directories: Iterable[Path]) -> list[Job]:
    """Every run below `directories`: folders holding a Hydra `.hydra/` record. A job
    that trained several seeds together (num_seeds) counts as its agents' folders."""
    jobs = []
    for directory in directories:
        found = {hydra_dir.parent for hydra_dir in Path(directory).glob("**/.hydra")}
        parents = {path.parent for path in found}
        runs = [path for path in found if path not in parents]
        jobs += [read_job(path, path.parent in found) for path in sorted(runs, key=_job_order)]
    return jobs


def _job_order(path: Path) -> tuple:
    """Sweep jobs (`N_overrides`) in job-number order, agents (`seed_S`) in seed order,
    other runs by path."""
    name = path.name.removeprefix("seed_")
    number, _, _ = name.partition("_")
    return (str(path.parent), int(number) if number.isdigit() else math.inf, path.name)


def read_job(path: Path, agent: bool = False) -> Job:
    """The run in `path` (`agent`: one of the seeds of a num_seeds job, named after the
    job's folder and its own)."""
    overrides_file = path / ".hydra" / "overrides.yaml"
    overrides = OmegaConf.load(overrides_file) if overrides_file.exists() else []
    summary = _read_summary(path / "summary.json")
    evaluations = _read_evaluations(path / "metrics.csv")
    name = f"{path.parent.name}/{path.name}" if agent else path.name
    config_file = path / ".hydra" / "config.yaml"
    env_id = (OmegaConf.select(OmegaConf.load(config_file), "env.id")
              if config_file.exists() else None)
    return Job(path, list(overrides or []), summary, _solve_threshold(env_id, summary),
               evaluations, name, env_id or "?")


def _read_summary(path: Path) -> dict[str, Any]:
    """A run's summary.json, or {} when there is none or it cannot be read (a run killed
    mid-write, a foreign file): the run is then listed without a status."""
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def _read_evaluations(path: Path) -> list[dict[str, float]]:
    """The rows of a run's metrics.csv that hold an evaluation (env_step and
    eval_return_mean as numbers); other rows and unreadable files are left out."""
    try:
        with path.open() as file:
            rows = list(csv.DictReader(file))
    except (OSError, csv.Error, UnicodeDecodeError):
        return []
    evaluations = []
    for row in rows:
        try:
            values = {k: float(v) for k, v in row.items() if k and v not in ("", None)}
        except (TypeError, ValueError):
            continue
        if "env_step" in values and "eval_return_mean" in values:
            evaluations.append(values)
    return evaluations


def _solve_threshold(env_id: str | None, summary: dict[str, Any]) -> float | None:
    """train.target_return if set, else the env's registered reward threshold."""
    if summary.get("target_return") is not None:
        return float(summary["target_return"])
    if env_id is None:
        return None
    try:
        import gymnasium

        threshold = gymnasium.spec(env_id).reward_threshold
    except Exception:  # noqa: BLE001 - an unknown id just means no threshold
        return None
    return None if threshold is None else float(threshold)


# --- statistics ------------------------------------------------------------------------
def iqm(values: Sequence[float]) -> float:
    """Interquartile mean: the mean of the middle 50% (whole values dropped each side)."""
    ordered = np.sort(np.asarray(values, dtype=float))
    cut = _quarter(len(ordered))
    return float(ordered[cut:len(ordered) - cut].mean())


def _quarter(count: int) -> int:
    """How many values the IQM drops at each end: a quarter, rounded down."""
    return int(math.floor(count * 0.25))


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95, resamples: int = 10_000,
                 seed: int = 0, statistic: str = "iqm") -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the IQM (statistic="iqm", as rliable
    reports it) or of the mean (statistic="mean"); seeded: same input, same CI."""
    data = np.asarray(values, dtype=float)
    if len(data) == 1:
        return float(data[0]), float(data[0])
    rng = np.random.default_rng(seed)
    samples = np.sort(data[rng.integers(0, len(data), size=(resamples, len(data)))], axis=1)
    cut = _quarter(len(data)) if statistic == "iqm" else 0
    estimates = samples[:, cut:len(data) - cut].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(estimates, [tail, 100 - tail])
    return float(low), float(high)


def _describe(values: list[float]) -> str:
    if not values:
        return "– | – | –"
    low, high = bootstrap_ci(values)
    return f"{np.mean(values):.1f} | {iqm(values):.1f} | [{low:.1f}, {high:.1f}]"


# --- the summary files -----------------------------------------------------------------
def board_command(sweep_dir: Path) -> str:
    """The command that shows each configuration of a sweep in the SwanLab board as one
    curve with its band across seeds."""
    return f"python scripts/compare.py {sweep_dir} --board"


def write_summary(jobs: list[Job], out: Path, board_hint: bool = True) -> None:
    """summary.csv, summary.md and curves.png for `jobs`, written atomically into `out`;
    with `board_hint`, summary.md ends with the command that puts its configurations in
    the board (where there are several)."""
    out.mkdir(parents=True, exist_ok=True)
    rows = [job.row() for job in jobs]
    with _atomic(out / "summary.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    with _atomic(out / "summary.md", "w") as file:
        file.write(summary_markdown(jobs))
        if board_hint and len(_by_configuration(jobs)) > 1:
            file.write(f"\nEach configuration as one curve (mean over seeds, with the 95% band "
                       f"of curves.png) in the SwanLab board: `{board_command(out)}`, then "
                       f"`swanlab watch` the runs' folder.\n")
    if any(job.evaluations for job in jobs):
        plot_curves(jobs, out / "curves.png")


def summary_markdown(jobs: list[Job]) -> str:
    """One row per configuration: seeds, solve rate, and mean | IQM | 95% bootstrap CI of
    the final evaluation and of the env steps to solve (over the seeds that solved). Jobs
    on several envs get one table per env, each with the env's own solve threshold."""
    header = ["| configuration | seeds | failed | solved | final eval: mean | IQM | 95% CI "
              "| steps to solve: mean | IQM | 95% CI |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    by_env: dict[str, list[Job]] = {}
    for job in jobs:
        by_env.setdefault(job.env, []).append(job)
    lines: list[str] = []
    for env, env_jobs in sorted(by_env.items()):
        thresholds = sorted({job.threshold for job in env_jobs if job.threshold is not None})
        note = ", ".join(f"{t:g}" for t in thresholds) or "none known"
        if len(by_env) > 1:
            lines += [f"### {env} (solved: final eval >= {note})", ""]
        lines += header
        for configuration, group in _by_configuration(env_jobs, jobs).items():
            done = [job for job in group if job.status == "completed"]
            finals = [job.final_mean for job in done if job.final_mean is not None]
            steps = [job.first_solve()[0] for job in done]
            steps = [float(s) for s in steps if s is not None]
            solved = sum(job.solved for job in done)
            lines.append(f"| {configuration} | {len(done)} | {len(group) - len(done)} "
                         f"| {solved}/{len(done)} | {_describe(finals)} | {_describe(steps)} |")
        lines.append("")
    thresholds = sorted({job.threshold for job in jobs if job.threshold is not None})
    note = ", ".join(f"{t:g}" for t in thresholds) or "none known"
    lines.append(f"Final eval: the best checkpoint's mean return over its final evaluation. "
                 f"Solved: final eval >= the solve threshold ({note}"
                 f"{', each env its own' if len(by_env) > 1 else ''}); steps to solve: the "
                 f"first evaluation reaching it. CI: 95% percentile bootstrap of the IQM.")
    return "\n".join(lines) + "\n"


def _by_configuration(jobs: list[Job], everyone: list[Job] | None = None) -> dict[str, list[Job]]:
    """Jobs grouped by configuration, labelled by the overrides in which they differ from
    the others of `everyone` (default: `jobs`)."""
    everyone = jobs if everyone is None else everyone
    shared = set.intersection(*(set(job.overrides) for job in everyone)) if everyone else set()
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.configuration(shared), []).append(job)
    return groups


def plot_curves(jobs: list[Job], path: Path) -> None:
    """Evaluation return against env steps: per configuration, the mean over seeds with a
    95% bootstrap band; one panel per env."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = sorted({job.env for job in jobs})
    figure, panels = plt.subplots(1, len(envs), figsize=(9 * min(len(envs), 2), 5),
                                  squeeze=False)
    for env, axes in zip(envs, panels[0]):
        env_jobs = [job for job in jobs if job.env == env]
        for configuration, group in _by_configuration(env_jobs, jobs).items():
            curves = [{int(r["env_step"]): r["eval_return_mean"] for r in job.evaluations}
                      for job in group if job.evaluations]
            if not curves:
                continue
            steps = sorted(set().union(*curves))
            mean, low, high = [], [], []
            for step in steps:
                values = [curve[step] for curve in curves if step in curve]
                ci = bootstrap_ci(values, resamples=1_000, statistic="mean")
                mean.append(float(np.mean(values)))
                low.append(ci[0])
                high.append(ci[1])
            line, = axes.plot(steps, mean, label=f"{configuration} (n={len(curves)})")
            axes.fill_between(steps, low, high, color=line.get_color(), alpha=0.2)
        axes.set_xlabel("env steps")
        axes.set_ylabel("greedy evaluation return")
        axes.set_title(f"{env}: mean over seeds, 95% bootstrap band" if len(envs) > 1 else
                       "Evaluation return: mean over seeds, 95% bootstrap band")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7, loc="best")
    figure.tight_layout()
    with _atomic(path, "wb") as file:
        figure.savefig(file, format="png", dpi=110)
    plt.close(figure)


class _atomic:
    """Open a temporary file beside `path`; rename it over `path` when closed cleanly."""

    def __init__(self, path: Path, mode: str, **kwargs: Any) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self.file = open(self.tmp, mode, **kwargs)

    def __enter__(self):
        return self.file

    def __exit__(self, kind, *rest) -> None:
        self.file.close()
        if kind is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def refresh_sweep_summary(sweep_dir: Path) -> None:
    """Rebuild the summary of a sweep directory; jobs ending together take turns."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(sweep_dir / ".summary.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            write_summary(find_jobs([sweep_dir]), sweep_dir)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def record_failure(run_dir: Path, seed: Any, error: BaseException) -> None:
    """A failed summary.json for a job that failed before training wrote its own."""
    path = run_dir / "summary.json"
    if path.exists():
        return
    path.write_text(json.dumps({"status": "failed", "seed": seed,
                                "error": f"{type(error).__name__}: {error}"}, indent=2) + "\n")


try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - hydra is a dependency
    Callback = object  # type: ignore[misc,assignment]


class SweepReport(Callback):
    """At the end of a multirun: one line with how many jobs succeeded and failed, and a
    non-zero exit status when any failed."""

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = find_jobs([sweep_dir])
        failed = sum(job.status != "completed" for job in jobs)
        print(f"sweep: {len(jobs) - failed} succeeded, {failed} failed; "
              f"summary: {sweep_dir / 'summary.md'}; configurations in the board: "
              f"{board_command(sweep_dir)}", file=sys.stderr)
        if failed:
            raise SystemExit(1)
