"""Plot a training run's learning curves into a PNG.

    python scripts/plot_run.py RUN_DIR                  # writes RUN_DIR/curves.png
    python scripts/plot_run.py RUN_DIR --out run.png

Top: the return of every training episode with its 100-episode moving average
(episodes.csv). Bottom: the greedy evaluation mean over env steps with its ± std band
(metrics.csv), and the final evaluation of the best checkpoint (summary.json). The title
names the run and its key settings, read from its checkpoint.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from dqn.cli.args import ArgumentParser

WINDOW = 100
# (label, key in the checkpoint's flattened config) of the settings named in the title
SETTINGS = (("", "env.id"), ("net", "network.hidden_sizes"), ("ε", "choices.exploration"),
            ("target", "choices.target"), ("", "choices.optimizer"), ("lr", "optimizer.lr"),
            ("γ", "train.gamma"), ("double Q", "train.double_q"), ("seed", "seed"))


class RunError(Exception):
    """RUN_DIR lacks what a plot needs; the message is one line for the user."""


def read_csv(path: Path) -> dict[str, np.ndarray]:
    """Each column of a CSV file as a float array (empty arrays for a header only)."""
    if not path.is_file():
        raise RunError(f"{path} is missing: is {path.parent} a run directory of "
                       "python -m dqn.train?")
    with path.open() as file:
        reader = csv.DictReader(file)
        rows = list(reader)
        return {name: np.array([float(row[name]) for row in rows])
                for name in reader.fieldnames or []}


def moving_average(values: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """Mean of the last `window` values at each index (fewer at the start)."""
    sums = np.concatenate([[0.0], np.cumsum(values)])
    ends = np.arange(1, len(values) + 1)
    counts = np.minimum(ends, window)
    return (sums[ends] - sums[ends - counts]) / counts


def run_config(run_dir: Path) -> dict[str, Any]:
    """The config stored in the run's checkpoint, flattened; empty without a checkpoint."""
    from dqn.run.checkpoint import load_checkpoint  # torch is only needed here
    from dqn.run.tracking import flatten

    for name in ("best.pt", "last.pt"):
        path = run_dir / "checkpoints" / name
        if path.is_file():
            return flatten(load_checkpoint(path).get("config") or {})
    return {}


def title(run_dir: Path, summary: dict[str, Any], config: dict[str, Any]) -> str:
    name = summary.get("run_name") or run_dir.name
    settings = [f"{label} {_text(config[key])}".strip() for label, key in SETTINGS
                if key in config]
    steps = summary.get("env_steps")
    if steps is not None:
        settings.append(f"{steps:,} env steps")
    return f"{name}\n{' | '.join(settings)}"


def _text(value: Any) -> str:
    return ("on" if value else "off") if isinstance(value, bool) else str(value)


def plot(run_dir: Path, out: Path) -> None:
    episodes = read_csv(run_dir / "episodes.csv")
    evals = read_csv(run_dir / "metrics.csv")
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}

    figure = Figure(figsize=(10, 7.5), layout="constrained")
    top, bottom = figure.subplots(2, 1)
    returns = episodes["return"]
    top.plot(episodes["episode"], returns, color="tab:blue", alpha=0.3, linewidth=0.8,
             label="episode return")
    top.plot(episodes["episode"], moving_average(returns), color="tab:blue", linewidth=2,
             label=f"mean of the last {WINDOW} episodes")
    top.set(xlabel="training episode", ylabel="return (ε-greedy)")
    top.legend(loc="upper left")

    mean, std = evals["eval_return_mean"], evals["eval_return_std"]
    bottom.fill_between(evals["env_step"], mean - std, mean + std, color="tab:orange",
                        alpha=0.25, label="± std")
    bottom.plot(evals["env_step"], mean, color="tab:orange", marker="o", markersize=3,
                label="greedy evaluation mean")
    final = summary.get("final_eval")
    if final:
        bottom.axhline(final["mean"], color="tab:green", linestyle="--", label=(
            f"best checkpoint, final: {final['mean']:.1f} ± {final['std']:.1f} over "
            f"{final['episodes']} episodes"))
    bottom.set(xlabel="env step", ylabel="return (greedy)")
    bottom.legend(loc="best")
    for axes in (top, bottom):
        axes.grid(alpha=0.3)
    figure.suptitle(title(run_dir, summary, run_config(run_dir)))
    figure.savefig(out, dpi=100)


def main() -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run directory of python -m dqn.train")
    parser.add_argument("--out", type=Path, help="the PNG to write (default RUN_DIR/curves.png)")
    args = parser.parse_args()
    out = args.out or args.run_dir / "curves.png"
    try:
        if not args.run_dir.is_dir():
            raise RunError(f"{args.run_dir} is not a directory: pass a run directory of "
                           "python -m dqn.train")
        plot(args.run_dir, out)
    except RunError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
