"""Compare runs: rebuild summary.csv, summary.md and curves.png from sweep or run folders.

    python scripts/compare.py outputs/multirun/2026-11-21/10-00-00
    python scripts/compare.py outputs/multirun/A outputs/multirun/B --out outputs/compare
"""

from __future__ import annotations

import sys
from pathlib import Path

from dqn.cli.args import ArgumentParser
from dqn.cli.sweeps import find_jobs, summary_markdown, write_summary


def main() -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="sweep or run directories")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write (default: the directory, if only one is given; "
                             "else outputs/compare)")
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
    out = args.out or (args.dirs[0] if len(args.dirs) == 1 else Path("outputs/compare"))
    try:
        write_summary(jobs, out)
    except OSError as error:
        print(f"error: cannot write the summary to {out}: {error.strerror}", file=sys.stderr)
        return 1
    print(summary_markdown(jobs))
    print(f"{len(jobs)} runs; wrote {out / 'summary.csv'}, {out / 'summary.md'} and "
          f"{out / 'curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
