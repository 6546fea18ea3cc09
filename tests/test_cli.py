"""`python -m dqn.train` as a user runs it: a real training run that SwanLab's dashboard
lists, a crashed run recorded as crashed, online mode without a key, and user mistakes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_python
from tests.dashboard import dashboard

SMALL_RUN = ["train.total_steps=2000", "buffer.learning_starts=500", "eval.every_steps=1000",
             "eval.episodes=3", "eval.final_episodes=5", "logger.every_steps=500",
             "network.hidden_sizes=[32,32]"]
CURVES = {"train/episode_return", "train/episode_length", "train/epsilon", "train/loss",
          "train/q_mean", "eval/return_mean", "eval/return_std", "eval/best_return",
          "perf/sps"}


def dqn_train(cwd: Path, *args: str, env: dict[str, str] | None = None,
              code: str | None = None) -> subprocess.CompletedProcess:
    """Run `python -m dqn.train ARGS` in `cwd` (or `code` with ARGS as its sys.argv)."""
    command = ["-m", "dqn.train", *args] if code is None else ["-c", code, *args]
    return run_python(cwd, *command, env=env)


CRASHING = """
import sys
import dqn.agent
import dqn.train
def explode(self, batch):
    raise RuntimeError("exploded on purpose")
dqn.agent.Agents.update = explode
sys.argv[0] = "dqn.train"
dqn.train.main()
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, object]:
    """Three runs into one SwanLab directory: a normal one recording a video, a crash, online
    without a key."""
    cwd = tmp_path_factory.mktemp("cli")
    no_key = {"SWANLAB_API_KEY": "", "HOME": str(cwd)}
    return {
        "cwd": cwd,
        "ok": dqn_train(cwd, *SMALL_RUN, "seed=3", "video.episodes=1", "video.max_steps=30",
                        "hydra.run.dir=runs/ok"),
        "crash": dqn_train(cwd, *SMALL_RUN, "hydra.run.dir=runs/crash", code=CRASHING),
        "online": dqn_train(cwd, *SMALL_RUN, "logger.mode=online", "hydra.run.dir=runs/online",
                            env=no_key),
    }


def test_training_run_leaves_its_artefacts(runs):
    result, run_dir = runs["ok"], runs["cwd"] / "runs" / "ok"
    assert result.returncode == 0, result.stderr
    assert (run_dir / "checkpoints" / "best.pt").is_file()
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "videos" / "best-episode-0.mp4").stat().st_size > 0
    assert (run_dir / "train.log").read_text().count("eval") >= 2
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["seed"] == 3
    assert summary["env_steps"] == 2000 and summary["final_eval"]["episodes"] == 5
    assert len((run_dir / "metrics.csv").read_text().splitlines()) == 1 + 2  # header + evals
    assert "SwanLab" not in result.stderr  # no tracker warning on a healthy run
    last_line = (result.stdout + result.stderr).strip().splitlines()[-1]
    assert str(run_dir.resolve()) in last_line and "best.pt" in last_line


def test_dashboard_lists_every_run_with_its_curves_and_state(runs):
    assert runs["crash"].returncode != 0
    assert runs["online"].returncode == 0, runs["online"].stderr
    run_ids = {name: json.loads((runs["cwd"] / "runs" / name / "summary.json").read_text())
               ["swanlab_run_id"] for name in ("ok", "crash", "online")}
    with dashboard(runs["cwd"] / "outputs" / "swanlog") as board:
        listed = board.experiments()
        by_run = {name: next(e for e in listed if e["run_id"].endswith(run_id))
                  for name, run_id in run_ids.items()}
        assert len(listed) == 3
        ok = by_run["ok"]
        assert "seed=3" in ok["name"]  # named after its overrides
        assert ok["status"] == 1 and by_run["online"]["status"] == 1
        assert by_run["crash"]["status"] == -1
        assert CURVES <= board.metric_keys(ok["id"])
        assert [step for step, _ in board.series(ok["id"], "eval/return_mean")] == [1000, 2000]
        [(step, files)] = board.series(ok["id"], "video/best")  # the GIF of the best model
        assert step == 2000 and files[0].endswith(".gif")
        assert ok["config"]["train.total_steps"]["value"] == 2000  # flattened config columns
        assert ok["config"]["target"]["value"] == "hard"  # the option chosen, once
    summary = json.loads((runs["cwd"] / "runs" / "crash" / "summary.json").read_text())
    assert summary["status"] == "failed" and "exploded on purpose" in summary["error"]


def test_online_without_key_warns_once_and_logs_locally(runs):
    output = runs["online"].stdout + runs["online"].stderr
    assert output.count("logger.mode=online but no SwanLab API key") == 1
    summary = json.loads((runs["cwd"] / "runs" / "online" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["swanlab_run_id"]


def test_help_lists_groups(tmp_path):
    result = dqn_train(tmp_path, "--help")
    assert result.returncode == 0
    groups = result.stdout.split("== Config groups")[1].split("== Config of")[0]
    for line in ("exploration:", "  * linear ", "    multiplicative ", "experiment:",
                 "    pqn_minatar ", "rainbow:", "    without_c51 "):
        assert f"\n{line}" in groups
