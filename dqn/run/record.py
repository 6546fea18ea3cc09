"""What a run records: training aggregates, checkpoints, metrics.csv, summary.json, the
tracker and the console. The training loop calls these; it never writes files itself.

A run is one agent: a single run, or one seed of a num_seeds job (its own folder)."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from dqn.agent import Agent
from dqn.config import Config
from dqn.exploration import Exploration
from dqn.run.checkpoint import save_checkpoint
from dqn.run.evaluation import EvalResult, Evaluator, play
from dqn.run.policy import TrainedPolicy
from dqn.run.tracking import EPISODE_COLUMNS, METRICS_COLUMNS, CsvFile, Tracker
from dqn.run.video import record_episodes

log = logging.getLogger("dqn")


class NonFiniteError(RuntimeError):
    """The TD loss or the Q-values stopped being finite numbers."""


BIRTH_RECORD = ".run.json"  # written when a run starts: which run its folder holds


def write_birth_record(folder: Path, run_id: str, name: str) -> None:
    """Record in `folder` the run it holds: its id (last.pt carries the same) and name."""
    write_json(folder / BIRTH_RECORD, {"run_id": run_id, "run_name": name})


def read_birth_record(folder: Path) -> dict[str, Any]:
    """What `write_birth_record` wrote in `folder`, or {} (none, or unreadable)."""
    try:
        record = json.loads((folder / BIRTH_RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write `data` to `path` through a temporary file and a rename: a full disk or a kill
    leaves the earlier file, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_HYDRA_PLAIN = re.compile(r"[A-Za-z0-9_\-/+.%@]+")


def override(key: str, value: str) -> str:
    """`key=value` as one shell word that Hydra parses back to `value` (quoted for
    Hydra where the value holds `=`, spaces or other characters of its grammar)."""
    if not _HYDRA_PLAIN.fullmatch(value):
        # Hydra reads a backslash as an escape only in a run before a quote or the end
        value = "'" + re.sub(r"(\\*)('|$)", lambda m: m[1] * 2 + "\\" * len(m[2]) + m[2],
                             value) + "'"
    return shell_word(f"{key}={value}")


def shell_word(word: str) -> str:
    """`word` quoted for a POSIX shell, in double quotes where that reads better."""
    if re.fullmatch(r"[A-Za-z0-9_\-/+.%@=,:]+", word):  # nothing the shell expands
        return word
    if not re.search(r'["$`\\!]', word):
        return f'"{word}"'
    return shlex.quote(word)


def resume_command(run_dir: Path) -> str:
    """The command that continues the run in `run_dir`, ready to paste."""
    return f"python -m dqn.train {override('resume', str(run_dir))}"


class TrainingStats:
    """Aggregates between two log points: finished episodes (of any of the run's N
    envs), TD loss and Q values."""

    def __init__(self, device: torch.device, num_envs: int = 1) -> None:
        self.episode_returns = np.zeros(num_envs)  # the running episode of each env
        self.episode_lengths = np.zeros(num_envs, dtype=np.int64)
        self.returns: list[float] = []
        self.lengths: list[int] = []
        self.last_return = float("nan")
        self.last_finite_loss = float("nan")
        self.zero = torch.zeros((), device=device)
        self.loss_sum, self.q_sum, self.updates = self.zero, self.zero, 0

    def add_rewards(self, rewards: np.ndarray) -> None:
        """One vector step's rewards (N,)."""
        self.episode_returns += rewards
        self.episode_lengths += 1

    def end_episode(self, env: int) -> tuple[float, int]:
        """Close the running episode of env `env`; returns its return and length."""
        ended = float(self.episode_returns[env]), int(self.episode_lengths[env])
        self.returns.append(ended[0])
        self.lengths.append(ended[1])
        self.last_return = ended[0]
        self.episode_returns[env], self.episode_lengths[env] = 0.0, 0
        return ended

    def add_update(self, loss: torch.Tensor, q_mean: torch.Tensor, count: int = 1) -> None:
        """Add one update's loss and mean Q (or their sums over `count` updates)."""
        self.loss_sum = self.loss_sum + loss
        self.q_sum = self.q_sum + q_mean
        self.updates += count

    def check_finite(self, step: int) -> None:
        """Raise NonFiniteError if the loss or the Q-values went NaN or infinite since the
        last flush (checked at log points and evaluations, not every step)."""
        if not self.updates:
            return
        loss, q_mean = float(self.loss_sum) / self.updates, float(self.q_sum) / self.updates
        if not (math.isfinite(loss) and math.isfinite(q_mean)):
            raise NonFiniteError(
                f"the TD loss or the Q-values became non-finite (mean loss {loss}, mean Q "
                f"{q_mean}) by env step {step}; last finite mean loss: "
                f"{self.last_finite_loss:.6g}. best.pt is kept; try a lower optimizer.lr, "
                f"gradient clipping or train.loss=huber")

    def flush(self, step: int) -> dict[str, float]:
        """The aggregates since the last flush, then start afresh."""
        self.check_finite(step)
        metrics: dict[str, float] = {}
        if self.returns:
            metrics["train/episode_return"] = float(np.mean(self.returns))
            metrics["train/episode_length"] = float(np.mean(self.lengths))
        if self.updates:
            loss, q_mean = float(self.loss_sum) / self.updates, float(self.q_sum) / self.updates
            metrics["train/loss"], metrics["train/q_mean"] = loss, q_mean
            self.last_finite_loss = loss
        self.returns, self.lengths = [], []
        self.loss_sum, self.q_sum, self.updates = self.zero, self.zero, 0
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {"episode_returns": self.episode_returns.tolist(),
                "episode_lengths": self.episode_lengths.tolist(),
                "returns": self.returns, "lengths": self.lengths,
                "last_return": self.last_return, "last_finite_loss": self.last_finite_loss,
                "loss_sum": float(self.loss_sum), "q_sum": float(self.q_sum),
                "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.episode_returns[:] = state["episode_returns"]
        self.episode_lengths[:] = state["episode_lengths"]
        self.returns, self.lengths = list(state["returns"]), list(state["lengths"])
        self.last_return, self.last_finite_loss = state["last_return"], state["last_finite_loss"]
        self.loss_sum = torch.full_like(self.zero, state["loss_sum"])
        self.q_sum = torch.full_like(self.zero, state["q_sum"])
        self.updates = state["updates"]


class RunRecord:
    """Everything a run writes: checkpoints, metrics.csv, episodes.csv, summary.json,
    videos, the tracker and the console."""

    def __init__(self, cfg: Config, run_dir: Path, name: str, stored_config: dict[str, Any],
                 tracker: Tracker, exploration: Exploration, label: str = "") -> None:
        self.cfg, self.run_dir, self.stored_config = cfg, run_dir, stored_config
        self.name, self.tracker = name, tracker
        self.exploration = exploration  # what it logs: its scalars(), shown by describe()
        self.label = label  # prefixes its console lines when several runs share a process
        self.start = time.perf_counter()
        self.log_every = cfg.logger.every_steps
        self.checkpoints = run_dir / "checkpoints"
        self.best_path = self.checkpoints / "best.pt"
        self.metrics = CsvFile(run_dir / "metrics.csv",
                               (*METRICS_COLUMNS, *exploration.scalars(0, 0)))
        self.episodes = CsvFile(run_dir / "episodes.csv", EPISODE_COLUMNS)
        self.best_return, self.best_step = float("-inf"), None
        self.last_eval: tuple[int, EvalResult] | None = None  # (env step, result)
        self.solved_step: int | None = None
        self.solved_seconds: float | None = None
        self.window = (0, self.start)  # (env step, time) at the last training log, for sps

    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def log_training(self, stats: TrainingStats, step: int, episodes: int,
                     exploration: dict[str, float]) -> None:
        """The training aggregates and the exploration's scalars (train/NAME) to the
        tracker."""
        now = time.perf_counter()
        metrics = stats.flush(step)
        metrics.update({f"train/{name}": value for name, value in exploration.items()})
        metrics["train/episodes"] = episodes
        metrics["perf/sps"] = (step - self.window[0]) / max(now - self.window[1], 1e-9)
        self.window = (step, now)
        self.tracker.log(metrics, step)

    def log_episode(self, episode: int, step: int, episode_return: float, length: int) -> None:
        self.episodes.append({"episode": episode, "env_step": step, "return": episode_return,
                              "length": length})

    def save(self, name: str, agent: Agent, step: int, **info: Any) -> Path:
        """checkpoints/NAME.pt with the agent's weights, this run's config and `info`."""
        path = self.checkpoints / f"{name}.pt"
        save_checkpoint(path, agent.weights(), self.stored_config, env_step=step,
                        gradient_steps=agent.gradient_steps, **info)
        return path

    def score(self) -> dict[str, float]:
        """The latest evaluation's mean and std, as checkpoints carry them."""
        if self.last_eval is None:
            return {}
        return {"eval_return_mean": self.last_eval[1].mean,
                "eval_return_std": self.last_eval[1].std}

    def state_dict(self) -> dict[str, Any]:
        last = None if self.last_eval is None else (
            self.last_eval[0], self.last_eval[1].returns.tolist(),
            self.last_eval[1].lengths.tolist())
        return {"best_return": self.best_return, "best_step": self.best_step,
                "solved_step": self.solved_step, "solved_seconds": self.solved_seconds,
                "seconds": self.seconds(), "metrics_rows": self.metrics.rows,
                "episode_rows": self.episodes.rows,
                "last_eval": last, "swanlab_run_id": self.tracker.run_id,
                "name": self.name}

    def load_state_dict(self, state: dict[str, Any], step: int) -> None:
        self.best_return, self.best_step = state["best_return"], state["best_step"]
        self.solved_step, self.solved_seconds = state["solved_step"], state["solved_seconds"]
        self.start = time.perf_counter() - state["seconds"]
        self.window = (step, time.perf_counter())
        self.metrics.rewrite(state["metrics_rows"])
        self.episodes.rewrite(state["episode_rows"])
        if state["last_eval"] is not None:
            at, returns, lengths = state["last_eval"]
            self.last_eval = (at, EvalResult(np.array(returns), np.array(lengths)))

    def evaluate(self, agent: Agent, evaluator: Evaluator, step: int, episodes: int,
                 exploration: dict[str, float], result: EvalResult | None = None) -> bool:
        """Evaluate (or take `result`, an evaluation already played), checkpoint if best;
        True when the target return is confirmed. The metrics.csv row carries the
        exploration's scalars at this step."""
        if result is None:
            result = evaluator.run(agent.greedy, self.cfg.eval.episodes)
        self.last_eval = (step, result)
        target = self.cfg.train.target_return
        solved = False
        score = result
        if target is not None and result.mean >= target:
            score = evaluator.run(agent.greedy, self.cfg.eval.final_episodes)
            solved = score.mean >= target
            log.info("%sstep %d: evaluation %.1f reached the target %.1f; confirmation "
                     "over %d episodes: %.1f", self.label, step, result.mean, target,
                     len(score.returns), score.mean)
        if score.mean > self.best_return or solved:
            self.best_return, self.best_step = score.mean, step
            self.save("best", agent, step, eval_return_mean=score.mean,
                      eval_return_std=score.std)
        if solved:
            self.solved_step, self.solved_seconds = step, self.seconds()
        self.metrics.append({
            "env_step": step, "episodes": episodes, "wall_seconds": round(self.seconds(), 3),
            "eval_return_mean": result.mean, "eval_return_std": result.std,
            "eval_return_min": float(result.returns.min()),
            "eval_return_max": float(result.returns.max()),
            "best_return": self.best_return, **exploration})
        self.tracker.log({"eval/return_mean": result.mean, "eval/return_std": result.std,
                          "eval/best_return": self.best_return}, step)
        if not sys.stderr.isatty():
            log.info("%sstep %d | eval %.1f ± %.1f | best %.1f | %s", self.label, step,
                     result.mean, result.std, self.best_return,
                     self.exploration.describe(exploration))
        return solved

    def record_video(self, best: TrainedPolicy, step: int, seed: int) -> None:
        """Record `video.episodes` greedy episodes of the best checkpoint to videos/ and its
        GIF to the tracker. Like tracking, a failure warns and leaves the run's results."""
        v = self.cfg.video
        try:
            recording = record_episodes(best, self.cfg.env, self.run_dir / "videos",
                                        best.path.stem, v.episodes, seed, v.max_steps,
                                        self.cfg.eval.epsilon)
        except Exception as error:  # noqa: BLE001 - the trained agent is saved already
            log.warning("recording a video failed (%s: %s); python -m dqn.evaluate "
                        "checkpoint=%s video.episodes=%d tries again", type(error).__name__,
                        error, self.run_dir, v.episodes)
            return
        caption = f"{best.path.name}, greedy: return {recording.returns[0]:g}"
        self.tracker.log_video("video/best", recording.gif, caption, step)
        log.info("recorded greedy episodes of %s (returns %s) to %s", best.path.name,
                 ", ".join(f"{r:g}" for r in recording.returns), recording.videos[0].parent)

    def _close_files(self) -> None:
        for file in (self.metrics, self.episodes):
            try:
                file.close()
            except OSError as error:  # a full disk: the rows it kept are in last.pt
                log.error("could not write %s: %s", file.path.name, error)

    def _summary(self, status: str, step: int, episodes: int, **extra: Any) -> dict[str, Any]:
        target = self.cfg.train.target_return
        return {
            "status": status, "run_name": self.name, "seed": self.cfg.seed,
            "env_steps": step, "episodes": episodes,
            "wall_seconds": round(self.seconds(), 3),
            "best_eval_return": None if self.best_step is None else self.best_return,
            "best_eval_step": self.best_step,
            "target_return": target, "solved": self.solved_step is not None,
            "solved_step": self.solved_step, "solved_seconds": self.solved_seconds,
            "swanlab_run_id": self.tracker.run_id, **extra}

    def _write_summary(self, summary: dict[str, Any]) -> None:
        write_json(self.run_dir / "summary.json", summary)

    def finish(self, step: int, episodes: int, seeds: dict[str, int]) -> EvalResult:
        """The final evaluation of best.pt read back from disk, as a user would load it
        (seeds["final"]; a head that samples draws from it too, and its video continues those
        draws), its video if asked for (episodes from seeds["video"]), then summary.json and
        the tracker's end; returns the final evaluation."""
        best = TrainedPolicy(self.best_path, seeds["final"])
        final = play(best, self.cfg.env, self.cfg.eval.final_episodes, seeds["final"],
                     self.cfg.eval.epsilon)
        if self.cfg.video.episodes:
            self.record_video(best, step, seeds["video"])
        self._close_files()
        self._write_summary(self._summary(
            "completed", step, episodes,
            final_eval={"mean": final.mean, "std": final.std, "episodes": len(final.returns),
                        "min": float(final.returns.min()), "max": float(final.returns.max())}))
        self.tracker.log({"final/return_mean": final.mean, "final/return_std": final.std}, step)
        self.tracker.finish()
        return final

    def interrupted(self, step: int, episodes: int, signal_name: str, resume: str) -> None:
        """summary.json for a run a signal stopped, with the command that continues it."""
        self._close_files()
        self._write_summary(self._summary(
            "interrupted", step, episodes, error=f"stopped by {signal_name}", resume=resume))
        self.tracker.finish(crashed=True, error=f"stopped by {signal_name}; resumable")

    def fail(self, error: BaseException, step: int, episodes: int) -> None:
        status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        message = f"{type(error).__name__}: {error}"
        self._close_files()
        try:
            self._write_summary(self._summary(status, step, episodes, error=message))
        except OSError as write_error:  # a full disk must not hide the original error
            log.error("could not write summary.json: %s", write_error)
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

    def due(self) -> bool:
        """Whether update() would redraw the bar now (at most four times a second)."""
        return not self.bar.disable and time.perf_counter() >= self.next_refresh

    def update(self, step: int, episodes: int, last_return: float, best: float,
               exploration: str) -> None:
        """Redraw the bar (if due); `exploration` is its parameter as the console shows it
        (`eps 0.976`)."""
        if not self.due():
            return
        self.next_refresh = time.perf_counter() + 0.25
        self.bar.n = step if self.by_steps else episodes
        self.bar.set_postfix_str(f"return {last_return:.1f} | best eval {best:.1f} | "
                                 + exploration, refresh=False)
        self.bar.refresh()
