"""The training loop, for K agents trained together (num_seeds=K; K = 1 is a single run).

Each env step: every agent acts epsilon-greedily in its own env, the transitions go to the
replay memory, and every `train_frequency` steps the agents take `gradient_steps`
gradient steps together. Around that, each agent is its own run (see `Member`): greedy
evaluations every period, the best checkpoint, logs and, once its budget is spent or its
target return confirmed, a final evaluation of its best checkpoint read back from disk.
The full training state (last.pt) can be saved at any env step and resumed bitwise.
"""

from __future__ import annotations

import copy
import ctypes
import dataclasses
import json
import logging
import random
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from dqn.agent import Agent, AgentMember, UpdateResult
from dqn.config import Config, resolve_device
from dqn.envs import env_maker
from dqn.nets import build_q_network
from dqn.options import build
from dqn.replay import build_replay
from dqn.run.checkpoint import capture_rngs, restore_rngs, save_training_state
from dqn.run.evaluation import EvalResult, Evaluator, play_together
from dqn.run.record import NonFiniteError, Progress, RunRecord, TrainingStats
from dqn.run.tracking import build_tracker, close_trackers, flatten

log = logging.getLogger("dqn")
# consumers of randomness (new ones go at the end: the others' seeds stay as they were)
STREAMS = ("actions", "replay", "eval", "final", "video", "noise", "episodes")


def train(cfg: Config, job_dir: Path, name: str, stored: dict[str, Any],
          resume_from: dict[str, Any] | None = None) -> float:
    """Train seeds cfg.seed .. cfg.seed + cfg.num_seeds - 1 in `job_dir` (or continue the
    job that `resume_from`, a full-state last.pt, was saved from). Returns the mean over
    agents of the final evaluation's mean return."""
    device = prepare_process(cfg)
    members = [Member(cfg, k, cfg.seed + k, job_dir, name, stored, device, resume_from)
               for k in range(cfg.num_seeds)]
    env = members[0].env
    networks = []
    for m in members:  # each agent starts from the weights its single run would have
        torch.manual_seed(m.seed)
        networks.append(build_q_network(cfg.network, env.observation_space,
                                        int(env.action_space.n)))
    agent = Agent(networks, cfg.optimizer, cfg.target, cfg.train.loss, cfg.train.double_q,
                  [m.actions for m in members], int(env.action_space.n), device,
                  [torch.Generator().manual_seed(m.seeds["noise"]) for m in members])
    for m in members:
        m.view = AgentMember(agent, m.k)
    replay = build_replay(cfg.buffer, env.observation_space, [m.replay for m in members],
                          cfg.train.gamma, device, members[0].maker.frame_stack)
    sums = UpdateSums(members, device)
    t, b = cfg.train, cfg.buffer
    step = 0
    if resume_from is not None:
        step = restore(resume_from, agent, replay, sums, members)
        log.info("resumed %s at env step %d", job_dir, step)

    def save_state(finished: bool = False) -> None:
        state = {"step": step, "finished": finished, "agent": agent.state_dict(),
                 "replay": replay.state_dict(), "sums": sums.state_dict(),
                 "members": [m.state_dict() for m in members], "rngs": capture_rngs({})}
        score = members[0].run.score() if len(members) == 1 else {}
        save_training_state(job_dir / "checkpoints" / "last.pt", agent.online.weights(),
                            stored, state, env_step=step,
                            gradient_steps=agent.gradient_steps, **score)

    envs = Transitions(members)
    try:
        with Progress(t.total_steps, t.total_episodes) as progress, StopSignals() as stop:
            while not all(m.done for m in members) and not stop.requested:
                epsilons = [m.epsilon_at(step, m.episodes) for m in members]
                actions = agent.act(envs.obs, epsilons)
                envs.step(members, actions, step + 1)
                replay.add(envs.obs, actions, envs.rewards, envs.next_obs, envs.terminated,
                           envs.truncated, envs.ended)
                envs.advance(members)
                step += 1
                if step >= b.learning_starts and step % t.train_frequency == 0:
                    replay.anneal(budget_progress(t, step, members))
                    for batch in replay.sample_batches(b.batch_size, t.gradient_steps):
                        result = agent.update(batch)
                        replay.update_priorities(batch, result.td_errors)
                        sums.add(result)
                due = evaluations_due(cfg, members, step, envs.ended)
                results = evaluate_together(agent, due, cfg.eval.episodes)
                for m, epsilon in zip(members, epsilons):
                    m.record(step, epsilon, sums, results.get(m.k), m in due)
                finishing = all(m.done for m in members)  # saved once, below
                if t.checkpoint_every and step % t.checkpoint_every == 0 and not finishing:
                    save_state()
                if progress.due():
                    show_progress(progress, members, step, epsilons)
        if stop.requested:
            save_state()
            for m in members:
                m.interrupted(step, stop.name)
            log.warning("%s: stopped at env step %d and saved %s. Resume with:\n"
                        "  python -m dqn.train resume=%s", stop.name, step,
                        job_dir / "checkpoints" / "last.pt", job_dir)
            raise SystemExit(128 + stop.signal_number)
        if any(m.final is not None for m in members):
            save_state(finished=True)
    except SystemExit:
        raise
    except BaseException as error:
        for m in members:
            m.fail(error, step)
        raise
    finally:
        for m in members:
            m.close()
        close_trackers()
    return report(members, job_dir)


class Member:
    """Everything that is one agent's own: its seed streams, env, exploration, evaluator,
    statistics and run record (JOB_DIR itself for a single run, JOB_DIR/seed_<s> when
    agents train together), and its bookkeeping after each env step."""

    def __init__(self, cfg: Config, k: int, seed: int, job_dir: Path, job_name: str,
                 job_stored: dict[str, Any], device: torch.device,
                 resume_from: dict[str, Any] | None) -> None:
        self.k, self.seed = k, seed
        self.cfg = dataclasses.replace(cfg, seed=seed, num_seeds=1)
        self.seeds = seed_streams(seed, STREAMS)
        self.maker = env_maker(cfg.env)
        self.env = self.maker.make()
        self.episode_seeds = np.random.default_rng(self.seeds["episodes"])
        self.epsilon_at = build(cfg.exploration)
        self.evaluator = Evaluator(cfg.env, self.seeds["eval"], epsilon=cfg.eval.epsilon)
        self.actions = np.random.default_rng(self.seeds["actions"])
        self.replay = np.random.default_rng(self.seeds["replay"])
        self.stats = TrainingStats(device)
        self.view: AgentMember  # set once the agents are built
        self.episodes = 0
        self.done = False
        self.final: float | None = None  # the final evaluation's mean, once finished
        self.failure: NonFiniteError | None = None
        if cfg.num_seeds == 1:
            run_dir, name, stored = job_dir, job_name, job_stored
        else:
            run_dir, name = agent_dir(job_dir, seed), member_name(job_name, seed)
            stored = {**copy.deepcopy(job_stored), "seed": seed, "num_seeds": 1}
            write_hydra_record(job_dir, run_dir, stored)
        resume_id = None
        if resume_from is not None:
            name = f"{name} (resumed)"
            resume_id = resume_from["state"]["members"][k]["record"]["swanlab_run_id"]
        tracker = build_tracker(cfg.logger, name, flatten(stored), resume_id)
        self.run = RunRecord(self.cfg, run_dir, name, stored, tracker,
                             label="" if cfg.num_seeds == 1 else f"seed {seed}: ")
        # How to bring the env back to where it is: the seed its episode started from (the
        # first one's is the run's seed, each next one's drawn from episode_seeds), and the
        # actions taken since (replayed on resume).
        self.episode_seed = seed
        self.episode_actions: list[int] = []
        self.obs, _ = self.env.reset(seed=seed)

    def step(self, action: int, step: int) -> tuple[np.ndarray, float, bool, bool, bool]:
        """Take `action` (the env step it ends is `step`); returns the next observation, the
        reward and termination to learn from (see EnvMaker.for_learning), truncated, and
        whether the episode ended. A finished agent stands still."""
        if self.done:
            return self.obs, 0.0, False, False, False
        next_obs, reward, terminated, truncated, info = self.env.step(action)
        self.episode_actions.append(action)
        self.stats.add_reward(reward)
        learn_reward, learn_terminated = self.maker.for_learning(reward, terminated, info)
        if terminated or truncated:
            self.episodes += 1
            self.run.log_episode(self.episodes, step, *self.stats.end_episode())
            self.episode_seed = int(self.episode_seeds.integers(2**31 - 1))
            self.episode_actions = []
            self.obs, _ = self.env.reset(seed=self.episode_seed)
        else:
            self.obs = next_obs
        return next_obs, learn_reward, learn_terminated, truncated, terminated or truncated

    def record(self, step: int, epsilon: float, sums: UpdateSums,
               result: EvalResult | None, evaluate: bool) -> None:
        """After env step `step`: log the training aggregates, evaluate (taking `result`
        if played already) and finish once the target or the budget is reached."""
        if self.done:
            return
        try:
            if step % self.run.log_every == 0:
                sums.hand_over()
                self.run.log_training(self.stats, step, self.episodes, epsilon)
            if evaluate:
                sums.hand_over()
                self.stats.check_finite(step)
                if self.run.evaluate(self.view, self.evaluator, step, self.episodes, epsilon,
                                     result):
                    self.finish(step, epsilon)
        except NonFiniteError as error:
            self.fail(error, step)
            self.failure = error
        if not self.done and budget_spent(self.cfg.train, step, self.episodes):
            self.finish(step, epsilon)

    def finish(self, step: int, epsilon: float) -> None:
        """A last evaluation at this step and last.pt with the final weights, then the
        final evaluation of best.pt read back from disk, the video if asked for,
        summary.json and the tracker's end."""
        run = self.run
        if run.last_eval is None or run.last_eval[0] != step:
            run.evaluate(self.view, self.evaluator, step, self.episodes, epsilon)
        run.save("last", self.view, step, **run.score())
        final = run.finish(step, self.episodes, self.seeds)
        self.final = final.mean
        self.close()
        log.info("%sfinal evaluation of the best checkpoint: %.1f ± %.1f over %d episodes",
                 run.label, final.mean, final.std, len(final.returns))
        log.info("%srun directory: %s | best checkpoint: %s", run.label, run.run_dir,
                 run.best_path)

    def interrupted(self, step: int, signal_name: str) -> None:
        if not self.done:
            self.run.interrupted(step, self.episodes, signal_name)

    def fail(self, error: BaseException, step: int) -> None:
        if not self.done:
            self.run.fail(error, step, self.episodes)
            self.close()

    def close(self) -> None:
        self.done = True
        self.env.close()
        self.evaluator.close()

    def state_dict(self) -> dict[str, Any]:
        return {"episodes": self.episodes, "done": self.done, "final": self.final,
                "failure": None if self.failure is None else str(self.failure),
                "episode_seed": self.episode_seed,
                "episode_actions": torch.tensor(self.episode_actions, dtype=torch.int64),
                "stats": self.stats.state_dict(), "record": self.run.state_dict(),
                "rngs": {name: generator.bit_generator.state
                         for name, generator in self.generators()}}

    def generators(self) -> list[tuple[str, np.random.Generator]]:
        return [("actions", self.actions), ("replay", self.replay),
                ("eval", self.evaluator.seeds), ("eval_explorer", self.evaluator.explorer),
                ("episodes", self.episode_seeds)]

    def load_state_dict(self, state: dict[str, Any], step: int) -> None:
        """Continue from `state`: the records, the generators, and the env brought back by
        replaying its episode's actions from the state the episode started in."""
        self.episodes, self.final = state["episodes"], state["final"]
        self.failure = None if state["failure"] is None else NonFiniteError(state["failure"])
        self.stats.load_state_dict(state["stats"])
        self.run.load_state_dict(state["record"], step)
        for name, generator in self.generators():
            generator.bit_generator.state = state["rngs"][name]
        if state["done"]:
            self.close()
            return
        self.episode_seed = state["episode_seed"]
        self.episode_actions = state["episode_actions"].tolist()
        self.obs, _ = self.env.reset(seed=self.episode_seed)
        for action in self.episode_actions:
            self.obs, *_ = self.env.step(action)


class Transitions:
    """The agents' current observations and their last env step, in arrays with a leading
    agent dimension that are filled in place every step."""

    def __init__(self, members: list[Member]) -> None:
        self.obs = np.stack([m.obs for m in members])
        self.next_obs = np.zeros_like(self.obs)
        self.rewards = np.zeros(len(members))
        self.terminated = np.zeros(len(members), dtype=bool)  # as the agent learns it
        self.truncated = np.zeros(len(members), dtype=bool)
        self.ended = np.zeros(len(members), dtype=bool)  # the episode ended

    def step(self, members: list[Member], actions: np.ndarray, step: int) -> None:
        """Every agent's env step with its action; the step it ends is `step`."""
        for m in members:
            k = m.k
            (self.next_obs[k], self.rewards[k], self.terminated[k], self.truncated[k],
             self.ended[k]) = m.step(int(actions[k]), step)

    def advance(self, members: list[Member]) -> None:
        """The observations to act on next (the first of a new episode after an end)."""
        for m in members:
            self.obs[m.k] = m.obs


def evaluate_together(agent: Agent, due: list[Member], episodes: int) -> dict[int, EvalResult]:
    """The periodic evaluations of the agents in `due`, played in lockstep on their own
    evaluators with one batched forward pass per step; by agent index."""
    if not due:
        return {}
    ks = [m.k for m in due]

    def policy(obs: np.ndarray) -> np.ndarray:
        if len(ks) == agent.size:
            return agent.greedy(obs)
        everyone = np.zeros((agent.size, *obs.shape[1:]), dtype=obs.dtype)
        everyone[ks] = obs
        return agent.greedy(everyone)[ks]

    results = play_together([m.evaluator for m in due], policy, episodes)
    return dict(zip(ks, results))


class UpdateSums:
    """The agents' losses and mean Qs summed over the updates since they were last handed
    to each agent's TrainingStats (one tensor operation per update, not K)."""

    def __init__(self, members: list[Member], device: torch.device) -> None:
        self.members = members
        self.loss = self.q = torch.zeros(len(members), device=device)
        self.updates = 0

    def add(self, result: UpdateResult) -> None:
        self.loss, self.q = self.loss + result.losses, self.q + result.q_means
        self.updates += 1

    def hand_over(self) -> None:
        if self.updates:
            for m in self.members:
                m.stats.add_update(self.loss[m.k], self.q[m.k], self.updates)
            self.loss, self.q = torch.zeros_like(self.loss), torch.zeros_like(self.q)
            self.updates = 0

    def state_dict(self) -> dict[str, Any]:
        return {"loss": self.loss.cpu(), "q": self.q.cpu(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loss = state["loss"].to(self.loss.device)
        self.q = state["q"].to(self.q.device)
        self.updates = state["updates"]


def restore(checkpoint: dict[str, Any], agent: Agent, replay: Any, sums: UpdateSums,
            members: list[Member]) -> int:
    """Load a full-state last.pt into the freshly built parts; returns the env step."""
    state = checkpoint["state"]
    agent.load_state_dict(checkpoint["model"], state["agent"])
    replay.load_state_dict(state["replay"])
    sums.load_state_dict(state["sums"])
    for m, member_state in zip(members, state["members"]):
        m.load_state_dict(member_state, state["step"])
    restore_rngs(state["rngs"], {})
    return state["step"]


def report(members: list[Member], job_dir: Path) -> float:
    """The mean final evaluation over agents; NonFiniteError naming those that stopped.
    With several agents, JOB_DIR/summary.json says how each ended."""
    failures = [m for m in members if m.failure is not None]
    if len(members) > 1:
        statuses = {m.seed: "failed" if m.failure else "completed" for m in members}
        summary = {"status": "failed" if failures else "completed",
                   "seeds": [m.seed for m in members], "agents": statuses,
                   "final_eval_means": {m.seed: m.final for m in members}}
        (job_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if len(members) == 1 and failures:
        raise failures[0].failure
    if failures:
        others = "" if len(failures) == len(members) else "; the others completed"
        raise NonFiniteError(f"{len(failures)} of {len(members)} agents stopped{others}. "
                             + "; ".join(f"seed {m.seed}: {m.failure}" for m in failures))
    finals = {m.seed: m.final for m in members}
    mean = float(np.mean(list(finals.values())))
    if len(members) > 1:
        log.info("%d seeds: final evaluation mean over agents %.1f (per seed: %s) | %s",
                 len(members), mean, ", ".join(f"{s}: {v:.1f}" for s, v in finals.items()),
                 job_dir)
    return mean


def show_progress(progress: Progress, members: list[Member], step: int,
                  epsilons: list[float]) -> None:
    active = [m for m in members if not m.done] or members
    progress.update(step, min(m.episodes for m in active),
                    float(np.mean([m.stats.last_return for m in active])),
                    float(np.median([m.run.best_return for m in active])),
                    float(np.mean(epsilons)))


# --- the process, seeds and budgets ----------------------------------------------------
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


def budget_progress(t, step: int, members: list[Member]) -> float:
    """The fraction of the training budget spent (the larger of the env-step and the
    episode budget's, the latter by the agent furthest behind)."""
    fractions = [0.0]
    if t.total_steps is not None:
        fractions.append(step / t.total_steps)
    if t.total_episodes is not None:
        fractions.append(min(m.episodes for m in members) / t.total_episodes)
    return min(1.0, max(fractions))


def budget_spent(t, step: int, episodes: int) -> bool:
    """Whether the env-step or the episode budget of `t` (cfg.train) has run out."""
    return ((t.total_steps is not None and step >= t.total_steps)
            or (t.total_episodes is not None and episodes >= t.total_episodes))


def evaluations_due(cfg: Config, members: list[Member], step: int,
                    ended: np.ndarray) -> list[Member]:
    """The agents whose periodic evaluation falls on this env step (every
    `eval.every_steps` env steps, or at the end of every `eval.every_episodes`-th episode)."""
    e = cfg.eval
    if e.every_steps and step % e.every_steps == 0:
        return [m for m in members if not m.done]
    if e.every_episodes and ended.any():
        return [m for m in members if not m.done and ended[m.k]
                and m.episodes % e.every_episodes == 0]
    return []


# --- folders of agents trained together ------------------------------------------------
def agent_dir(job_dir: Path, seed: int) -> Path:
    """The run folder of the agent with seed `seed` in a num_seeds job's folder."""
    return job_dir / f"seed_{seed}"


def member_name(job_name: str, seed: int) -> str:
    """The job's run name with this agent's seed in place of the job's."""
    parts = [p for p in job_name.split(",") if p and p != "default"
             and not p.startswith("seed=")]
    return ",".join([*parts, f"seed={seed}"])


def write_hydra_record(job_dir: Path, run_dir: Path, stored: dict[str, Any]) -> None:
    """An agent's own .hydra/, as every run folder has: the job's overrides with the
    agent's seed, its resolved config, and the job's hydra.yaml."""
    record, job_record = run_dir / ".hydra", job_dir / ".hydra"
    record.mkdir(parents=True, exist_ok=True)
    overrides = []
    if (job_record / "overrides.yaml").exists():
        overrides = [o for o in OmegaConf.load(job_record / "overrides.yaml")
                     if o.split("=", 1)[0].lstrip("+~") not in ("seed", "num_seeds")]
    OmegaConf.save(OmegaConf.create([*overrides, f"seed={stored['seed']}"]),
                   record / "overrides.yaml")
    config = {k: v for k, v in stored.items() if k not in ("choices", "options", "schemas")}
    OmegaConf.save(OmegaConf.create(config), record / "config.yaml")
    if (job_record / "hydra.yaml").exists():
        shutil.copyfile(job_record / "hydra.yaml", record / "hydra.yaml")


class StopSignals:
    """SIGINT/SIGTERM (Ctrl-C, a cluster's preemption) ask the loop to stop after the
    current env step, where it saves last.pt; a second signal stops at once."""

    def __init__(self) -> None:
        self.requested = False
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
