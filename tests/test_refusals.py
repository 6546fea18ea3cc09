"""Settings that cannot work are refused by validation in one line, before anything is built
or written: networks beyond memory, an env id under the wrong env option, seeds beyond 32
bits, budgets in which no gradient step can run, two settings for one thing, values that
are not finite, budgets that no machine finishes. And an evaluation's memory does not grow
with its number of episodes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dqn.checks import ConfigError
from dqn.config import config_from_dict, stored_config, validate
from dqn.envs import make_env
from dqn.envs.make import GymEnvConfig
from dqn.nets.qnet import build_q_network, parameter_count
from dqn.run import evaluation
from tests.conftest import compose_config, refused_in_one_line

HUGE_NETWORK = "network.hidden_sizes=[10000000,10000000]"
SHORT = ["train.total_steps=600", "buffer.learning_starts=100"]


def refusal(*overrides: str) -> str:
    """The one-line message validation refuses these overrides with."""
    with pytest.raises(ConfigError) as error:
        validate(compose_config(*overrides))
    message = str(error.value)
    assert "\n" not in message
    return message


REFUSED = [
    # networks are counted, not built
    ([HUGE_NETWORK, "device=cpu"], "network=mlp (100,000,080,000,002 parameters) needs "
                                   "1862646.64 GiB of cpu memory"),
    # an env id under an env option that cannot drive it
    (["env=atari", "env.id=CartPole-v1"], "env.id='CartPole-v1' is not for env=atari, which "
                                          "takes ALE/<Game>-v5 ids"),
    (["env.id=ALE/Pong-v5"], "env.id='ALE/Pong-v5' is an Atari game: choose env=atari"),
    (["env.id=MinAtar/Breakout-v1"], "is a MinAtar game: choose env=minatar"),
    (["env=atari", "env.id=MinAtar/Breakout-v1"], "is a MinAtar game: choose env=minatar"),
    (["env=minatar", "env.id=CartPole-v1"], "env.id='CartPole-v1' is not for env=minatar"),
    (["env=minatar", "env.id=ALE/Pong-v5"], "is an Atari game: choose env=atari"),
    # seeds are 32-bit, the last of a num_seeds job too
    (["seed=-1"], "seed=-1 is out of range: must be in [0, 4294967295]"),
    (["seed=99999999999"], "seed=99999999999 is out of range: must be in [0, 4294967295]"),
    (["seed=4294967295", "num_seeds=2"], "num_seeds=2 is out of range: the last seed, seed + "
                                         "num_seeds - 1 = 4294967296, must be <= 4294967295"),
    # budgets in which no gradient step can run
    (["buffer.learning_starts=50000"], "buffer.learning_starts=50000 is out of range: must be "
                                       "< train.total_steps (50000)"),
    (["buffer=prioritized", "train.total_steps=800"], "buffer.learning_starts=1000 is out of "
                                                      "range: must be < train.total_steps (800)"),
    (["train.train_frequency=601", *SHORT], "train.train_frequency=601 is out of range: must "
                                           "be <= train.total_steps (600)"),
    (["experiment=pqn", "train.total_steps=511"], "buffer.rollout_steps x env.num_envs (128 x 4 "
                                                  "= 512 env steps) must be <= "
                                                  "train.total_steps (511)"),
    (["env.num_envs=1001", "train.total_steps=1000", "buffer.learning_starts=10"],
     "env.num_envs=1001 is out of range: must be <= train.total_steps (1000)"),
    # two settings for the schedule's length
    (["exploration.fraction=0.2", "exploration.steps=5000"],
     "exploration.steps=5000 and exploration.fraction=0.2 both set the schedule's length "
     "(0.2 x train.total_steps = 10000): set one, and the other to null"),
    (["experiment=pqn", "exploration.steps=1000"],
     "exploration.steps=1000 and exploration.fraction=0.5 both set"),
    (["experiment=cartpole", "exploration.fraction=0.1"],
     "exploration.steps=8000 and exploration.fraction=0.1 both set"),
    # values that are not finite
    (["train.target_return=nan"], "train.target_return=nan is out of range: must be a finite"),
    (["train.target_return=inf"], "train.target_return=inf is out of range: must be a finite"),
    (["train.gamma=nan"], "train.gamma=nan is out of range: must be a finite number"),
    (["optimizer.weight_decay=inf"], "optimizer.weight_decay=inf is out of range: must be a "
                                     "finite number"),
    (["head=c51", "head.v_min=-inf"], "head.v_min=-inf is out of range"),
    # budgets that no machine finishes (they would run for days without a word)
    (["train.total_steps=100000000000000000000"],
     "train.total_steps=100000000000000000000 is out of range: must be <= 1,000,000,000,000 "
     "(10^12 env steps: 12 days even at a million env steps a second)"),
    (["train.total_steps=null", "train.total_episodes=1000000000001"],
     "train.total_episodes=1000000000001 is out of range: must be <= 1,000,000,000,000"),
    (["eval.episodes=5000000"], "eval.episodes=5000000 is out of range: must be <= 1,000,000 "
                                "(10^6 episodes per evaluation"),
    (["eval.final_episodes=5000000"], "eval.final_episodes=5000000 is out of range: must be "
                                      "<= 1,000,000"),
]


@pytest.mark.parametrize("overrides,words", REFUSED, ids=[" ".join(c[0]) for c in REFUSED])
def test_a_setting_that_cannot_work_is_refused_in_one_line(overrides, words):
    assert words in refusal(*overrides)


@pytest.mark.parametrize("overrides", [
    ["seed=4294967295"], ["seed=4294967294", "num_seeds=2"],
    ["buffer.learning_starts=49999"], ["experiment=pqn", "train.total_steps=512"],
    ["train.train_frequency=600", *SHORT],
    ["train.total_steps=null", "train.total_episodes=5", "buffer.learning_starts=50000"],
    ["env=atari", "env.id=PongNoFrameskip-v4", "network=nature_cnn"],
    ["train.target_return=475.5"], ["train.total_steps=1000000000000"],
    ["eval.episodes=1000000", "eval.final_episodes=1000000"]])
def test_the_edges_of_what_works_are_accepted(overrides):
    validate(compose_config(*overrides))


def test_the_schedule_length_is_steps_or_a_fraction_of_the_budget():
    assert validate(compose_config()).exploration.steps == 8000
    assert validate(compose_config("exploration.fraction=0.2")).exploration.steps == 10_000
    explicit = validate(compose_config("experiment=pqn", "exploration.steps=1000",
                                       "exploration.fraction=null"))
    assert explicit.exploration.steps == 1000
    pqn = validate(compose_config("experiment=pqn"))  # its steps now set from its fraction
    assert config_from_dict(stored_config(pqn)).exploration.steps == 250_000  # as on resume


@pytest.mark.parametrize("overrides", [
    [], ["head=c51", "head.dueling=true", "head.noisy=true", "network.norm=layer"],
    ["env=minatar", "network=minatar_cnn", "network.norm=layer"]])
def test_the_count_of_parameters_is_the_network_s(overrides):
    config = validate(compose_config(*overrides))
    env = make_env(config.env)
    space, n_actions = env.observation_space, int(env.action_space.n)
    env.close()
    built = build_q_network(config.network, space, n_actions, config.head)
    assert parameter_count(config.network, space, n_actions, config.head) == \
        sum(p.numel() for p in built.parameters())


@pytest.mark.parametrize("target,copies", [("hard", 5), ("none", 4)])
def test_networks_are_refused_beyond_the_memory_they_take(monkeypatch, target, copies):
    """Per agent: float32 weights, gradients, two optimizer moments and a target network."""
    overrides = ["device=cpu", "network.hidden_sizes=[1000]", "buffer.capacity=64",
                 "num_seeds=2", f"target={target}"]
    parameters = 4 * 1000 + 1000 + 1000 * 2 + 2  # CartPole: 4 inputs, 2 actions
    needed = parameters * 4 * copies * 2
    monkeypatch.setattr("dqn.replay.buffer.available_memory", lambda: needed)
    validate(compose_config(*overrides))
    monkeypatch.setattr("dqn.replay.buffer.available_memory", lambda: needed - 1)
    assert f"network=mlp ({parameters:,} parameters) needs" in refusal(*overrides)


def test_networks_on_a_gpu_are_measured_against_its_free_memory(monkeypatch):
    monkeypatch.setattr("dqn.config.resolve_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr("dqn.config.gpu_memory", lambda device: 2**20)
    assert "needs 0.19 GiB of cuda memory" in refusal("network.hidden_sizes=[10000,1000]")


def test_a_huge_evaluation_plays_a_bounded_number_of_envs(monkeypatch):
    """Beyond MAX_VECTOR_EPISODES, episodes are played max_parallel at a time in separate
    envs instead of one vector env with an env per episode."""
    monkeypatch.setattr(evaluation, "MAX_VECTOR_EPISODES", 8)
    vector_sizes: list[int] = []
    make_vector_env = evaluation.make_vector_env
    monkeypatch.setattr(evaluation, "make_vector_env",
                        lambda cfg, n: vector_sizes.append(n) or make_vector_env(cfg, n))
    evaluator = evaluation.Evaluator(GymEnvConfig(id="CartPole-v1"), seed=0, max_parallel=4)
    try:
        def always_left(obs: np.ndarray) -> np.ndarray:
            return np.zeros(len(obs), dtype=np.int64)

        many = evaluator.run(always_left, 20)
        assert vector_sizes == [] and len(evaluator.envs) == 4
        assert len(many.returns) == len(many.lengths) == 20 and many.lengths.min() > 0
        assert np.array_equal(many.returns, many.lengths)  # CartPole: 1 per step
        evaluator.run(always_left, 8)
        assert vector_sizes == [8]
    finally:
        evaluator.close()


# The command line: one line, exit status 2, no traceback, nothing written.
END_TO_END = [
    ([HUGE_NETWORK], "GiB is available; use a smaller network"),
    (["env=atari", "env.id=CartPole-v1"], "env.id='CartPole-v1' is not for env=atari"),
    (["seed=4294967295", "num_seeds=2"], "num_seeds=2 is out of range: the last seed"),
    (["train.target_return=nan"], "train.target_return=nan is out of range: must be a finite"),
    (["train.total_steps=100000000000000000000"], "must be <= 1,000,000,000,000 (10^12 env "),
    (["eval.episodes=5000000"], "eval.episodes=5000000 is out of range: must be <= 1,000,000"),
]


@pytest.mark.parametrize("args,words", END_TO_END, ids=[" ".join(c[0]) for c in END_TO_END])
def test_the_command_line_refuses_in_one_line_and_writes_nothing(tmp_path, args, words):
    line = refused_in_one_line(tmp_path, *args)
    assert line.startswith("Config error: ") and words in line


def test_rainbow_with_another_head_names_the_preset_that_takes_it(tmp_path):
    line = refused_in_one_line(tmp_path, "rainbow=full", "head=qr")
    assert line == ("Config error: rainbow=full picks head=c51 and sets head.atoms, which "
                    "head=qr does not have: for the other components with head=qr use "
                    "rainbow=without_c51 head=qr")
