"""Greedy episodes rendered headless to video: one MP4 per episode, a GIF of the first.

Rendering uses the env's `rgb_array` mode; the classic-control envs draw it with pygame
off-screen, and SDL is pointed at its dummy drivers, so no display (or sound card) is
needed. MP4 frames stream to the ffmpeg that imageio-ffmpeg ships, so a long episode is
never held in memory; the GIF (what SwanLab can show) is a light preview: half size, every
other frame, at most `GIF_SECONDS` long.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import imageio_ffmpeg
import numpy as np
from PIL import Image

from dqn.envs import make_env
from dqn.exploration import epsilon_greedy
from dqn.run.evaluation import Policy

for _name, _value in (("SDL_VIDEODRIVER", "dummy"), ("SDL_AUDIODRIVER", "dummy"),
                      ("PYGAME_HIDE_SUPPORT_PROMPT", "1")):
    os.environ.setdefault(_name, _value)

GIF_SECONDS = 20
MIN_SIDE = 160  # pixels


def displayable(frame: np.ndarray) -> np.ndarray:
    """`frame` as RGB uint8 (a float frame is taken to be in [0, 1]), each pixel repeated
    so that the shorter side is at least MIN_SIDE."""
    if frame.dtype != np.uint8:
        frame = (np.clip(frame, 0.0, 1.0) * 255).round().astype(np.uint8)
    factor = -(-MIN_SIDE // min(frame.shape[:2]))
    if factor > 1:
        frame = frame.repeat(factor, axis=0).repeat(factor, axis=1)
    return frame


@dataclass
class Recording:
    videos: list[Path] = field(default_factory=list)  # one MP4 per episode
    gif: Path | None = None  # the first episode
    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)


def record_episodes(policy: Policy, env_cfg, out_dir: Path, name: str, episodes: int,
                    seed: int, max_steps: int | None = None, epsilon: float = 0.0) -> Recording:
    """Play `episodes` greedy episodes (a random action with probability `epsilon`, by
    training's rule `epsilon_greedy`, with a generator of its own), each
    cut after `max_steps` steps if set, into `out_dir/NAME-episode-I.mp4`, and the first
    one into `out_dir/NAME-episode-0.gif`. The env's own frames (RGB); tiny ones (MinAtar's
    10x10) are enlarged pixel by pixel to at least MIN_SIDE (see `displayable`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    env = make_env(env_cfg, render_mode="rgb_array")
    fps = env.metadata.get("render_fps") or 30
    seeds = np.random.default_rng(seed).integers(0, 2**31 - 1, size=episodes).tolist()
    explorer = np.random.default_rng([seed, 1])
    n_actions = int(env.action_space.n)
    recording = Recording()
    try:
        for index, episode_seed in enumerate(seeds):
            path = out_dir / f"{name}-episode-{index}.mp4"
            gif = GifFrames(fps) if index == 0 else None
            obs, _ = env.reset(seed=episode_seed)
            with Mp4File(path, fps) as video:
                frame = displayable(env.render())
                total, steps, done = 0.0, 0, False
                while True:
                    video.add(frame)
                    if gif is not None:
                        gif.add(frame)
                    if done or steps == max_steps:
                        break
                    action = int(epsilon_greedy(lambda: policy(obs[None]), epsilon, explorer,
                                                n_actions, 1)[0])
                    obs, reward, terminated, truncated, _ = env.step(action)
                    frame = displayable(env.render())
                    total, steps, done = total + float(reward), steps + 1, terminated or truncated
            recording.videos.append(path)
            recording.returns.append(total)
            recording.lengths.append(steps)
            if gif is not None:
                recording.gif = gif.save(path.with_suffix(".gif"))
    finally:
        env.close()
    return recording


class Mp4File:
    """An H.264 MP4 written frame by frame through ffmpeg."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = path, fps
        self.writer = None

    def add(self, frame: np.ndarray) -> None:
        if self.writer is None:
            height, width = frame.shape[:2]
            # macro_block_size=2: any even size is kept as it is (CartPole: 600x400)
            self.writer = imageio_ffmpeg.write_frames(
                str(self.path), (width, height), fps=self.fps, macro_block_size=2,
                ffmpeg_log_level="error")
            self.writer.send(None)
        self.writer.send(np.ascontiguousarray(frame))

    def __enter__(self) -> "Mp4File":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.writer is not None:
            self.writer.close()


class GifFrames:
    """Every other frame at half size, up to GIF_SECONDS, saved as a looping GIF."""

    def __init__(self, fps: float) -> None:
        self.frame_ms = 2000 / fps
        self.limit = int(GIF_SECONDS * fps / 2)
        self.frames: list[Image.Image] = []
        self.seen = 0

    def add(self, frame: np.ndarray) -> None:
        self.seen += 1
        if self.seen % 2 == 0 or len(self.frames) >= self.limit:
            return
        image = Image.fromarray(frame)
        image = image.resize((max(1, image.width // 2), max(1, image.height // 2)),
                             Image.Resampling.BILINEAR)
        self.frames.append(image.convert("P", palette=Image.Palette.ADAPTIVE, colors=64))

    def save(self, path: Path) -> Path:
        first, *rest = self.frames
        first.save(path, save_all=True, append_images=rest, duration=self.frame_ms, loop=0)
        return path
