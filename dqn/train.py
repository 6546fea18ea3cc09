"""Train a DQN agent: `python -m dqn.train [group=option ...] [key=value ...]`.

Hydra composes conf/ into a config; `validate` checks it before anything is built; the
loop below collects experience, updates the agent, evaluates greedily every period,
checkpoints the best model, and ends with a final evaluation of that best checkpoint.
"""

from __future__ import annotations

import json
import logging
import random
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from dqn.agent import DQNAgent
from dqn.buffers import ReplayBuffer
from dqn.checkpoint import CheckpointError, capture_rngs, load_checkpoint, restore_rngs
from dqn.config import (
    CONF_DIR,
    Config,
    ConfigError,
    config_from_dict,
    register_schemas,
    resolve_device,
    to_stored,
    validate,
)
from dqn.envs import make_env, space_sizes
from dqn.evaluation import Evaluator, play
from dqn.exploration import build_schedule
from dqn.networks import build_q_network
from dqn.policy import TrainedPolicy
from dqn.records import NonFiniteError, RunRecord, TrainingStats
from dqn.sweeps import record_failure, refresh_sweep_summary
from dqn.targets import build_target_updater
from dqn.tracking import build_tracker, flatten

log = logging.getLogger("dqn")
register_schemas()


def seed_streams(seed: int, names: tuple[str, ...]) -> dict[str, int]:
    """Independent, reproducible sub-seeds for each consumer of randomness."""
    children = np.random.SeedSequence(seed).spawn(len(names))
    return {name: int(child.generate_state(1)[0]) for name, child in zip(names, children)}


def train(cfg: Config, run_dir: Path, run_name: str, stored_config: dict[str, Any],
          resume_from: dict[str, Any] | None = None) -> float:
    """Run one training job in `run_dir` (or continue the one `resume_from`, a full-state
    last.pt, was saved from); returns the final evaluation mean return."""
    seeds = seed_streams(cfg.seed, ("actions", "replay", "eval", "final", "video"))
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.torch_threads)
    device = resolve_device(cfg.device)

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
            while not _budget_spent(t, step, episodes) and not stop.received:
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
                    for _ in range(t.gradient_steps):
                        stats.add_update(*agent.update(buffer.sample(b.batch_size)))
                if step % run.log_every == 0:
                    run.log_training(stats, step, episodes, epsilon)
                if _evaluation_due(cfg, step, episodes, episode_ended):
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
        best = TrainedPolicy(run.best_path)  # read back from disk, as a user would
        final = play(best, cfg.env, cfg.eval.final_episodes, seeds["final"])
        if cfg.video.episodes:
            run.record_video(best, step, seeds["video"])
        run.finish(final, step, episodes)
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


def _budget_spent(t, step: int, episodes: int) -> bool:
    return ((t.total_steps is not None and step >= t.total_steps)
            or (t.total_episodes is not None and episodes >= t.total_episodes))


def _evaluation_due(cfg: Config, step: int, episodes: int, episode_ended: bool) -> bool:
    e = cfg.eval
    return bool((e.every_steps and step % e.every_steps == 0)
                or (e.every_episodes and episode_ended and episodes % e.every_episodes == 0))




def _run_name(cfg: Config) -> str:
    explicit = getattr(cfg.logger, "experiment_name", None)
    return explicit or HydraConfig.get().job.override_dirname or "default"


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Hydra task: validate, then train; returns the final evaluation mean (for sweepers).

    In a sweep (-m), a failing job is recorded as failed in its summary.json, returns
    None (a failed trial for Optuna) and the sweep goes on; each ending job refreshes the
    sweep's summary files. A sweep job whose folder holds an unfinished run (a requeued,
    preempted job) continues it.
    """
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode != RunMode.MULTIRUN:
        try:
            return _run(cfg, run_dir)
        except (ConfigError, CheckpointError, NonFiniteError, OSError) as error:
            print(f"{_error_title(error)}: {error}", file=sys.stderr)
            raise SystemExit(2 if isinstance(error, ConfigError) else 1) from None
    try:
        return _run(cfg, run_dir, continue_unfinished=True)
    except Exception as error:  # noqa: BLE001 - one job's failure must not end the sweep
        log.error("job failed: %s: %s", type(error).__name__, error)
        record_failure(run_dir, cfg.get("seed"), error)
        return None
    finally:
        refresh_sweep_summary(Path(hydra_cfg.sweep.dir))


def _error_title(error: Exception) -> str:
    titles = {ConfigError: "Config error", CheckpointError: "Checkpoint error",
              NonFiniteError: "Training stopped"}
    return titles.get(type(error), "File error")


def _run(cfg: DictConfig, run_dir: Path, continue_unfinished: bool = False) -> float:
    """Validate and train, or continue the run that resume= (or a requeued job) names."""
    if cfg.get("resume"):
        others = [o for o in HydraConfig.get().overrides.task if not o.startswith("resume=")]
        if others:
            raise ConfigError(f"resume={cfg.resume!r} continues a run with the config it was "
                              f"started with; drop the other overrides: {' '.join(others)}")
        return _continue(Path(cfg.resume))
    last = run_dir / "checkpoints" / "last.pt"
    if continue_unfinished and last.exists() and not _finished(run_dir):
        return _continue(run_dir)
    config = validate(cfg)
    _check_writable(run_dir)
    stored = to_stored(cfg, config, HydraConfig.get().runtime.choices)
    return train(config, run_dir, _run_name(config), stored)


def _continue(run_dir: Path) -> float:
    if not run_dir.is_dir():
        raise ConfigError(f"resume={str(run_dir)!r}: no such run directory")
    if _finished(run_dir):
        raise ConfigError(f"resume={str(run_dir)!r}: that run already completed "
                          "(summary.json says so); nothing to continue")
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    if "state" not in checkpoint or checkpoint["state"].get("finished"):
        raise CheckpointError(f"{run_dir / 'checkpoints' / 'last.pt'}: holds no training "
                              "state to continue from")
    config = config_from_dict(checkpoint["config"])
    _check_writable(run_dir)
    name = getattr(config.logger, "experiment_name", None) or run_dir.name
    return train(config, run_dir, f"{name} (resumed)", checkpoint["config"], checkpoint)


def _finished(run_dir: Path) -> bool:
    summary = run_dir / "summary.json"
    return summary.exists() and json.loads(summary.read_text()).get("status") == "completed"


def _check_writable(run_dir: Path) -> None:
    """Fail before training if checkpoints cannot be written where they must go."""
    probe = run_dir / "checkpoints" / ".write-test"
    try:
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as error:
        raise ConfigError(f"cannot write checkpoints to {probe.parent}: {error.strerror}; "
                          "choose a writable hydra.run.dir") from None


# Hydra's own flags; with any of them Hydra answers by itself.
_HYDRA_FLAGS = ("-h", "--help", "--hydra-help", "-c", "--cfg", "-i", "--info", "-p",
                "--package", "--resolve", "-sc", "--shell-completion", "-m", "--multirun",
                "-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir",
                "--experimental-rerun", "--version")


def cli(args: list[str]) -> None:
    """`python -m dqn.train ARGS`: a mistake in the overrides is reported in one line
    before Hydra starts (Hydra's own report spans a dozen), then Hydra runs the task."""
    if not any(a.split("=")[0] in _HYDRA_FLAGS for a in args):
        from hydra import compose, initialize_config_dir
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        try:
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                cfg = compose("config", overrides=args, return_hydra_config=True)
            if cfg.hydra.mode != RunMode.MULTIRUN:  # a sweep's jobs fail one by one
                with open_dict(cfg):
                    run_dir = Path(cfg.pop("hydra").run.dir)
                if cfg.resume and not Path(cfg.resume).is_dir():
                    raise ConfigError(f"resume={cfg.resume!r}: no such run directory")
                if not cfg.resume:
                    validate(cfg)
                _check_creatable(run_dir)
        except (HydraException, OmegaConfBaseException, ConfigError) as error:
            cause = f"\n{error.__cause__}" if error.__cause__ else ""
            print(f"Config error: {one_line(f'{error}{cause}')}", file=sys.stderr)
            raise SystemExit(2) from None
    main()


def _check_creatable(run_dir: Path) -> None:
    """Hydra creates the run directory before the task starts and fails with a traceback
    if it cannot; try it first (and leave nothing behind)."""
    missing = [p for p in (run_dir, *run_dir.parents) if not p.exists()]
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"hydra.run.dir={str(run_dir)!r} cannot be created: "
                          f"{error.strerror}") from None
    for path in missing:  # deepest first
        path.rmdir()


def one_line(message: str) -> str:
    """Hydra's and OmegaConf's multi-line messages, condensed to what names the mistake."""
    noise = ("full_key:", "object_type=", "reference_type=", "Config search path",
             "provider=", "Set the environment variable", "To append to your config")
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    options = []
    if any(line.startswith("Available options") for line in lines):
        start = next(i for i, line in enumerate(lines) if line.startswith("Available options"))
        for line in lines[start + 1:]:
            if line.startswith(noise):
                break
            options.append(line)
    kept = [line for line in lines if not line.startswith(noise)
            and not line.startswith("Available options") and line not in options]
    text = " ".join(kept[:2]).replace(".. ", ". ")
    return f"{text} (options: {', '.join(options)})" if options else text


if __name__ == "__main__":
    cli(sys.argv[1:])
