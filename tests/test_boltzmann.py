"""exploration=boltzmann: actions sampled from softmax(Q / temperature), the temperature on
a linear schedule, logged as temperature."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import dqn.seed_run
from dqn.checks import ConfigError
from dqn.config import stored_config, validate
from dqn.exploration import BoltzmannExplorationConfig, JointValues
from dqn.interfaces import ExplorationContext
from dqn.loop import train
from dqn.options import build
from tests.conftest import TINY_OVERRIDES, compose_config
from tests.test_resume import RUN, assert_same_run, finish, kill_and_resume, start

CONTEXT = ExplorationContext(envs=1, n_actions=4, total_steps=None, seed=0)

Q = np.array([[1.0, 0.5, -0.3, 0.9]])  # one env, four actions


def select_many(policy, q: np.ndarray, draws: int, step: int = 0, seed: int = 0) -> np.ndarray:
    """Actions (draws, N) that `policy` selects for Q-values (N, A), one generator."""
    rng = np.random.default_rng(seed)
    values = JointValues(lambda: q[None], 1, *q.shape).of(0)
    return np.stack([policy.select(values, step, 0, rng) for _ in range(draws)])


def softmax(q: np.ndarray, temperature: float) -> np.ndarray:
    weights = np.exp((q - q.max()) / temperature)
    return weights / weights.sum()


@pytest.mark.parametrize("temperature", [0.2, 1.0, 5.0])
def test_actions_follow_softmax_of_q_over_temperature(temperature):
    policy = build(BoltzmannExplorationConfig(start=temperature, end=temperature, steps=1),
                   CONTEXT)
    draws = 40_000
    counts = np.bincount(select_many(policy, Q, draws)[:, 0], minlength=4)
    expected = softmax(Q[0], temperature) * draws
    # within 5 standard deviations of each binomial count: the generator's draws are
    # the same on every CPU, the margin only keeps the test honest about sampling noise
    assert np.all(np.abs(counts - expected) <= 5 * np.sqrt(expected * (1 - expected / draws)) + 1)


def test_a_low_temperature_is_greedy_and_the_schedule_gets_there():
    policy = build(BoltzmannExplorationConfig(start=2.0, end=1e-6, steps=100), CONTEXT)
    q = np.random.default_rng(3).normal(size=(16, 5))
    actions = select_many(policy, q, 50, step=100)
    assert (actions == q.argmax(-1)).all()
    assert policy.scalars(0, 0) == {"temperature": 2.0}
    assert policy.scalars(50, 7) == {"temperature": pytest.approx(1.0)}
    assert policy.scalars(10**6, 0) == {"temperature": pytest.approx(1e-6)}
    assert policy.describe({"temperature": 0.5}) == "temp 0.500"


def test_each_env_draws_once_in_env_order():
    policy = build(BoltzmannExplorationConfig(start=1.0, end=1.0, steps=1), CONTEXT)
    q = np.tile(Q, (3, 1))
    together = select_many(policy, q, 1, seed=9)[0]
    rng = np.random.default_rng(9)
    cdf = np.cumsum(softmax(Q[0], 1.0))
    assert together.tolist() == [int(np.searchsorted(cdf, u, side="right"))
                                 for u in rng.random(3)]


@pytest.mark.parametrize("overrides, words", [
    (["exploration.end=0"], "exploration.end=0.0 is out of range: must be a positive number"),
    (["exploration.start=0.1", "exploration.end=0.5"], "must be <= exploration.start (0.1)"),
    (["exploration.steps=100", "exploration.fraction=0.5"], "both set the schedule's length"),
])
def test_bad_temperatures_are_refused_in_one_line(overrides, words):
    with pytest.raises(ConfigError) as error:
        validate(compose_config("logger=none", "exploration=boltzmann", *overrides))
    assert words in str(error.value) and "\n" not in str(error.value)


def test_fraction_sets_the_schedule_from_the_budget():
    config = validate(compose_config("logger=none", "exploration=boltzmann",
                                     "exploration.fraction=0.25", "train.total_steps=4000"))
    assert config.exploration.steps == 1000


class Recorder:
    """A tracker that keeps what it is given."""

    def __init__(self) -> None:
        self.metrics: list[dict[str, float]] = []

    def log(self, metrics, step):
        self.metrics.append(dict(metrics))

    def log_video(self, *args):
        pass

    def finish(self, crashed=False, error=None):
        pass

    run_id = None


def test_runs_with_many_seeds_and_envs_and_logs_temperature(tmp_path, monkeypatch):
    trackers: list[Recorder] = []
    monkeypatch.setattr(dqn.seed_run, "build_tracker",
                        lambda *args: trackers.append(Recorder()) or trackers[-1])
    config = validate(compose_config(*TINY_OVERRIDES, "logger.every_steps=100",
                                     "exploration=boltzmann", "exploration.steps=400",
                                     "num_seeds=2", "env.num_envs=2"))
    train(config, tmp_path, "run", stored_config(config))
    for seed, tracker in zip((0, 1), trackers):
        temperatures = [m["train/temperature"] for m in tracker.metrics
                        if "train/temperature" in m]
        assert temperatures[0] == pytest.approx(1.0 - 0.95 * 98 / 400)  # acted at 98
        assert temperatures[-1] == pytest.approx(0.05)
        assert not any("train/epsilon" in m for m in tracker.metrics)
        with (tmp_path / f"seed_{seed}" / "metrics.csv").open() as file:
            rows = list(csv.DictReader(file))
        assert "temperature" in rows[0] and "epsilon" not in rows[0]
        assert [float(r["temperature"]) for r in rows] == pytest.approx([1 - 0.95 * 298 / 400,
                                                                         0.05])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed"


def test_a_killed_run_resumes_to_the_same_numbers(tmp_path):
    job = [*(a for a in RUN if not a.startswith("train.total_steps=")), "train.total_steps=2000",
           "exploration=boltzmann", "num_seeds=2", "env.num_envs=2"]
    code, output = finish(start(tmp_path, *job, "hydra.run.dir=reference"))
    assert code == 0, output
    kill_and_resume(tmp_path, job, "job", 500)
    for seed in (11, 12):
        assert_same_run(tmp_path / "job" / f"seed_{seed}", tmp_path / "reference" / f"seed_{seed}")
