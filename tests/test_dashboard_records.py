"""What the local board (`swanlab watch`) is given for a run, read back through its HTTP API:
the experiments table's summaries equal to what was logged, a config a person can read, the
run's console log and its environment (docs/dashboard.md, "What the board is given"). The
same, seen in a browser after a real sweep: tests/test_board_browser.py."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from dqn.run.swanlab_worker import board_metadata
from dqn.run.tracking import SwanLabConfig, build_tracker, close_trackers, dashboard_config
from tests.conftest import run_python
from tests.dashboard import dashboard

REPO = Path(__file__).resolve().parents[1]

STORED = {  # a flattened stored config, as dqn.seed_run gives it to the tracker
    "network.hidden_sizes": [64], "head.dueling": False, "target.period": 32,
    "env.id": "CartPole-v1", "env.max_episode_steps": None, "logger.mode": "local",
    "logger.log_dir": "outputs/swanlog", "logger.project": "dqn",
    "logger.experiment_name": None, "logger.every_steps": 500, "train.gamma": 0.99,
    "seed": 1, "num_seeds": 1, "resume": None,
    "options.network": "mlp", "options.head": "q", "options.target": "hard",
    "options.env": "gym", "options.logger": "swanlab",
    "choices.experiment": None, "choices.rainbow": "none", "choices.network": "mlp",
    "choices.head": "q", "choices.target": "hard", "choices.env": "gym",
    "choices.logger": "swanlab",
}


def test_the_config_shows_each_setting_once_swept_keys_and_options_first():
    shown = dashboard_config(STORED, "train.gamma=0.99 · seed=1")
    assert list(shown)[:6] == ["train.gamma", "seed", "rainbow", "network", "head", "target"]
    assert not [key for key in shown if key.startswith(("choices.", "options."))]
    assert "logger.log_dir" not in shown and "resume" not in shown and "env" not in shown
    assert shown["env.max_episode_steps"] == "null" and shown["logger.every_steps"] == 500
    assert "experiment" not in shown  # a preset that was not used is no column
    single = dashboard_config(STORED, "seed=1,target.period=32")  # a single run's overrides
    assert list(single)[:2] == ["seed", "target.period"]
    swept_group = dashboard_config(STORED, "env=acrobot · seed=1")  # not a column otherwise
    assert list(swept_group)[:2] == ["env", "seed"] and swept_group["env"] == "acrobot"


def test_the_environment_card_gets_the_keys_the_board_reads():
    metadata = {"_version": 2, "runtime": {"hostname": "node7", "os": "Linux-6",
                                           "os_pretty": "Debian 12", "python_version": "3.11.7",
                                           "command": "python -m dqn.run.swanlab_worker 7"},
                "hardware": {"cpu": {"brand": "EPYC", "logical_count": 16},
                             "memory": {"total": 64},
                             "accelerators": [{"vendor": "nvidia", "version": "550.1",
                                               "cuda_version": "12.4", "devices": [
                                                   {"name": "H100", "memory": 80,
                                                    "memory_unit": "GB"}]}]},
                "git": {"remote_url": None, "branch": "main", "commit": "abc123"}}
    process = {"pid": 42, "command": "python -m dqn.train seed=1", "cwd": "/work"}
    flat = board_metadata(metadata, process)
    assert flat["hostname"] == "node7" and flat["os"] == "Debian 12" and flat["pid"] == 42
    assert flat["command"] == "python -m dqn.train seed=1"  # training's, not the worker's
    assert flat["cpu"] == {"brand": "EPYC", "cores": 16} and flat["memory"] == 64
    assert flat["git_info"] == ["main", "abc123"] and "git_remote" not in flat
    assert flat["gpu"]["nvidia"]["type"] == ["H100"] and flat["gpu"]["nvidia"]["memory"] == [80]


def test_the_board_shows_the_values_config_log_and_environment_of_a_run(tmp_path, capfd):
    log_dir = tmp_path / "swanlog"
    cfg = SwanLabConfig(mode="local", log_dir=str(log_dir))
    logger, root = logging.getLogger("dqn"), logging.getLogger()
    tracker = build_tracker(cfg, "target=hard · seed=1", STORED)
    saved = root.handlers  # as the progress bar's logging redirect keeps them, then puts back
    root.handlers = list(saved)
    logger.warning("a line the Logs tab shows")
    logged = [{"train/episode_return": 10.0, "train/epsilon": 0.5, "perf/sps": 900.0},
              {"train/episode_return": 20.0, "train/epsilon": 0.25, "perf/sps": 1000.0}]
    for step, metrics in enumerate(logged, start=1):
        tracker.log(metrics, step * 500)
    tracker.log({"eval/return_mean": 30.0, "eval/best_return": 30.0}, 1000)
    tracker.finish()
    root.handlers = saved  # with the finished run's log handler in it again
    logger.warning("a line after the run finished")
    close_trackers()
    logger.warning("a line after SwanLab's process ended")
    root.handlers = [h for h in root.handlers if h is not tracker.console]
    assert "Logging error" not in capfd.readouterr().err
    with dashboard(log_dir) as board:
        [experiment] = board.experiments()
        last = {**logged[-1], "eval/return_mean": 30.0, "eval/best_return": 30.0}
        assert board.summaries() == {"target=hard · seed=1": last}  # the table's summaries
        assert board.card_summary(experiment["id"]) == last  # the run's card
        config = board.experiment(experiment["id"])["config"]
        assert list(config)[:3] == ["target", "seed", "rainbow"]
        assert config["env.max_episode_steps"]["value"] == "null"
        lines = board.log_lines(experiment["id"])
        assert any(line.endswith("a line the Logs tab shows") for line in lines), lines
        assert not any("after the run finished" in line for line in lines)
        system = board.experiment(experiment["id"])["system"]
        assert system["pid"] == os.getpid() and system["hostname"]
        assert system["executable"] == sys.executable and system["os"]


def fake_run(root: Path, seed: int, target: str, evals: dict[int, float], final: float,
             episodes: list[tuple[int, float]]) -> None:
    """A finished sweep job's folder, as scripts/compare.py reads it."""
    path = root / f"{seed}_{target}"
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text(f"- seed={seed}\n- target={target}\n")
    (path / ".hydra" / "config.yaml").write_text(
        "env:\n  id: CartPole-v1\nlogger:\n  every_steps: 1000\n")
    (path / "summary.json").write_text(json.dumps({
        "status": "completed", "run_name": f"target={target} · seed={seed}", "seed": seed,
        "env_steps": max(evals), "final_eval": {"mean": final, "std": 0.0}}))
    (path / "metrics.csv").write_text(
        "env_step,episodes,wall_seconds,eval_return_mean,eval_return_std,eval_return_min,"
        "eval_return_max,best_return,epsilon\n"
        + "".join(f"{s},0,1.0,{r},0,{r},{r},{r},0.1\n" for s, r in evals.items()))
    (path / "episodes.csv").write_text(
        "episode,env_step,return,length\n"
        + "".join(f"{i},{s},{r},{int(r)}\n" for i, (s, r) in enumerate(episodes)))


def test_compare_board_draws_each_configuration_as_its_mean_and_band(tmp_path):
    sweep, log_dir = tmp_path / "sweep", tmp_path / "swanlog"
    fake_run(sweep, 0, "hard", {1000: 10.0, 2000: 100.0}, 120.0, [(400, 10.0), (900, 20.0),
                                                                  (1500, 50.0)])
    fake_run(sweep, 1, "hard", {1000: 30.0, 2000: 300.0}, 320.0, [(800, 30.0), (2000, 90.0)])
    fake_run(sweep, 0, "soft", {1000: 5.0, 2000: 50.0}, 60.0, [(1000, 8.0)])
    command = [str(REPO / "scripts" / "compare.py"), str(sweep), "--board",
               "--log-dir", str(log_dir)]
    for _ in range(2):  # a second time replaces the first set
        result = run_python(tmp_path, *command)
        assert result.returncode == 0, result.stderr
    assert "swanlab watch" in (sweep / "summary.md").read_text()  # the summary links them
    with dashboard(log_dir) as board:
        named = {e["name"]: e for e in board.experiments()}
        assert sorted(named) == ["target=hard · mean of 2 seeds", "target=hard · mean's 95% "
                                 "CI, high", "target=hard · mean's 95% CI, low",
                                 "target=soft · mean of 1 seed"]  # one seed: no band
        mean = named["target=hard · mean of 2 seeds"]["id"]
        assert board.series(mean, "eval/return_mean") == [(1000, 20.0), (2000, 200.0)]
        assert board.series(mean, "train/episode_return") == [(1000, 22.5), (2000, 70.0)]
        assert board.summaries()["target=hard · mean of 2 seeds"]["final/return_mean"] == 220.0
        low = board.series(named["target=hard · mean's 95% CI, low"]["id"], "eval/return_mean")
        high = board.series(named["target=hard · mean's 95% CI, high"]["id"],
                            "eval/return_mean")
        assert [v for _, v in low] == [10.0, 100.0] and [v for _, v in high] == [30.0, 300.0]
        config = board.experiment(mean)["config"]
        assert config["aggregate"]["value"] == "mean of 2 seeds"
        assert config["seed"]["value"] == "0, 1"
        assert any("seed 1: run 'target=hard · seed=1'" in line
                   for line in board.log_lines(mean))


OLD_RECORD = """
import swanlab
swanlab.init(mode="local", log_dir="swanlog", project="dqn", experiment_name="old run")
swanlab.log({"a": 1.0, "b": 2.0, "c": 3.0}, step=1)
swanlab.finish()
"""


def test_repair_board_renumbers_runs_logged_the_old_way(tmp_path):
    assert run_python(tmp_path, "-c", OLD_RECORD).returncode == 0  # swanlab's own numbering
    log_dir = tmp_path / "swanlog"
    with dashboard(log_dir) as board:
        assert board.summaries() == {"old run": {"a": "TypeError", "b": 1.0, "c": 2.0}}
    repair = [str(REPO / "scripts" / "repair_board.py"), str(log_dir)]
    result = run_python(tmp_path, *repair)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1 run renumbered: old run"
    assert run_python(tmp_path, *repair).stdout.strip().endswith("already reads right")
    with dashboard(log_dir) as board:
        [experiment] = board.experiments()
        assert board.summaries() == {"old run": {"a": 1.0, "b": 2.0, "c": 3.0}}
        assert board.card_summary(experiment["id"]) == {"a": 1.0, "b": 2.0, "c": 3.0}
        assert board.series(experiment["id"], "c") == [(1, 3.0)]
