"""Greedy episodes recorded headless to MP4 and GIF, by hand and at the end of training."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

import dqn.run.record
from dqn.checks import ConfigError
from dqn.config import validate
from dqn.envs.make import GymEnvConfig
from dqn.run.video import record_episodes
from tests.conftest import compose_config
from tests.test_train import run


def mp4_frames(path: Path) -> list[np.ndarray]:
    """Decode every frame of an MP4 back into an (height, width, 3) array."""
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    width, height = meta["size"]
    return [np.frombuffer(frame, np.uint8).reshape(height, width, 3) for frame in reader]


def always_left(obs: np.ndarray) -> np.ndarray:
    return np.zeros(len(obs), dtype=np.int64)


def test_records_each_episode_to_an_mp4_with_its_frames(tmp_path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    recording = record_episodes(always_left, GymEnvConfig(), tmp_path / "videos", "best",
                                episodes=2, seed=0)
    assert [p.name for p in recording.videos] == ["best-episode-0.mp4", "best-episode-1.mp4"]
    assert recording.lengths == recording.returns  # CartPole: reward 1 per step
    for path, length in zip(recording.videos, recording.lengths):
        frames = mp4_frames(path)
        assert len(frames) == length + 1  # the start, then one frame per step
        assert frames[0].shape == (400, 600, 3)
        assert frames[0].min() < 100 < frames[0].max()  # a picture, not a blank
        assert not np.array_equal(frames[0], frames[-1])  # the cart and pole moved
    gif = Image.open(recording.gif)
    assert recording.gif.name == "best-episode-0.gif"
    assert gif.size == (300, 200) and gif.n_frames > 1


def test_max_steps_cuts_episodes_and_the_gif_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr("dqn.run.video.GIF_SECONDS", 1)  # 25 GIF frames at CartPole's 50 fps
    recording = record_episodes(always_left, GymEnvConfig(max_episode_steps=1000), tmp_path, "x",
                       episodes=1, seed=0, max_steps=3)
    assert recording.lengths == [3] and len(mp4_frames(recording.videos[0])) == 4
    balanced = record_episodes(lambda obs: (obs[:, 2] + obs[:, 3] > 0).astype(np.int64),
                      GymEnvConfig(), tmp_path, "y", episodes=1, seed=0, max_steps=200)
    assert balanced.lengths == [200]  # a simple balancing rule lasts the 200 steps
    assert Image.open(balanced.gif).n_frames <= 25 < 200 // 2


def test_training_records_the_best_checkpoint_at_the_end(tmp_path, tiny_overrides):
    _, run_dir = run(tmp_path, "a", *tiny_overrides, "video.episodes=2", "video.max_steps=25")
    videos = sorted(p.name for p in (run_dir / "videos").iterdir())
    assert videos == ["best-episode-0.gif", "best-episode-0.mp4", "best-episode-1.mp4"]
    assert 0 < len(mp4_frames(run_dir / "videos" / "best-episode-1.mp4")) <= 26
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"


def test_no_video_by_default(tmp_path, tiny_overrides):
    _, run_dir = run(tmp_path, "a", *tiny_overrides)
    assert not (run_dir / "videos").exists()


def test_failed_recording_warns_and_keeps_the_run(tmp_path, tiny_overrides, monkeypatch,
                                                  caplog):
    def broken(*args, **kwargs):
        raise OSError("ffmpeg is missing")

    monkeypatch.setattr(dqn.run.record, "record_episodes", broken)
    with caplog.at_level(logging.WARNING, logger="dqn"):
        run(tmp_path, "a", *tiny_overrides, "video.episodes=1")
    assert "recording a video failed (OSError: ffmpeg is missing)" in caplog.text
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["status"] == "completed"


@pytest.mark.parametrize("override,words", [
    ("video.episodes=-1", "video.episodes=-1 is out of range: must be >= 0"),
    ("video.max_steps=0", "video.max_steps=0 is out of range: must be a positive number"),
])
def test_video_settings_are_checked(override, words):
    with pytest.raises(ConfigError, match=words):
        validate(compose_config(override))


def test_recipes_record_as_the_recipes_do():
    tutorial = validate(compose_config("experiment=tutorial")).video
    swanbook = validate(compose_config("experiment=swanbook")).video
    assert (tutorial.episodes, tutorial.max_steps) == (5, None)
    assert (swanbook.episodes, swanbook.max_steps) == (3, 1500)
    assert validate(compose_config()).video.episodes == 0
