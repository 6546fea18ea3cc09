"""Many envs per agent (env.num_envs): periods in env steps summed over the envs, replay
columns per (agent, env), episode ends under every backend, bad input."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

import dqn.loop
from dqn.budget import periods_crossed
from dqn.checks import ConfigError
from dqn.config import stored_config, validate
from dqn.loop import train
from dqn.replay.uniform import UniformBufferConfig, UniformReplay
from tests.conftest import compose_config, run_python

GAMMA = 0.5


class Counter(gym.Env):
    """Observations (t, marker): t counts the steps since the reset, the marker is drawn
    at each reset (it tells episodes apart). An episode whose reset seed is even
    terminates after 3 steps; the others run into the time limit of 5 (truncation)."""

    observation_space = gym.spaces.Box(0.0, 1e6, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, render_mode=None):
        self.render_mode = render_mode

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.marker = 0, float(self.np_random.integers(1, 10**6))
        self.stop = 3 if seed is not None and seed % 2 == 0 else 10**9
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), 1.0, self.t >= self.stop, False, {}

    def _obs(self):
        return np.array([self.t, self.marker], dtype=np.float32)


gym.register("tests/Counter-v0", entry_point=Counter, max_episode_steps=5)

COUNTER_RUN = ("logger=none", "env.id=tests/Counter-v0", "network.hidden_sizes=[8]",
               "train.total_steps=600", "buffer.learning_starts=60", "train.train_frequency=4",
               "train.gradient_steps=1", "eval.every_steps=300", "eval.episodes=2",
               "eval.final_episodes=2", f"train.gamma={GAMMA}", "buffer.capacity=10000")


def test_periods_are_due_at_the_first_vector_step_that_reaches_them():
    assert periods_crossed(0, 4, 64) == 0
    assert periods_crossed(60, 64, 64) == 1
    assert periods_crossed(62, 66, 64) == 1  # 64 lies inside this vector step
    assert periods_crossed(0, 128, 64) == 2  # two periods in one vector step
    assert periods_crossed(63, 64, 1) == 1
    assert periods_crossed(0, 1000, None) == 0


def stored_transitions(tmp_path, monkeypatch, *overrides):
    """Train on Counter and return the replay memory's stored fields, per column."""
    buffers = []

    def recording(cfg, *args):
        buffers.append(dqn.replay.build_replay(cfg, *args))
        return buffers[-1]

    monkeypatch.setattr(dqn.loop, "build_replay", recording)
    config = validate(compose_config(*COUNTER_RUN, *overrides))
    train(config, tmp_path, "run", stored_config(config))
    buffer = buffers[0]
    n = buffer.size
    return {name: array[:n] for name, array in buffer.fields.items()}, buffer


@pytest.mark.parametrize("vectorization", ["sync", "async"])
@pytest.mark.parametrize("n_step", [1, 3])
def test_episode_ends_in_every_column(tmp_path, monkeypatch, vectorization, n_step):
    """No transition leads into a reset observation, a truncation bootstraps from the real
    final observation, a termination does not bootstrap, and an n-step return stops at its
    episode's end, in each of 3 envs of each of 2 agents."""
    fields, buffer = stored_transitions(
        tmp_path, monkeypatch, "env.num_envs=3", f"env.vectorization={vectorization}",
        "num_seeds=2", f"buffer.n_step={n_step}")
    assert buffer.columns == 6 and buffer.size == 600 // 3 - (n_step - 1)
    obs, next_obs = fields["obs"], fields["next_obs"]
    steps = next_obs[..., 0] - obs[..., 0]
    assert (next_obs[..., 1] == obs[..., 1]).all(), "a transition crossed an episode end"
    assert ((steps >= 1) & (steps <= n_step)).all()
    np.testing.assert_allclose(fields["rewards"], (1 - GAMMA ** steps) / (1 - GAMMA))
    terminated = fields["discounts"] == 0
    truncated = (next_obs[..., 0] == 5) & ~terminated  # the real final observation
    assert terminated.any() and truncated.any()
    assert (next_obs[..., 0][terminated] == 3).all()
    # a return cut short ended at a termination or at the time limit
    cut = steps < n_step
    assert (terminated | truncated)[cut].all()
    np.testing.assert_allclose(fields["discounts"][~terminated], GAMMA ** steps[~terminated])
    markers = obs[..., 1]
    assert len({tuple(markers[:, c][:3]) for c in range(6)}) == 6, "columns share episodes"


def test_each_agent_samples_only_its_own_columns():
    space = gym.spaces.Box(0.0, 100.0, (1,), np.float32)
    buffer = UniformReplay(UniformBufferConfig(capacity=40, batch_size=8), space,
                           [np.random.default_rng(0), np.random.default_rng(1)], 0.99, "cpu",
                           envs_per_agent=4)
    assert buffer.capacity == 10 and buffer.columns == 8
    columns = np.arange(8, dtype=np.float32)
    for _ in range(12):  # wraps the ring of 10 slots
        buffer.add(columns[:, None], np.zeros(8, np.int64), columns, columns[:, None],
                   np.zeros(8, bool), np.zeros(8, bool))
    assert len(buffer) == 40
    batch = buffer.sample(64)
    drawn = batch.rewards.numpy()
    assert set(drawn[0].tolist()) == {0, 1, 2, 3} and set(drawn[1].tolist()) == {4, 5, 6, 7}


def test_many_envs_keep_the_replay_ratio_and_the_budget(tmp_path):
    config = validate(compose_config(*COUNTER_RUN, "env.num_envs=8",
                                     "train.total_steps=1001", "train.checkpoint_every=250"))
    gradient_steps = []
    original = dqn.loop.Agents.update

    def counting(self, batch):
        gradient_steps.append(1)
        return original(self, batch)

    dqn.loop.Agents.update = counting
    try:
        train(config, tmp_path, "run", stored_config(config))
    finally:
        dqn.loop.Agents.update = original
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["env_steps"] == 1008  # the first vector step that reaches 1001
    # one per 4 env steps from the vector step 56 -> 64 on (the first past learning_starts)
    assert len(gradient_steps) == (1008 - 56) // 4
    evaluations = [int(line.split(",")[0]) for line in
                   (tmp_path / "metrics.csv").read_text().splitlines()[1:]]
    assert evaluations == [304, 600, 904, 1008]  # the vector steps that reach 300, 600, 900


@pytest.mark.parametrize("override,words", [
    ("env.num_envs=0", "env.num_envs=0 is out of range"),
    ("env.vectorization=threads", "env.vectorization='threads' is out of range: must be one "
                                  "of sync, async"),
    ("train.total_steps=0", "train.total_steps=0 is out of range"),
])
def test_bad_vector_settings_are_one_line(override, words):
    with pytest.raises(ConfigError, match=words):
        validate(compose_config("logger=none", override))


def test_capacity_below_num_envs_is_refused():
    with pytest.raises(ConfigError, match=r"buffer.capacity=64 .*must be >= env.num_envs \(128\)"):
        validate(compose_config("logger=none", "buffer.capacity=64", "buffer.batch_size=32",
                                "env.num_envs=128"))


def test_memory_check_counts_every_env(monkeypatch):
    monkeypatch.setattr("dqn.replay.buffer.available_memory", lambda: 100 * 2**20)
    with pytest.raises(ConfigError, match=r"x 2 agent\(s\) x 4 env\(s\) each"):
        validate(compose_config("logger=none", "env=minatar", "network=minatar_cnn",
                                "buffer.capacity=1000000", "num_seeds=2", "env.num_envs=4"))


def test_cli_run_with_many_envs_and_async(tmp_path):
    result = run_python(tmp_path, "-m", "dqn.train", "logger=none", "env.num_envs=4",
                        "env.vectorization=async", "train.total_steps=800",
                        "buffer.learning_starts=200", "eval.every_steps=400", "eval.episodes=2",
                        "eval.final_episodes=3", "hydra.run.dir=run")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["env_steps"] == 800
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True)
    assert checkpoint["config"]["env"]["num_envs"] == 4


def test_sync_and_async_envs_give_the_same_run(tmp_path):
    """The backend changes where envs step, not what they compute: same seed, same
    evaluations and episodes."""
    records = []
    for vectorization in ("sync", "async"):
        config = validate(compose_config("logger=none", "train.total_steps=1500",
                                         "buffer.learning_starts=300", "eval.every_steps=500",
                                         "eval.episodes=3", "eval.final_episodes=3",
                                         "env.num_envs=3", f"env.vectorization={vectorization}"))
        run_dir = tmp_path / vectorization
        run_dir.mkdir()
        train(config, run_dir, "run", stored_config(config))
        metrics = [line.split(",") for line in (run_dir / "metrics.csv").read_text().splitlines()]
        records.append(([row[:2] + row[3:] for row in metrics],  # all but wall_seconds
                        (run_dir / "episodes.csv").read_text()))
    assert records[0] == records[1]


def test_a_ring_too_small_for_a_frame_stack_per_env_is_refused():
    with pytest.raises(ConfigError, match=r"buffer.capacity=100 .*must be >= 112"):
        validate(compose_config("logger=none", "experiment=atari_dqn", "buffer.capacity=100",
                                "buffer.batch_size=32", "buffer.n_step=3", "env.num_envs=16"))


def test_learning_waits_for_the_first_stored_transition(tmp_path):
    """n-step transitions come out n - 1 vector steps late: with learning_starts below
    that many env steps the first round waits for a stored transition."""
    config = validate(compose_config(*COUNTER_RUN, "env.num_envs=8", "buffer.n_step=3",
                                     "buffer.learning_starts=1", "train.train_frequency=1",
                                     "train.total_steps=200"))
    train(config, tmp_path, "run", stored_config(config))
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "completed"
