"""Pixel envs and networks: the Atari pipeline and MinAtar as the agent sees them, the CNN
encoders under every head, the memory refusal, and real runs that resume bitwise."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from dqn.checks import ConfigError
from dqn.config import validate
from dqn.envs.atari import AtariConfig, AtariEnv
from dqn.envs.minatar import MinAtarConfig, MinAtarEnv
from dqn.nets import build_q_network
from dqn.nets.encoders import MinAtarCNNConfig, NatureCNNConfig
from dqn.nets.heads import C51Config, QConfig
from tests.conftest import compose_config
from tests.test_cli import dqn_train


def test_atari_pipeline_shapes_sticky_actions_and_frame_cap():
    env = AtariEnv(AtariConfig(id="ALE/Breakout-v5")).make()
    obs, info = env.reset(seed=0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    assert env.observation_space.shape == (4, 84, 84) and env.action_space.n == 4
    assert (obs[0] == obs[3]).all()  # a new episode's stack repeats its first frame
    ale = env.unwrapped
    assert ale.ale.getFloat("repeat_action_probability") == pytest.approx(0.25)
    assert ale.ale.getInt("max_num_frames_per_episode") == 108_000
    assert ale.ale.getInt("frame_skip") == 1  # the skipping happens in AtariPreprocessing
    env.close()


def test_atari_learns_from_clipped_rewards_and_optional_life_loss_but_logs_the_score():
    clipped = AtariEnv(AtariConfig(id="ALE/Breakout-v5"))
    rewards, terminated = np.array([4.0, -7.0, 0.0]), np.zeros(3, dtype=bool)
    lost = {"life_lost": np.array([True, False, True]),
            "_life_lost": np.array([True, True, False])}  # the third env reported none
    learned = clipped.for_learning(rewards, terminated, lost)
    assert learned[0].tolist() == [1.0, -1.0, 0.0] and not learned[1].any()
    on_life_loss = AtariEnv(AtariConfig(id="ALE/Breakout-v5", terminal_on_life_loss=True,
                                        clip_rewards=False))
    learned = on_life_loss.for_learning(rewards, terminated, lost)
    assert learned[0].tolist() == [4.0, -7.0, 0.0]
    assert learned[1].tolist() == [True, False, False]
    # The env itself returns the raw score and reports each lost life once.
    env = clipped.make()
    env.reset(seed=0)
    lives_lost, rewards, rng = 0, [], np.random.default_rng(0)
    for _ in range(2000):
        _, reward, terminated, truncated, info = env.step(int(rng.integers(4)))
        rewards.append(reward)
        lives_lost += info["life_lost"]
        if terminated or truncated:
            break
    assert lives_lost == 5 and terminated  # Breakout: five lives, then game over
    assert set(rewards) <= {0.0, 1.0, 4.0, 7.0}  # brick scores, unclipped


def test_minatar_is_channels_first_and_keeps_its_dtype():
    env = MinAtarEnv(MinAtarConfig(id="MinAtar/SpaceInvaders-v1")).make()
    obs, _ = env.reset(seed=0)
    assert obs.shape == (6, 10, 10) and obs.dtype == bool
    assert env.observation_space.shape == (6, 10, 10)
    env.close()


@pytest.mark.parametrize("head,noisy,atoms", [("q", False, 1), ("dueling", False, 1),
                                              ("q", True, 1), ("dueling", True, 51)])
@pytest.mark.parametrize("cfg,space", [
    (NatureCNNConfig, gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)),
    (MinAtarCNNConfig, gym.spaces.Box(0, 1, (4, 10, 10), bool))],
    ids=["nature_cnn", "minatar_cnn"])
def test_cnn_encoders_under_every_head(cfg, space, head, noisy, atoms):
    settings = dict(dueling=head == "dueling", noisy=noisy)
    head_cfg = C51Config(atoms=atoms, **settings) if atoms > 1 else QConfig(**settings)
    network = build_q_network(cfg(), space, 5, head_cfg)
    obs = torch.from_numpy(np.stack([space.sample() for _ in range(3)]))
    out = network(obs)
    assert out.shape == ((3, 5) if atoms == 1 else (3, 5, atoms))
    assert network.q_values(out).shape == (3, 5)
    # leading dimensions pass through, as they do for K agents at once
    assert network(obs[None]).shape == (1, *out.shape)
    if cfg is NatureCNNConfig:  # pixels scaled to [0, 1]: uint8 255 acts like 1.0
        white = torch.full((1, 4, 84, 84), 255, dtype=torch.uint8)
        encoder = network.encoder
        expected = encoder.fc(encoder.convolutions(torch.ones(1, 4, 84, 84)))
        torch.testing.assert_close(encoder(white), expected)


def test_cnn_on_vector_observations_and_oversized_replay_are_one_line():
    with pytest.raises(ConfigError, match="network=nature_cnn needs image observations"):
        validate(compose_config("network=nature_cnn"))
    with pytest.raises(ConfigError, match=r"buffer.capacity=100000000 needs 658.91 GiB of "
                                          r"replay memory \(7,075 bytes per transition"):
        validate(compose_config("experiment=atari_dqn", "buffer.capacity=100000000"))


MINATAR_RUN = ["experiment=minatar_dqn", "train.total_steps=1200", "buffer.learning_starts=300",
               "train.train_frequency=4", "eval.every_steps=600", "eval.episodes=2",
               "eval.final_episodes=3", "train.checkpoint_every=400", "logger=none"]


def test_a_minatar_run_from_the_command_line_with_video(tmp_path):
    result = dqn_train(tmp_path, *MINATAR_RUN, "num_seeds=2", "video.episodes=1",
                       "video.max_steps=30", "hydra.run.dir=run")
    assert result.returncode == 0, result.stderr
    for seed in (0, 1):
        summary = json.loads((tmp_path / "run" / f"seed_{seed}" / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["env_steps"] == 1200
    video = tmp_path / "run" / "seed_1" / "videos" / "best-episode-0.mp4"
    assert video.stat().st_size > 0


def test_a_killed_pixel_run_resumes_bitwise(tmp_path):
    from tests.test_resume import assert_same_run, finish, kill_and_resume, start

    # 42x42 frames (still the Nature CNN's layers): a fraction of the arithmetic
    atari = ["env=atari", "env.id=ALE/Pong-v5", "env.screen_size=42", "network=nature_cnn",
             "network.features=32", "buffer.capacity=2000", "buffer.batch_size=8",
             "train.total_steps=800", "buffer.learning_starts=200", "train.train_frequency=16",
             "eval.every_steps=400", "eval.episodes=1", "eval.final_episodes=1",
             "train.checkpoint_every=300", "env.max_episode_frames=1200", "logger=none"]
    code, output = finish(start(tmp_path, *atari, "hydra.run.dir=reference"))
    assert code == 0, output
    kill_and_resume(tmp_path, atari, "run", 300)
    assert_same_run(tmp_path / "run", tmp_path / "reference")
