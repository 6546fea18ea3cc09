"""Repair the local SwanLab board's records of runs logged before dqn numbered their metric
folders the board's way, so that its experiments table shows each run's own summaries.

    python scripts/repair_board.py outputs/swanlog

swanlab 0.10.3 numbers a run's metric folders (RUN/logs/N/) from 1; swanboard 0.1.10's
experiments table reads metric k from folder k, counting from 0, so every summary column
showed the value of the metric before it ("TypeError" in the first). Runs logged by dqn
since number them from 0 (dqn/run/swanlab_worker.py). This renumbers the older ones' folders
and the board's record of them; values are not touched. Run it while nothing is logging to
the folder; running it again changes nothing. See docs/dashboard.md.
"""

from __future__ import annotations

import sqlite3
import sys
from contextlib import closing
from pathlib import Path

from dqn.cli.args import ArgumentParser


def main() -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log_dir", type=Path, help="the SwanLab folder (swanlab watch LOG_DIR)")
    args = parser.parse_args()
    database = args.log_dir / "runs.swanlab"
    if not database.is_file():
        print(f"error: {args.log_dir} holds no local board (no runs.swanlab)", file=sys.stderr)
        return 2
    try:
        repaired = repair(args.log_dir)
    except (OSError, sqlite3.Error) as error:
        print(f"error: cannot repair {args.log_dir}: {error}", file=sys.stderr)
        return 1
    count = f"{len(repaired)} run{'' if len(repaired) == 1 else 's'} renumbered"
    print(count + (f": {', '.join(repaired)}" if repaired else "; every run already reads right"))
    return 0


def repair(log_dir: Path) -> list[str]:
    """Renumber the metric folders of every run in `log_dir` whose folders do not match the
    board's numbering (folder = sort); returns those runs' names."""
    repaired = []
    with closing(sqlite3.connect(log_dir / "runs.swanlab")) as board:
        experiments = board.execute("SELECT id, name, run_id FROM experiment").fetchall()
        for experiment_id, name, run_id in experiments:
            tags = board.execute("SELECT id, folder, sort FROM tag WHERE experiment_id = ? "
                                 "ORDER BY sort", (experiment_id,)).fetchall()
            moves = [(tag_id, folder, str(sort)) for tag_id, folder, sort in tags
                     if folder is not None and folder != str(sort)]
            if not moves:
                continue
            run_dir = log_dir / run_id
            for kind in ("logs", "media"):  # through temporary names: 1 -> 0 while 2 -> 1
                for _, old, new in moves:
                    if (run_dir / kind / old).exists():
                        (run_dir / kind / old).rename(run_dir / kind / f".renumber-{new}")
                for _, _, new in moves:
                    if (run_dir / kind / f".renumber-{new}").exists():
                        (run_dir / kind / f".renumber-{new}").rename(run_dir / kind / new)
            with board:
                board.executemany("UPDATE tag SET folder = ? WHERE id = ?",
                                  [(new, tag_id) for tag_id, _, new in moves])
            repaired.append(name)
    return repaired


if __name__ == "__main__":
    sys.exit(main())
