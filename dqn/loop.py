"""The training loop, for K agents trained together (num_seeds=K; K = 1 is a single run),
each acting in N envs (env.num_envs=N; N = 1 is one env).

Each vector step: every agent acts in its N envs by its exploration policy (one forward
pass for all K x N), the transitions go to the memory (a column per agent and env), and
when the memory says updates are due (a replay memory: `gradient_steps` for every
`train_frequency` env steps; a rollout memory: its epochs of minibatches once a rollout is
complete) the agents take them together, after the learning rate and the memory's
targets are brought up to date. Around that, each seed is its own run (`dqn.seed_run.SeedRun`):
greedy evaluations every period, the best checkpoint, logs and, once its budget is spent
or its target return confirmed, a final evaluation of its best checkpoint read back from
disk. The full training state (last.pt) can be saved after any vector step and resumed
bitwise.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dqn.agent import Agents
from dqn.budget import budget_progress, periods_crossed
from dqn.config import Config
from dqn.nets import build_q_network
from dqn.process import StoppedAtOnce, StopSignals, prepare_process
from dqn.replay import build_replay
from dqn.run.checkpoint import (
    DiskFullError,
    capture_rngs,
    disk_full,
    restore_rngs,
    save_training_state,
)
from dqn.run.record import Progress, resume_command, write_birth_record
from dqn.run.tracking import close_trackers, new_run_id
from dqn.seed_run import (
    SeedRun,
    TransitionArrays,
    UpdateSums,
    act_together,
    check_resumable,
    due_for_evaluation,
    play_due_evaluations,
    report,
)

log = logging.getLogger("dqn")


def train(cfg: Config, job_dir: Path, name: str, stored: dict[str, Any],
          resume_from: dict[str, Any] | None = None, resume: str | None = None) -> float:
    """Train seeds cfg.seed .. cfg.seed + cfg.num_seeds - 1 in `job_dir` (or continue the
    job that `resume_from`, a full-state last.pt, was saved from). `resume` is the command
    that continues the job once stopped (default: resume=JOB_DIR). Returns the mean over
    agents of the final evaluation's mean return."""
    last_path = job_dir / "checkpoints" / "last.pt"
    resume = resume or resume_command(job_dir)
    run_id = None
    if resume_from is not None:
        check_resumable(resume_from["state"], last_path)
        run_id = resume_from["state"].get("run_id")
    if run_id is None:  # a new run (or one from before runs had an id) records its id
        run_id = new_run_id()
        write_birth_record(job_dir, run_id, name)
    device = prepare_process(cfg)
    runs = [SeedRun(cfg, k, cfg.seed + k, job_dir, name, stored, device, resume_from)
            for k in range(cfg.num_seeds)]
    space, n_actions = runs[0].observation_space, runs[0].n_actions
    networks = []
    for r in runs:  # each agent starts from the weights its single run would have
        torch.manual_seed(r.seed)
        networks.append(build_q_network(cfg.network, space, n_actions, cfg.head))
    agents = Agents(networks, cfg.optimizer, cfg.target, n_actions=n_actions,
                    loss=cfg.train.loss, double_q=cfg.train.double_q, device=device,
                    noise=[torch.Generator().manual_seed(r.seeds["noise"]) for r in runs],
                    eval_noise=[torch.Generator().manual_seed(r.seeds["eval_draws"])
                                for r in runs])
    for r in runs:
        r.agent = agents[r.k]
    replay = build_replay(cfg.buffer, space, [r.replay_rng for r in runs], cfg.train.gamma,
                          device, runs[0].maker.frame_stack, cfg.env.num_envs)
    sums = UpdateSums(runs, device)
    t = cfg.train
    step = 0  # env steps of each agent, summed over its envs
    saved_step = None  # the env step last.pt holds
    if resume_from is not None:
        step = saved_step = restore(resume_from, agents, replay, sums, runs)
        log.info("resumed %s at env step %d", job_dir, step)

    def save_state(finished: bool = False) -> None:
        nonlocal saved_step
        state = {"step": step, "finished": finished, "agents": agents.state_dict(),
                 "replay": replay.state_dict(), "sums": sums.state_dict(),
                 "runs": [r.state_dict() for r in runs], "rngs": capture_rngs(),
                 "run_id": run_id}
        score = runs[0].record.score() if len(runs) == 1 else {}
        save_training_state(last_path, agents.online.weights(), stored, state, env_step=step,
                            gradient_steps=agents.gradient_steps, **score)
        saved_step = step

    latest = TransitionArrays(runs)
    try:
        with Progress(t.total_steps, t.total_episodes) as progress, StopSignals() as stop:
            while not all(r.done for r in runs) and not stop.requested:
                actions = act_together(agents, runs, latest.obs, step)
                before, step = step, step + cfg.env.num_envs
                latest.step(runs, actions, step)
                replay.add(*latest.columns(actions))
                latest.advance(runs)
                updates = replay.updates_due(before, step, t)
                if updates:
                    spent = budget_progress(t, step, min(r.episodes for r in runs))
                    replay.anneal(spent)
                    agents.anneal(spent)
                    replay.compute_returns(agents.bootstrap_values)
                    for batch in replay.sample_batches(replay.batch_size, updates):
                        result = agents.update(batch)
                        replay.update_priorities(batch, result.td_errors)
                        sums.add(result)
                due = due_for_evaluation(cfg, runs, before, step)
                results = play_due_evaluations(agents, due, cfg.eval.episodes)
                for r in runs:
                    r.after_step(before, step, sums, results.get(r.k), r in due)
                finishing = all(r.done for r in runs)  # saved once, below
                if periods_crossed(before, step, t.checkpoint_every) and not finishing:
                    save_state()
                if progress.due():
                    show_progress(progress, runs, step)
            if stop.requested:  # a second signal while saving stops at once
                log.warning("%s: saving %s at env step %d (a second signal stops at once "
                            "and keeps the one saved before)", stop.name, last_path, step)
                save_state()
                for r in runs:
                    r.interrupted(step, stop.name, resume)
                log.warning("%s: stopped at env step %d and saved %s. Resume with:\n  %s",
                            stop.name, step, last_path, resume)
                raise SystemExit(128 + stop.signal_number)
        if any(r.final is not None for r in runs):
            save_state(finished=True)
    except SystemExit:
        raise
    except BaseException as error:
        for r in runs:
            r.fail(error, step)
        if isinstance(error, KeyboardInterrupt):
            raise StoppedAtOnce(f"stopped at once by a second signal at env step {step}; "
                                f"{what_is_kept(last_path, saved_step, resume)}") from None
        if disk_full(error, job_dir):
            where = getattr(error, "filename", None) or job_dir
            raise DiskFullError(f"no space left on device writing {where}; free some space. "
                                f"{what_is_kept(last_path, saved_step, resume)}") from None
        raise
    finally:
        for r in runs:
            r.close()
        close_trackers()
    return report(runs, job_dir)


def what_is_kept(last_path: Path, saved_step: int | None, resume: str) -> str:
    """What a run that stopped early leaves to continue from, and how."""
    if saved_step is None:
        return "no last.pt was saved yet: start the run again"
    return f"{last_path} from env step {saved_step} is kept; resume with: {resume}"


def restore(checkpoint: dict[str, Any], agents: Agents, replay: Any, sums: UpdateSums,
            runs: list[SeedRun]) -> int:
    """Load a full-state last.pt into the freshly built parts; returns the env step."""
    state = checkpoint["state"]
    agents.load_state_dict(checkpoint["model"], state["agents"])
    replay.load_state_dict(state["replay"])
    sums.load_state_dict(state["sums"])
    for r, run_state in zip(runs, state["runs"]):
        r.load_state_dict(run_state, state["step"])
    restore_rngs(state["rngs"])
    return state["step"]


def show_progress(progress: Progress, runs: list[SeedRun], step: int) -> None:
    active = [r for r in runs if not r.done] or runs
    scalars = [r.exploration_scalars(step) for r in active]
    exploration = active[0].exploration.describe(
        {name: float(np.mean([s[name] for s in scalars])) for name in scalars[0]})
    progress.update(step, min(r.episodes for r in active),
                    float(np.mean([r.stats.last_return for r in active])),
                    float(np.median([r.record.best_return for r in active])), exploration)
