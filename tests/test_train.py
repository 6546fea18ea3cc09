"""The training loop in-process: run-directory contract, determinism, budgets, stopping."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

import dqn.loop
from dqn.config import stored_config, validate
from dqn.replay.uniform import UniformReplay
from dqn.run.checkpoint import load_checkpoint
from tests.conftest import compose_config


def run(tmp_path: Path, name: str, *overrides: str) -> tuple[float, Path]:
    cfg = compose_config("logger=none", *overrides)
    run_dir = tmp_path / name
    run_dir.mkdir()
    config = validate(cfg)
    return dqn.loop.train(config, run_dir, name, stored_config(config)), run_dir


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as file:
        return list(csv.DictReader(file))


def test_run_directory_contract(tmp_path, tiny_overrides):
    final, run_dir = run(tmp_path, "a", *tiny_overrides)
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert last["env_step"] == 600
    assert last["eval_return_mean"] == float(read_metrics(run_dir)[-1]["eval_return_mean"])
    assert best["env_step"] in (300, 600)
    assert best["config"]["network"]["hidden_sizes"] == [16, 16]
    assert "eval_return_mean" in best
    rows = read_metrics(run_dir)
    assert [int(r["env_step"]) for r in rows] == [300, 600]
    assert float(rows[-1]["best_return"]) == max(float(r["eval_return_mean"]) for r in rows)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["seed"] == 0
    assert summary["env_steps"] == 600 and summary["wall_seconds"] > 0
    assert summary["best_eval_return"] == best["eval_return_mean"]
    assert summary["best_eval_step"] == best["env_step"]
    assert summary["final_eval"]["episodes"] == 3
    assert summary["final_eval"]["mean"] == pytest.approx(final)
    assert summary["solved"] is False and summary["target_return"] is None
    assert summary["run_name"] == "a"
    assert not list(run_dir.glob("checkpoints/*.tmp"))
    with (run_dir / "episodes.csv").open() as file:
        episodes = list(csv.DictReader(file))
    assert [int(e["episode"]) for e in episodes] == list(range(1, summary["episodes"] + 1))
    steps = [int(e["env_step"]) for e in episodes]
    lengths = [int(e["length"]) for e in episodes]
    assert steps == [sum(lengths[:i + 1]) for i in range(len(lengths))]  # ends of episodes
    assert [float(e["return"]) for e in episodes] == lengths  # CartPole: 1 per step


def test_same_seed_same_numbers_different_seed_different(tmp_path, tiny_overrides):
    final_a, dir_a = run(tmp_path, "a", *tiny_overrides, "seed=5")
    final_b, dir_b = run(tmp_path, "b", *tiny_overrides, "seed=5")
    final_c, dir_c = run(tmp_path, "c", *tiny_overrides, "seed=6")
    columns = ["env_step", "eval_return_mean", "eval_return_std", "best_return"]
    rows_a, rows_b = read_metrics(dir_a), read_metrics(dir_b)
    assert [[r[k] for k in columns] for r in rows_a] == [[r[k] for k in columns] for r in rows_b]
    assert final_a == final_b
    weights = [load_checkpoint(d / "checkpoints" / "last.pt")["model"]
               for d in (dir_a, dir_b, dir_c)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])


def test_target_return_stops_once_confirmed(tmp_path, tiny_overrides):
    # Any policy lasts 5 steps on CartPole, so the first evaluation reaches the target.
    _, run_dir = run(tmp_path, "a", *tiny_overrides, "train.target_return=5")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["solved"] is True and summary["solved_step"] == 300
    assert summary["env_steps"] == 300 and summary["solved_seconds"] > 0
    assert load_checkpoint(run_dir / "checkpoints" / "best.pt")["env_step"] == 300


def test_unreached_target_trains_the_whole_budget(tmp_path, tiny_overrides):
    _, run_dir = run(tmp_path, "a", *tiny_overrides, "train.target_return=100000")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["solved"] is False and summary["env_steps"] == 600


def test_episode_budget_and_episode_periodic_evaluation(tmp_path, tiny_overrides):
    _, run_dir = run(tmp_path, "a", *tiny_overrides, "train.total_steps=null",
                     "train.total_episodes=5", "eval.every_steps=null", "eval.every_episodes=2")
    rows = read_metrics(run_dir)
    assert [int(r["episodes"]) for r in rows] == [2, 4, 5]  # the last: end of training
    assert json.loads((run_dir / "summary.json").read_text())["episodes"] == 5


class RecordingBuffer(UniformReplay):
    flags: list[bool] = []

    def add(self, obs, actions, rewards, next_obs, terminated, truncated, ended=None) -> None:
        RecordingBuffer.flags.append(bool(terminated[0]))
        super().add(obs, actions, rewards, next_obs, terminated, truncated, ended)


@pytest.mark.parametrize("time_limit,expect_terminations", [(5, False), (None, True)])
def test_truncation_is_not_stored_as_termination(tmp_path, tiny_overrides, monkeypatch,
                                                 time_limit, expect_terminations):
    monkeypatch.setattr(dqn.loop, "build_replay", lambda cfg, *args: RecordingBuffer(cfg, *args))
    RecordingBuffer.flags = []
    limit = "null" if time_limit is None else time_limit
    run(tmp_path, "a", *tiny_overrides, f"env.max_episode_steps={limit}")
    assert len(RecordingBuffer.flags) == 600
    # A 5-step CartPole episode always ends by truncation (the pole cannot fall that fast);
    # without the short limit, random early play makes the pole fall many times.
    assert any(RecordingBuffer.flags) == expect_terminations


def test_failed_run_writes_a_failed_summary(tmp_path, tiny_overrides, monkeypatch):
    def explode(self, batch):
        raise FloatingPointError("loss is nan")

    monkeypatch.setattr(dqn.loop.Agents, "update", explode)
    with pytest.raises(FloatingPointError):
        run(tmp_path, "a", *tiny_overrides)
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["status"] == "failed" and "loss is nan" in summary["error"]
    assert summary["env_steps"] == 100  # learning_starts: the first update raised
    assert summary["best_eval_return"] is None  # no evaluation happened
    episodes = (tmp_path / "a" / "episodes.csv").read_text().splitlines()
    assert len(episodes) > 1  # the episodes before the crash are on disk
