"""The training loop: collect experience, update the agent, evaluate greedily every
period, checkpoint the best model and the full training state, and end with a final
evaluation of the best checkpoint read back from disk."""

from __future__ import annotations

import ctypes
import logging
import random
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dqn.agent import DQNAgent
from dqn.buffers import ReplayBuffer
from dqn.checkpoint import capture_rngs, restore_rngs
from dqn.config import Config, resolve_device
from dqn.envs import make_env, space_sizes
from dqn.evaluation import Evaluator
from dqn.exploration import build_schedule
from dqn.networks import build_q_network
from dqn.records import RunRecord, TrainingStats
from dqn.targets import build_target_updater
from dqn.tracking import build_tracker, flatten

log = logging.getLogger("dqn")
STREAMS = ("actions", "replay", "eval", "final", "video")  # consumers of randomness


def seed_streams(seed: int, names: tuple[str, ...]) -> dict[str, int]:
    """Independent, reproducible sub-seeds for each consumer of randomness."""
    children = np.random.SeedSequence(seed).spawn(len(names))
    return {name: int(child.generate_state(1)[0]) for name, child in zip(names, children)}


def prepare_process(cfg: Config) -> torch.device:
    """Seed Python's, NumPy's and torch's global generators, set torch's threads and the
    allocator, and return the device to train on."""
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.torch_threads)
    keep_freed_memory()
    return resolve_device(cfg.device)


def keep_freed_memory() -> None:
    """Let glibc's malloc reuse freed blocks of up to 64 MB instead of returning them to
    the system: by default a tensor over 128 KB (a batch of 8 agents' hidden activations)
    gets fresh pages from the kernel on every allocation, and faulting them in cost as
    much as the arithmetic. No effect where the C library is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def train(cfg: Config, run_dir: Path, run_name: str, stored_config: dict[str, Any],
          resume_from: dict[str, Any] | None = None) -> float:
    """Run one training job in `run_dir` (or continue the one `resume_from`, a full-state
    last.pt, was saved from); returns the final evaluation mean return."""
    seeds = seed_streams(cfg.seed, STREAMS)
    device = prepare_process(cfg)
    env = make_env(cfg.env)
    obs_dim, n_actions = space_sizes(env)
    agent = DQNAgent(build_q_network(cfg.network, obs_dim, n_actions), cfg.optimizer,
                     build_target_updater(cfg.target), cfg.train.gamma, cfg.train.loss,
                     n_actions, np.random.default_rng(seeds["actions"]), device,
                     double_q=cfg.train.double_q)
    buffer = ReplayBuffer(cfg.buffer.capacity, obs_dim, np.random.default_rng(seeds["replay"]),
                          device)
    epsilon_at = build_schedule(cfg.exploration)
    evaluator = Evaluator(cfg.env, seeds["eval"])
    rngs = {"actions": agent.rng, "replay": buffer.rng, "eval": evaluator.seeds,
            "env": env.unwrapped.np_random}
    resume_id = resume_from["state"]["record"]["swanlab_run_id"] if resume_from else None
    tracker = build_tracker(cfg.logger, run_name, flatten(stored_config), resume_id)
    run = RunRecord(cfg, run_dir, run_name, stored_config, tracker)
    stats = TrainingStats(device)

    step = episodes = 0
    if resume_from is None:
        obs, _ = env.reset(seed=cfg.seed)
    else:
        step, episodes = resume(resume_from, agent, buffer, stats, run, rngs)
        obs, _ = env.reset()  # the env RNG was saved just before this reset
        log.info("resumed %s at env step %d (episode %d)", run_dir, step, episodes)
    t, b = cfg.train, cfg.buffer
    epsilon = epsilon_at(step, episodes)

    def training_state(env_rng: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {"buffer": buffer.state_dict(), "stats": stats.state_dict(),
                "rngs": capture_rngs({**rngs, "env": env_rng}), **extra}

    try:
        with run.progress() as progress, StopSignals() as stop:
            while not budget_spent(t, step, episodes) and not stop.received:
                epsilon = epsilon_at(step, episodes)
                action = agent.act(obs, epsilon)
                next_obs, reward, terminated, truncated, _ = env.step(action)
                buffer.add(obs, action, reward, next_obs, terminated)
                stats.add_reward(reward)
                obs, step = next_obs, step + 1
                episode_ended = terminated or truncated
                if episode_ended:
                    episodes += 1
                    run.log_episode(episodes, step, *stats.end_episode())
                    env_rng = env.unwrapped.np_random.bit_generator.state
                    obs, _ = env.reset()
                if step >= b.learning_starts and step % t.train_frequency == 0:
                    for batch in buffer.sample_batches(b.batch_size, t.gradient_steps):
                        stats.add_update(*agent.update(batch))
                if step % run.log_every == 0:
                    run.log_training(stats, step, episodes, epsilon)
                if evaluation_due(cfg, step, episodes, episode_ended):
                    stats.check_finite(step)
                    if run.evaluate(agent, evaluator, step, episodes, epsilon):
                        break  # target return reached and confirmed
                if episode_ended and (stop.requested or _checkpoint_due(t, step, run)):
                    run.save_state(agent, step, episodes, training_state(env_rng))
                    stop.received = stop.requested
                progress.update(step, episodes, stats.last_return, run.best_return, epsilon)
        if stop.received:
            run.interrupted(step, episodes, stop.name)
            log.warning("%s: stopped at env step %d and saved %s. Resume with:\n"
                        "  python -m dqn.train resume=%s", stop.name, step, run.last_path,
                        run_dir)
            raise SystemExit(128 + stop.signal_number)
        if run.last_eval is None or run.last_eval[0] != step:
            run.evaluate(agent, evaluator, step, episodes, epsilon)
        run.save_state(agent, step, episodes,
                       training_state(rngs["env"].bit_generator.state, finished=True))
        final = run.finish(step, episodes, seeds)
    except SystemExit:
        raise
    except BaseException as error:
        run.fail(error, step, episodes)
        raise
    finally:
        env.close()
        evaluator.close()
    log.info("final evaluation of the best checkpoint: %.1f ± %.1f over %d episodes",
             final.mean, final.std, len(final.returns))
    log.info("run directory: %s | best checkpoint: %s", run_dir, run.best_path)
    return final.mean


def resume(checkpoint: dict[str, Any], agent: DQNAgent, buffer: ReplayBuffer,
           stats: TrainingStats, run: RunRecord, rngs: dict[str, Any]) -> tuple[int, int]:
    """Load a full-state last.pt into the freshly built parts; returns (step, episodes)."""
    state = checkpoint["state"]
    agent.load_state_dict(checkpoint["model"], state["agent"])
    buffer.load_state_dict(state["buffer"])
    stats.load_state_dict(state["stats"])
    run.load_state_dict(state["record"], checkpoint["env_step"])
    restore_rngs(state["rngs"], rngs)
    return checkpoint["env_step"], state["episodes"]


def _checkpoint_due(t, step: int, run: RunRecord) -> bool:
    """A full-state last.pt is due at the first episode end after every
    `train.checkpoint_every` env steps (episode ends are where the env can be restored)."""
    every = t.checkpoint_every
    return every is not None and step // every > run.saved_step // every


class StopSignals:
    """SIGINT/SIGTERM (Ctrl-C, a cluster's preemption) ask the loop to stop at the next
    episode end, where it saves last.pt; a second signal stops at once."""

    def __init__(self) -> None:
        self.requested = self.received = False
        self.signal_number = 0
        self.name = ""
        self.previous: dict[int, Any] = {}

    def _handle(self, number: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested, self.signal_number = True, number
        self.name = signal.Signals(number).name

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self.previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)


def budget_spent(t, step: int, episodes: int) -> bool:
    """Whether the env-step or the episode budget of `t` (cfg.train) has run out."""
    return ((t.total_steps is not None and step >= t.total_steps)
            or (t.total_episodes is not None and episodes >= t.total_episodes))


def evaluation_due(cfg: Config, step: int, episodes: int, episode_ended: bool) -> bool:
    """Whether a periodic evaluation falls on this env step (or episode end)."""
    e = cfg.eval
    return bool((e.every_steps and step % e.every_steps == 0)
                or (e.every_episodes and episode_ended and episodes % e.every_episodes == 0))
