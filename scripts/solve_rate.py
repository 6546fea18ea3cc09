"""How often a config solves its env: train seeds one process each, report the final
evaluation of each best checkpoint, the solve rate and the median wall time.

    python scripts/solve_rate.py                         # the default, seeds 0-9
    python scripts/solve_rate.py --seeds 5 --jobs 2 target=soft
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dqn.cli.args import ArgumentParser, positive_int


def train_seed(seed: int, overrides: list[str], out: Path) -> dict:
    """One `python -m dqn.train` process; its summary plus the process wall time."""
    run_dir = out / f"seed{seed}"
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "dqn.train", f"seed={seed}", "logger=none",
         f"hydra.run.dir={run_dir}", *overrides], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        return {"seed": seed, "wall": wall, "error": result.stderr.strip().splitlines()[-1:]}
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"seed": seed, "wall": wall, "final": summary["final_eval"]["mean"],
            "best_step": summary["best_eval_step"], "env_steps": summary["env_steps"]}


def main() -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=positive_int, default=10,
                        help="seeds 0..N-1 (default 10)")
    parser.add_argument("--jobs", type=positive_int, default=1,
                        help="processes at once (default 1)")
    parser.add_argument("--threshold", type=float, default=475.0,
                        help="final mean return that counts as solved (default 475)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every seed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="solve_rate_") as out, \
            ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda s: train_seed(s, args.overrides, Path(out)),
                             range(args.seeds)))
    print("| seed | final mean (100 ep.) | best eval step | env steps | wall s |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        if "error" in r:
            print(f"| {r['seed']} | failed: {r['error']} | | | {r['wall']:.1f} |")
        else:
            print(f"| {r['seed']} | {r['final']:.1f} | {r['best_step']} | {r['env_steps']} "
                  f"| {r['wall']:.1f} |")
    solved = sum(r.get("final", float("-inf")) >= args.threshold for r in rows)
    print(f"\nsolved {solved}/{len(rows)} (final mean >= {args.threshold:g}); median wall "
          f"{statistics.median(r['wall'] for r in rows):.1f} s per run, "
          f"{args.jobs} at a time; overrides: {' '.join(args.overrides) or '(none)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
