"""Train a DQN agent: `python -m dqn.train [group=option ...] [key=value ...]`.

Hydra composes conf/ into a config; `validate` checks it before anything is built; the
loop below collects experience, updates the agent, evaluates greedily every period,
checkpoints the best model, and ends with a final evaluation of that best checkpoint.
"""

from __future__ import annotations

import importlib
import json
import logging
import random
import string
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
import numpy as np
from hydra._internal.hydra import Hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from dqn.config import (
    CONF_DIR,
    GROUPS,
    Config,
    ConfigError,
    register_schemas,
    resolve_device,
    validate,
)
from dqn.exploration import build_schedule
from dqn.sweeps import record_failure, refresh_sweep_summary
from dqn.tracking import MetricsFile, Tracker, build_tracker, flatten

if TYPE_CHECKING:
    import torch

    from dqn.agent import DQNAgent
    from dqn.buffers import ReplayBuffer
    from dqn.checkpoint import load_checkpoint, save_checkpoint
    from dqn.envs import make_env, space_sizes
    from dqn.evaluation import EvalResult, Evaluator
    from dqn.networks import build_q_network
    from dqn.targets import build_target_updater

# The parts that import torch and gymnasium (2-3 s together) are imported when training
# starts, or on first access as attributes of this module, so that `--help` and a
# config mistake answer at once.
_TRAINING_PARTS = {
    "torch": "torch",
    "DQNAgent": "dqn.agent",
    "ReplayBuffer": "dqn.buffers",
    "load_checkpoint": "dqn.checkpoint",
    "save_checkpoint": "dqn.checkpoint",
    "make_env": "dqn.envs",
    "space_sizes": "dqn.envs",
    "EvalResult": "dqn.evaluation",
    "Evaluator": "dqn.evaluation",
    "build_q_network": "dqn.networks",
    "build_target_updater": "dqn.targets",
}


def __getattr__(name: str) -> Any:
    if name not in _TRAINING_PARTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(_TRAINING_PARTS[name])
    value = module if name == _TRAINING_PARTS[name] else getattr(module, name)
    globals()[name] = value
    return value


def _import_training_parts() -> None:
    """Bind the training parts as globals, keeping any bound already (a test's stand-in)."""
    for name in _TRAINING_PARTS:
        if name not in globals():
            __getattr__(name)


log = logging.getLogger("dqn")
register_schemas()


def seed_streams(seed: int, names: tuple[str, ...]) -> dict[str, int]:
    """Independent, reproducible sub-seeds for each consumer of randomness."""
    children = np.random.SeedSequence(seed).spawn(len(names))
    return {name: int(child.generate_state(1)[0]) for name, child in zip(names, children)}


def train(cfg: Config, run_dir: Path, run_name: str, resolved: dict[str, Any]) -> float:
    """Run one training job in `run_dir`; returns the final evaluation mean return."""
    start = time.perf_counter()
    _import_training_parts()
    seeds = seed_streams(cfg.seed, ("actions", "replay", "eval", "final"))
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
    tracker = build_tracker(cfg.logger, run_name, flatten(resolved))
    run = RunRecord(cfg, run_dir, resolved, tracker, start)

    t, b = cfg.train, cfg.buffer
    stats = TrainingStats()
    obs, _ = env.reset(seed=cfg.seed)
    step = episodes = 0
    epsilon = epsilon_at(0, 0)
    try:
        with run.progress() as progress:
            while not _budget_spent(t, step, episodes):
                epsilon = epsilon_at(step, episodes)
                action = agent.act(obs, epsilon)
                next_obs, reward, terminated, truncated, _ = env.step(action)
                buffer.add(obs, action, reward, next_obs, terminated)
                stats.add_reward(reward)
                obs, step = next_obs, step + 1
                episode_ended = terminated or truncated
                if episode_ended:
                    episodes += 1
                    stats.end_episode()
                    obs, _ = env.reset()
                if step >= b.learning_starts and step % t.train_frequency == 0:
                    for _ in range(t.gradient_steps):
                        stats.add_update(*agent.update(buffer.sample(b.batch_size)))
                if step % run.log_every == 0:
                    run.log_training(stats, step, episodes, epsilon)
                if _evaluation_due(cfg, step, episodes, episode_ended):
                    if run.evaluate(agent, evaluator, step, episodes, epsilon):
                        break  # target return reached and confirmed
                progress.update(step, episodes, stats.last_return, run.best_return, epsilon)
        if run.last_eval is None or run.last_eval[0] != step:
            run.evaluate(agent, evaluator, step, episodes, epsilon)
        _, last_result = run.last_eval
        run.save("last", agent, step, eval_return_mean=last_result.mean,
                 eval_return_std=last_result.std)
        final = final_evaluation(run.best_path, cfg, seeds["final"])
        run.finish(final, step, episodes)
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


def _budget_spent(t, step: int, episodes: int) -> bool:
    return ((t.total_steps is not None and step >= t.total_steps)
            or (t.total_episodes is not None and episodes >= t.total_episodes))


def _evaluation_due(cfg: Config, step: int, episodes: int, episode_ended: bool) -> bool:
    e = cfg.eval
    return bool((e.every_steps and step % e.every_steps == 0)
                or (e.every_episodes and episode_ended and episodes % e.every_episodes == 0))


def final_evaluation(best_path: Path, cfg: Config, seed: int) -> EvalResult:
    """Reload the best checkpoint from disk and play `eval.final_episodes` fresh episodes."""
    checkpoint = load_checkpoint(best_path)
    env = make_env(cfg.env)
    network = build_q_network(cfg.network, *space_sizes(env))
    env.close()
    network.load_state_dict(checkpoint["model"])
    network.eval()

    @torch.no_grad()
    def policy(obs: np.ndarray) -> np.ndarray:
        return network(torch.as_tensor(obs, dtype=torch.float32)).argmax(dim=1).numpy()

    evaluator = Evaluator(cfg.env, seed)
    try:
        return evaluator.run(policy, cfg.eval.final_episodes)
    finally:
        evaluator.close()


class TrainingStats:
    """Aggregates between two log points: finished episodes, TD loss and Q values."""

    def __init__(self) -> None:
        self.episode_return = 0.0
        self.episode_length = 0
        self.returns: list[float] = []
        self.lengths: list[int] = []
        self.last_return = float("nan")
        # Per-update tensors, summed when flushed (or every 1024 updates, to bound memory)
        # rather than one addition per update.
        self.losses: list[torch.Tensor] = []
        self.q_means: list[torch.Tensor] = []
        self.updates = 0

    def add_reward(self, reward: float) -> None:
        self.episode_return += float(reward)
        self.episode_length += 1

    def end_episode(self) -> None:
        self.returns.append(self.episode_return)
        self.lengths.append(self.episode_length)
        self.last_return = self.episode_return
        self.episode_return, self.episode_length = 0.0, 0

    def add_update(self, loss: torch.Tensor, q_mean: torch.Tensor) -> None:
        self.losses.append(loss)
        self.q_means.append(q_mean)
        self.updates += 1
        if len(self.losses) > 1024:
            self.losses = [torch.stack(self.losses).sum()]
            self.q_means = [torch.stack(self.q_means).sum()]

    def flush(self) -> dict[str, float]:
        """The aggregates since the last flush, then start afresh."""
        metrics: dict[str, float] = {}
        if self.returns:
            metrics["train/episode_return"] = float(np.mean(self.returns))
            metrics["train/episode_length"] = float(np.mean(self.lengths))
        if self.updates:
            metrics["train/loss"] = float(torch.stack(self.losses).sum()) / self.updates
            metrics["train/q_mean"] = float(torch.stack(self.q_means).sum()) / self.updates
        self.returns, self.lengths = [], []
        self.losses, self.q_means, self.updates = [], [], 0
        return metrics


class RunRecord:
    """Everything a run writes: checkpoints, metrics.csv, summary.json, tracker, console."""

    def __init__(self, cfg: Config, run_dir: Path, resolved: dict[str, Any],
                 tracker: Tracker, start: float) -> None:
        self.cfg, self.run_dir, self.resolved, self.tracker = cfg, run_dir, resolved, tracker
        self.start = start
        self.log_every = getattr(cfg.logger, "every_steps", 1_000)
        self.checkpoints = run_dir / "checkpoints"
        self.best_path = self.checkpoints / "best.pt"
        self.metrics = MetricsFile(run_dir / "metrics.csv")
        self.best_return, self.best_step = float("-inf"), None
        self.last_eval: tuple[int, EvalResult] | None = None  # (env step, result)
        self.solved_step: int | None = None
        self.solved_seconds: float | None = None
        self.window = (0, start)  # (env step, time) at the last training log, for sps

    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def progress(self) -> "Progress":
        t = self.cfg.train
        return Progress(t.total_steps, t.total_episodes)

    def log_training(self, stats: TrainingStats, step: int, episodes: int, epsilon: float) -> None:
        now = time.perf_counter()
        metrics = stats.flush()
        metrics["train/epsilon"] = epsilon
        metrics["train/episodes"] = episodes
        metrics["perf/sps"] = (step - self.window[0]) / max(now - self.window[1], 1e-9)
        self.window = (step, now)
        self.tracker.log(metrics, step)

    def save(self, name: str, agent: DQNAgent, step: int, **scores: float) -> Path:
        path = self.checkpoints / f"{name}.pt"
        save_checkpoint(path, agent.online.state_dict(), self.resolved, env_step=step,
                        gradient_steps=agent.gradient_steps, **scores)
        return path

    def evaluate(self, agent: DQNAgent, evaluator: Evaluator, step: int, episodes: int,
                 epsilon: float) -> bool:
        """Evaluate, checkpoint if best; True when the target return is confirmed."""
        result = evaluator.run(agent.greedy, self.cfg.eval.episodes)
        self.last_eval = (step, result)
        target = self.cfg.train.target_return
        solved = False
        score = result
        if target is not None and result.mean >= target:
            score = evaluator.run(agent.greedy, self.cfg.eval.final_episodes)
            solved = score.mean >= target
            log.info("step %d: evaluation %.1f reached the target %.1f; confirmation over "
                     "%d episodes: %.1f", step, result.mean, target, len(score.returns), score.mean)
        if score.mean > self.best_return or solved:
            self.best_return, self.best_step = score.mean, step
            self.save("best", agent, step, eval_return_mean=score.mean, eval_return_std=score.std)
        if solved:
            self.solved_step, self.solved_seconds = step, self.seconds()
        self.metrics.append({
            "env_step": step, "episodes": episodes, "wall_seconds": round(self.seconds(), 3),
            "eval_return_mean": result.mean, "eval_return_std": result.std,
            "eval_return_min": float(result.returns.min()),
            "eval_return_max": float(result.returns.max()),
            "best_return": self.best_return, "epsilon": epsilon})
        self.tracker.log({"eval/return_mean": result.mean, "eval/return_std": result.std,
                          "eval/best_return": self.best_return}, step)
        if not sys.stderr.isatty():
            log.info("step %d | eval %.1f ± %.1f | best %.1f | eps %.3f", step,
                     result.mean, result.std, self.best_return, epsilon)
        return solved

    def _summary(self, status: str, step: int, episodes: int, **extra: Any) -> dict[str, Any]:
        target = self.cfg.train.target_return
        return {
            "status": status, "seed": self.cfg.seed, "env_steps": step, "episodes": episodes,
            "wall_seconds": round(self.seconds(), 3),
            "best_eval_return": None if self.best_step is None else self.best_return,
            "best_eval_step": self.best_step,
            "target_return": target, "solved": self.solved_step is not None,
            "solved_step": self.solved_step, "solved_seconds": self.solved_seconds,
            "swanlab_run_id": self.tracker.run_id, **extra}

    def _write_summary(self, summary: dict[str, Any]) -> None:
        path = self.run_dir / "summary.json"
        path.write_text(json.dumps(summary, indent=2) + "\n")

    def finish(self, final: EvalResult, step: int, episodes: int) -> None:
        self.metrics.close()
        self._write_summary(self._summary(
            "completed", step, episodes,
            final_eval={"mean": final.mean, "std": final.std, "episodes": len(final.returns),
                        "min": float(final.returns.min()), "max": float(final.returns.max())}))
        self.tracker.log({"final/return_mean": final.mean, "final/return_std": final.std}, step)
        self.tracker.finish()

    def fail(self, error: BaseException, step: int, episodes: int) -> None:
        status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        message = f"{type(error).__name__}: {error}"
        self.metrics.close()
        self._write_summary(self._summary(status, step, episodes, error=message))
        self.tracker.finish(crashed=True, error=message)


class Progress:
    """A console progress bar over env steps (or episodes when only they are budgeted);
    silent when stderr is not a terminal, where periodic log lines take its place."""

    def __init__(self, total_steps: int | None, total_episodes: int | None) -> None:
        self.by_steps = total_steps is not None
        self.bar = tqdm(total=total_steps if self.by_steps else total_episodes,
                        unit="step" if self.by_steps else "episode", disable=None,
                        dynamic_ncols=True, smoothing=0.1)
        self.redirect = logging_redirect_tqdm()
        self.next_refresh = time.perf_counter()

    def __enter__(self) -> "Progress":
        self.redirect.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.close()
        self.redirect.__exit__(*exc)

    def update(self, step: int, episodes: int, last_return: float, best: float,
               epsilon: float) -> None:
        now = time.perf_counter()
        if self.bar.disable or now < self.next_refresh:
            return
        self.next_refresh = now + 0.25
        self.bar.n = step if self.by_steps else episodes
        self.bar.set_postfix_str(f"return {last_return:.1f} | best eval {best:.1f} | "
                                 f"eps {epsilon:.3f}", refresh=False)
        self.bar.refresh()


def _help(self: Hydra, help_cfg: DictConfig, cfg: DictConfig, args_parser: Any,
          resolve: bool) -> str:
    """Hydra.get_help, listing Hydra's or the app's config groups only if the template
    shows them. Hydra lists both for every --help (about 140 groups with the schemas and
    plugins, 4 s here); our template lists the groups itself, from conf/."""
    template = help_cfg.template
    values = {"FLAGS_HELP": self.format_args_help(args_parser),
              "CONFIG": OmegaConf.to_yaml(cfg, resolve=resolve)}
    if "HYDRA_CONFIG_GROUPS" in template:
        values["HYDRA_CONFIG_GROUPS"] = self.format_config_groups(
            lambda group: group == "hydra" or group.startswith("hydra/"))
    if "APP_CONFIG_GROUPS" in template:
        values["APP_CONFIG_GROUPS"] = self.format_config_groups(
            lambda group: not (group == "hydra" or group.startswith("hydra/")))
    return string.Template(template).substitute(values)


Hydra.get_help = _help


def _run_name(cfg: Config) -> str:
    explicit = getattr(cfg.logger, "experiment_name", None)
    return explicit or HydraConfig.get().job.override_dirname or "default"


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Hydra task: validate, then train; returns the final evaluation mean (for sweepers).

    In a sweep (-m), a failing job is recorded as failed in its summary.json, returns
    None (a failed trial for Optuna) and the sweep goes on; each ending job refreshes the
    sweep's summary files.
    """
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode != RunMode.MULTIRUN:
        try:
            config = validate(cfg)
        except ConfigError as error:
            print(f"Config error: {error}", file=sys.stderr)
            raise SystemExit(2) from None
        return train(config, run_dir, _run_name(config), _resolved(cfg))
    try:
        config = validate(cfg)
        return train(config, run_dir, _run_name(config), _resolved(cfg))
    except Exception as error:  # noqa: BLE001 - one job's failure must not end the sweep
        log.error("job failed: %s: %s", type(error).__name__, error)
        record_failure(run_dir, cfg.get("seed"), error)
        return None
    finally:
        refresh_sweep_summary(Path(hydra_cfg.sweep.dir))


def _resolved(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain containers, with the option chosen in each group."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    choices = HydraConfig.get().runtime.choices
    resolved["choices"] = {group: choices.get(group) for group in GROUPS}
    return resolved


if __name__ == "__main__":
    main()
