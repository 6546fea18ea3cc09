"""Reproduce the published DQN tables: train every preset of a suite over N seeds and write
one markdown table, ours beside the published figures.

    python scripts/reproduce.py                      # the classic suite, 10 seeds each
    python scripts/reproduce.py --quick              # a rough version in a few minutes
    python scripts/reproduce.py --seeds 5 --jobs 2 --out outputs/reproduce
    python scripts/reproduce.py --tabulate           # the table again from the runs in --out

Each preset trains its seeds together in one process (num_seeds), `--jobs` presets at a
time; every agent's score is the final evaluation of its best checkpoint over 100 fresh
episodes. The table gives, per env: the preset and its env-step budget, the solve rate
(final score >= the env's registered reward threshold), the mean, interquartile mean and
95% bootstrap CI of the final scores, the wall time per seed, and the published figures
with their sources. Runs land in --out (kept), the table in --out/table.md.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's dqn, not an installed one

from dqn.cli.args import ArgumentParser, positive_int  # noqa: E402 - after pointing sys.path at the checkout
from dqn.cli.sweeps import bootstrap_ci, iqm  # noqa: E402

ZOO = ("RL Zoo DQN, benchmark.md (rl-baselines3-zoo, one run, eval of the trained agent; "
       "hyperparams/dqn.yml at 4c69c8c)")
CLEANRL = ("CleanRL dqn.py, docs/rl-algorithms/dqn.md (average episodic return in "
           "training, 500k steps)")


@dataclass
class Preset:
    env: str
    experiment: str
    budget: int  # env steps (the preset's train.total_steps)
    threshold: float  # the env's registered reward threshold
    published: dict[str, str] = field(default_factory=dict)  # source -> figure


SUITES = {
    "classic": [
        Preset("CartPole-v1", "cartpole", 50_000, 475.0,
               {ZOO: "500.0 ± 0.0 at 50k", CLEANRL: "488.7 ± 16.1 at 500k"}),
        Preset("Acrobot-v1", "acrobot", 100_000, -100.0,
               {ZOO: "-76.6 ± 11.8 at 100k", CLEANRL: "-91.5 ± 7.2 at 500k"}),
        Preset("MountainCar-v0", "mountaincar", 120_000, -110.0,
               {ZOO: "-100.8 ± 9.9 at 120k", CLEANRL: "-195.0 ± 8.5 at 500k"}),
        Preset("LunarLander-v3", "lunarlander", 100_000, 200.0,
               {ZOO: "154.4 ± 79.2 at 100k (LunarLander-v2)"}),
    ],
}


def train(preset: Preset, seeds: int, out: Path, overrides: list[str]) -> dict:
    """One process training the preset's seeds 0..seeds-1 together; the agents' scores."""
    job = out / preset.experiment
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "dqn.train", f"experiment={preset.experiment}",
         f"num_seeds={seeds}", "logger=none", f"hydra.run.dir={job}", *overrides],
        cwd=REPO, capture_output=True, text=True)
    outcome = collect(preset, seeds, out)
    outcome["wall"] = time.perf_counter() - start
    if result.returncode != 0:
        outcome["error"] = (result.stderr.strip().splitlines() or ["?"])[-1]
    return outcome


def collect(preset: Preset, seeds: int, out: Path) -> dict:
    """The scores of the preset's finished runs in `out` (its job's wall time: the longest
    agent's)."""
    job = out / preset.experiment
    runs = [job] if seeds == 1 else [job / f"seed_{seed}" for seed in range(seeds)]
    finals, steps, walls = [], [], []
    for run in runs:
        summary_file = run / "summary.json"
        summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
        if summary.get("status") == "completed":
            finals.append(summary["final_eval"]["mean"])
            steps.append(summary["env_steps"])
            walls.append(summary["wall_seconds"])
    return {"finals": finals, "steps": max(steps, default=0), "wall": max(walls, default=0.0),
            "error": "" if finals else f"no completed run in {job}"}


def row(preset: Preset, seeds: int, outcome: dict) -> str:
    finals = outcome["finals"]
    if not finals:
        return (f"| {preset.env} | experiment={preset.experiment} | | failed: "
                f"{outcome['error']} | | | | | |")
    low, high = bootstrap_ci(finals)
    solved = sum(score >= preset.threshold for score in finals)
    published = "; ".join(f"{figure} ({source.split(',')[0]})"
                          for source, figure in preset.published.items())
    return (f"| {preset.env} | experiment={preset.experiment} | {outcome['steps']:,} | "
            f"{solved}/{len(finals)} (>= {preset.threshold:g}) | {statistics.mean(finals):.1f} | "
            f"**{iqm(finals):.1f}** | [{low:.1f}, {high:.1f}] | "
            f"{outcome['wall'] / seeds:.0f} s | {published} |")


def main() -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="classic", choices=sorted(SUITES),
                        help="which presets (default: classic)")
    parser.add_argument("--seeds", type=positive_int, default=None,
                        help="seeds 0..N-1 per preset (default 10, quick 2)")
    parser.add_argument("--jobs", type=positive_int, default=2,
                        help="presets at a time (default 2)")
    parser.add_argument("--quick", action="store_true",
                        help="a tenth of each budget and 2 seeds: a rough check in minutes")
    parser.add_argument("--out", type=Path, default=Path("outputs/reproduce"),
                        help="where the runs and table.md go (default outputs/reproduce)")
    parser.add_argument("--only", default=None,
                        help="comma-separated experiment names of the suite to run")
    parser.add_argument("--tabulate", action="store_true",
                        help="train nothing: write the table from the runs already in --out")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every preset")
    args = parser.parse_args()
    presets = SUITES[args.suite]
    if args.only:
        names = args.only.split(",")
        unknown = sorted(set(names) - {p.experiment for p in presets})
        if unknown:
            parser.error(f"--only: not in the {args.suite} suite: {', '.join(unknown)}")
        presets = [p for p in presets if p.experiment in names]
    seeds = args.seeds or (2 if args.quick else 10)
    overrides = list(args.overrides)
    budgets = {p.experiment: p.budget // 10 if args.quick else p.budget for p in presets}
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if args.tabulate:
        outcomes = [collect(p, seeds, out) for p in presets]
    else:
        with ThreadPoolExecutor(args.jobs) as pool:
            outcomes = list(pool.map(
                lambda p: train(p, seeds, out, [f"train.total_steps={budgets[p.experiment]}",
                                                *overrides]), presets))
    lines = ["| env | preset | env steps | solved | final: mean | IQM | 95% CI | wall per "
             "seed | published |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [row(p, seeds, o) for p, o in zip(presets, outcomes)]
    lines += ["", f"Final: the mean return of each seed's best checkpoint over 100 fresh "
                  f"episodes; IQM and CI over {seeds} seeds (CI: 95% percentile bootstrap of "
                  f"the IQM). Wall per seed: the preset's process time / seeds, {args.jobs} "
                  "preset(s) at a time. Sources:", f"- RL Zoo: {ZOO}", f"- CleanRL: {CLEANRL}",
              "", (f"{len(presets)} presets x {seeds} seeds, tabulated from {out}" if args.tabulate
                   else f"{len(presets)} presets x {seeds} seeds in "
                        f"{time.perf_counter() - started:.0f} s")
                  + f"; overrides: {' '.join(overrides) or '(none)'}"]
    table = "\n".join(lines) + "\n"
    (out / "table.md").write_text(table)
    print(table)
    print(f"wrote {out / 'table.md'}")
    return 0 if all(o["finals"] for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
