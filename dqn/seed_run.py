"""One seed's run inside a training job, and the arrays the loop steps all runs through.

A job trains K seeds together (num_seeds = K). Each seed's `SeedRun` owns what is its
alone: N training envs and their episodes (with what it takes to bring them back on
resume), its random generators, exploration schedule, evaluator, training statistics and
run record (JOB_DIR itself for a single run, JOB_DIR/seed_<s> with K > 1). The loop only
steps them together through `TransitionArrays` and hands out the updates' sums.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from dqn.agent import Agents, UpdateResult
from dqn.budget import budget_spent, periods_crossed
from dqn.checks import ConfigError
from dqn.config import Config
from dqn.envs import env_maker, make_training_envs
from dqn.exploration import Exploration
from dqn.interfaces import ExplorationContext
from dqn.options import build
from dqn.run.evaluation import EvalResult, Evaluator, play_together
from dqn.run.record import NonFiniteError, RunRecord, TrainingStats, write_json
from dqn.run.tracking import build_tracker, flatten

log = logging.getLogger("dqn")
# consumers of randomness (new ones go at the end: the others' seeds stay as they were)
STREAMS = ("actions", "replay", "eval", "final", "video", "noise", "episodes",
           "eval_draws")


class SeedRun:
    """Everything that is one seed's own in a job, and its bookkeeping after each vector
    step of its N envs."""

    def __init__(self, cfg: Config, k: int, seed: int, job_dir: Path, job_name: str,
                 job_stored: dict[str, Any], device: torch.device,
                 resume_from: dict[str, Any] | None) -> None:
        self.k, self.seed = k, seed
        self.cfg = dataclasses.replace(cfg, seed=seed, num_seeds=1)
        self.seeds = seed_streams(seed, STREAMS)
        self.maker = env_maker(cfg.env)
        self.envs = make_training_envs(self.maker, cfg.env.num_envs, cfg.env.vectorization)
        self.episode_seed_rng = np.random.default_rng(self.seeds["episodes"])
        self.exploration: Exploration = build(cfg.exploration, ExplorationContext(
            cfg.env.num_envs, self.n_actions, cfg.train.total_steps, seed))
        self.evaluator = Evaluator(cfg.env, self.seeds["eval"], epsilon=cfg.eval.epsilon)
        self.action_rng = np.random.default_rng(self.seeds["actions"])
        self.replay_rng = np.random.default_rng(self.seeds["replay"])
        self.stats = TrainingStats(device, cfg.env.num_envs)
        self.agent = None  # this seed's Agent, set once the agents are built
        self.episodes = 0
        self.episodes_before = 0  # before the last vector step
        self.done = False
        self.final: float | None = None  # the final evaluation's mean, once finished
        self.failure: NonFiniteError | None = None
        if cfg.num_seeds == 1:
            run_dir, name, stored = job_dir, job_name, job_stored
        else:
            run_dir, name = seed_dir(job_dir, seed), seed_run_name(job_name, seed)
            stored = {**copy.deepcopy(job_stored), "seed": seed, "num_seeds": 1}
            write_hydra_folder(job_dir, run_dir, stored)
        resume_id, shown = None, name
        if resume_from is not None:  # the name it was born with; the dashboard marks it
            saved = resume_from["state"]["runs"][k]["run_record"]
            name = saved.get("name", name)
            resume_id, shown = saved["swanlab_run_id"], f"{name} (resumed)"
        tracker = build_tracker(cfg.logger, shown, flatten(stored), resume_id)
        self.record = RunRecord(self.cfg, run_dir, name, stored, tracker, self.exploration,
                                label="" if cfg.num_seeds == 1 else f"seed {seed}: ")
        # How to bring each env back to where it is: the seed its episode started from
        # (env 0's first is the run's seed, every other one drawn from episode_seed_rng in
        # turn), and the actions taken since (replayed on resume).
        n = cfg.env.num_envs
        self.episode_seeds = [seed, *(self.next_episode_seed() for _ in range(n - 1))]
        self.episode_actions: list[list[int]] = [[] for _ in range(n)]
        self.obs, _ = self.envs.reset(seed=list(self.episode_seeds))

    @property
    def observation_space(self):
        return self.envs.single_observation_space

    @property
    def n_actions(self) -> int:
        return int(self.envs.single_action_space.n)

    def next_episode_seed(self) -> int:
        return int(self.episode_seed_rng.integers(2**31 - 1))

    def step(self, actions: np.ndarray, step: int) -> tuple[np.ndarray, ...]:
        """Take `actions` (N,) in the N envs (the vector step ends at env step `step`);
        returns the next observations (the real final one where an episode ended), the
        rewards and terminations to learn from (see EnvMaker.for_learning), truncations,
        and which episodes ended. An ended env starts its next episode with a seed of its
        own; a finished run stands still."""
        self.episodes_before = self.episodes
        if self.done:
            idle = np.zeros(len(self.episode_seeds), dtype=bool)
            return self.obs, np.zeros(len(idle)), idle, idle, idle
        next_obs, rewards, terminated, truncated, infos = self.envs.step(actions)
        for actions_since, action in zip(self.episode_actions, actions.tolist()):
            actions_since.append(action)
        self.stats.add_rewards(rewards)
        learn_rewards, learn_terminated = self.maker.for_learning(rewards, terminated, infos)
        ended = terminated | truncated
        if not ended.any():
            self.obs = next_obs
            return next_obs, learn_rewards, learn_terminated, truncated, ended
        next_obs = next_obs.copy()  # the reset below writes the vector env's array
        seeds: list[int | None] = [None] * len(ended)
        for j in np.flatnonzero(ended).tolist():
            self.episodes += 1
            self.record.log_episode(self.episodes, step, *self.stats.end_episode(j))
            self.episode_seeds[j] = seeds[j] = self.next_episode_seed()
            self.episode_actions[j] = []
        self.obs, _ = self.envs.reset(seed=seeds, options={"reset_mask": ended})
        return next_obs, learn_rewards, learn_terminated, truncated, ended

    def exploration_scalars(self, step: int) -> dict[str, float]:
        """What the exploration policy logs, as it acted at env step `step` (with the
        episodes finished before the last vector step)."""
        return self.exploration.scalars(step, self.episodes_before)

    def after_step(self, before: int, step: int, sums: UpdateSums,
                   result: EvalResult | None, evaluate: bool) -> None:
        """After the vector step from env step `before` to `step`: log the training
        aggregates, evaluate (taking `result` if played already) and finish once the
        target or the budget is reached."""
        if self.done:
            return
        try:
            if periods_crossed(before, step, self.record.log_every):
                sums.hand_over()
                self.record.log_training(self.stats, step, self.episodes,
                                         self.exploration_scalars(before))
            if evaluate:
                sums.hand_over()
                self.stats.check_finite(step)
                if self.evaluate(step, before, result):
                    self.finish(step, before)
        except NonFiniteError as error:
            self.fail(error, step)
            self.failure = error
        if not self.done and budget_spent(self.cfg.train, step, self.episodes):
            self.finish(step, before)

    def evaluate(self, step: int, acted_at: int, result: EvalResult | None = None) -> bool:
        """The record's evaluation at env step `step` (taking `result` if played already),
        with the agents acting on their mean noisy weights; its row shows the exploration
        the last vector step (from env step `acted_at`) took."""
        self.agent.agents.acting(explore=False)
        return self.record.evaluate(self.agent, self.evaluator, step, self.episodes,
                                    self.exploration_scalars(acted_at), result)

    def finish(self, step: int, acted_at: int) -> None:
        """A last evaluation at this step and last.pt with the final weights, then the
        final evaluation of best.pt read back from disk, the video if asked for,
        summary.json and the tracker's end."""
        record = self.record
        if record.last_eval is None or record.last_eval[0] != step:
            self.evaluate(step, acted_at)
        record.save("last", self.agent, step, **record.score())
        final = record.finish(step, self.episodes, self.seeds)
        self.final = final.mean
        self.close()
        log.info("%sfinal evaluation of the best checkpoint: %.1f ± %.1f over %d episodes",
                 record.label, final.mean, final.std, len(final.returns))
        log.info("%srun directory: %s | best checkpoint: %s", record.label, record.run_dir,
                 record.best_path)

    def interrupted(self, step: int, signal_name: str, resume: str) -> None:
        if not self.done:
            self.record.interrupted(step, self.episodes, signal_name, resume)

    def fail(self, error: BaseException, step: int) -> None:
        if not self.done:
            self.record.fail(error, step, self.episodes)
            self.close()

    def close(self) -> None:
        self.done = True
        self.obs = np.array(self.obs)  # a finished run stands still on a copy of its own
        self.envs.close()
        self.evaluator.close()

    def state_dict(self) -> dict[str, Any]:
        return {"episodes": self.episodes, "done": self.done, "final": self.final,
                "failure": None if self.failure is None else str(self.failure),
                "episode_seeds": torch.tensor(self.episode_seeds, dtype=torch.int64),
                "episode_actions": [torch.tensor(a, dtype=torch.int64)
                                    for a in self.episode_actions],
                "stats": self.stats.state_dict(), "run_record": self.record.state_dict(),
                "rngs": {name: generator.bit_generator.state
                         for name, generator in self.generators()}}

    def generators(self) -> list[tuple[str, np.random.Generator]]:
        return [("action", self.action_rng), ("replay", self.replay_rng),
                ("eval", self.evaluator.seeds), ("eval_explorer", self.evaluator.explorer),
                ("episode_seed", self.episode_seed_rng)]

    def load_state_dict(self, state: dict[str, Any], step: int) -> None:
        """Continue from `state`: the records, the generators, and every env brought back
        by replaying its episode's actions from the seed that episode started with."""
        self.episodes, self.final = state["episodes"], state["final"]
        self.failure = None if state["failure"] is None else NonFiniteError(state["failure"])
        self.stats.load_state_dict(state["stats"])
        self.record.load_state_dict(state["run_record"], step)
        for name, generator in self.generators():
            generator.bit_generator.state = state["rngs"][name]
        if state["done"]:
            self.close()
            return
        self.episode_seeds = state["episode_seeds"].tolist()
        self.episode_actions = [a.tolist() for a in state["episode_actions"]]
        self.envs.set_attr("replay_plan", list(zip(self.episode_seeds, self.episode_actions)))
        self.obs = np.stack(self.envs.call("replay"))


class TransitionArrays:
    """The current observations of every env of every seed run, and their last vector
    step, in arrays (K, N, ...) filled in place; `columns()` gives the replay memory the
    same arrays as (K * N, ...), agent by agent."""

    def __init__(self, runs: list[SeedRun]) -> None:
        self.obs = np.stack([r.obs for r in runs])
        self.next_obs = np.zeros_like(self.obs)
        lead = self.obs.shape[:2]
        self.rewards = np.zeros(lead)
        self.terminated = np.zeros(lead, dtype=bool)  # as the agent learns it
        self.truncated = np.zeros(lead, dtype=bool)
        self.ended = np.zeros(lead, dtype=bool)  # the episode ended
        # the same memory as (K * N, ...) columns, agent by agent
        self.as_columns = [p.reshape(-1, *p.shape[2:]) for p in (
            self.obs, self.rewards, self.next_obs, self.terminated, self.truncated, self.ended)]

    def step(self, runs: list[SeedRun], actions: np.ndarray, step: int) -> None:
        """Every run's vector step with its actions (K, N); the step it ends is `step`."""
        for r in runs:
            k = r.k
            (self.next_obs[k], self.rewards[k], self.terminated[k], self.truncated[k],
             self.ended[k]) = r.step(actions[k], step)

    def columns(self, actions: np.ndarray) -> tuple[np.ndarray, ...]:
        """The last vector step as replay columns: obs, actions, rewards, next_obs,
        terminated, truncated, ended, each (K * N, ...)."""
        obs, *rest = self.as_columns
        return (obs, actions.reshape(-1), *rest)

    def advance(self, runs: list[SeedRun]) -> None:
        """The observations to act on next (the first of a new episode after an end)."""
        for r in runs:
            self.obs[r.k] = r.obs


def act_together(agents: Agents, runs: list[SeedRun], obs: np.ndarray,
                 step: int) -> np.ndarray:
    """The training actions (K, N) for observations (K, N, *obs_shape) at env step
    `step`: each run's exploration policy selects its agent's, with its action generator,
    from Q-values that one forward pass of all K computes (noisy layers with fresh noise)
    if any policy asks for them."""
    agents.acting(explore=True)
    values = agents.values(obs)
    return np.stack([r.exploration.select(values.of(r.k), step, r.episodes, r.action_rng)
                     for r in runs])


def play_due_evaluations(agents: Agents, due: list[SeedRun],
                         episodes: int) -> dict[int, EvalResult]:
    """The periodic evaluations of the runs in `due`, played in lockstep on their own
    evaluators with one batched forward pass per step; by agent index."""
    if not due:
        return {}
    ks = [r.k for r in due]
    agents.acting(explore=False)
    results = play_together([r.evaluator for r in due],
                            lambda obs, playing: agents.greedy_of([ks[i] for i in playing], obs),
                            episodes)
    return dict(zip(ks, results))


def due_for_evaluation(cfg: Config, runs: list[SeedRun], before: int,
                       step: int) -> list[SeedRun]:
    """The runs whose periodic evaluation falls in the vector step from env step `before`
    to `step` (every `eval.every_steps` env steps, or at the end of every
    `eval.every_episodes`-th episode)."""
    e = cfg.eval
    if periods_crossed(before, step, e.every_steps):
        return [r for r in runs if not r.done]
    return [r for r in runs if not r.done
            and periods_crossed(r.episodes_before, r.episodes, e.every_episodes)]


class UpdateSums:
    """The agents' losses and mean Qs summed over the updates since they were last handed
    to each run's TrainingStats (one tensor operation per update, not K)."""

    def __init__(self, runs: list[SeedRun], device: torch.device) -> None:
        self.runs = runs
        self.loss = self.q = torch.zeros(len(runs), device=device)
        self.updates = 0

    def add(self, result: UpdateResult) -> None:
        self.loss, self.q = self.loss + result.losses, self.q + result.q_means
        self.updates += 1

    def hand_over(self) -> None:
        if self.updates:
            for r in self.runs:
                r.stats.add_update(self.loss[r.k], self.q[r.k], self.updates)
            self.loss, self.q = torch.zeros_like(self.loss), torch.zeros_like(self.q)
            self.updates = 0

    def state_dict(self) -> dict[str, Any]:
        return {"loss": self.loss.cpu(), "q": self.q.cpu(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loss = state["loss"].to(self.loss.device)
        self.q = state["q"].to(self.q.device)
        self.updates = state["updates"]


def report(runs: list[SeedRun], job_dir: Path) -> float:
    """The mean final evaluation over the runs; NonFiniteError naming those that stopped.
    With several runs, JOB_DIR/summary.json says how each ended."""
    failures = [r for r in runs if r.failure is not None]
    if len(runs) > 1:
        statuses = {r.seed: "failed" if r.failure else "completed" for r in runs}
        summary = {"status": "failed" if failures else "completed",
                   "seeds": [r.seed for r in runs], "agents": statuses,
                   "final_eval_means": {r.seed: r.final for r in runs}}
        write_json(job_dir / "summary.json", summary)
    if len(runs) == 1 and failures:
        raise failures[0].failure
    if failures:
        others = "" if len(failures) == len(runs) else "; the others completed"
        raise NonFiniteError(f"{len(failures)} of {len(runs)} agents stopped{others}. "
                             + "; ".join(f"seed {r.seed}: {r.failure}" for r in failures))
    finals = {r.seed: r.final for r in runs}
    mean = float(np.mean(list(finals.values())))
    if len(runs) > 1:
        log.info("%d seeds: final evaluation mean over agents %.1f (per seed: %s) | %s",
                 len(runs), mean, ", ".join(f"{s}: {v:.1f}" for s, v in finals.items()),
                 job_dir)
    return mean


def check_resumable(state: dict[str, Any], path: Path) -> None:
    """ConfigError when last.pt's training state predates the current layout."""
    if "runs" not in state:
        raise ConfigError(f"{path}: its training state was written by an older version of "
                          "dqn (before env.num_envs); it cannot be resumed, but its weights "
                          "load with python -m dqn.evaluate")


def seed_streams(seed: int, names: tuple[str, ...]) -> dict[str, int]:
    """Independent, reproducible sub-seeds for each consumer of randomness."""
    children = np.random.SeedSequence(seed).spawn(len(names))
    return {name: int(child.generate_state(1)[0]) for name, child in zip(names, children)}


# --- folders of seeds trained together -------------------------------------------------
def seed_dir(job_dir: Path, seed: int) -> Path:
    """The run folder of the seed `seed` in a num_seeds job's folder."""
    return job_dir / f"seed_{seed}"


def seed_run_name(job_name: str, seed: int) -> str:
    """The job's run name with this seed in place of the job's."""
    separator = " · " if " · " in job_name else ","
    parts = [p for p in job_name.split(separator) if p and p != "default"
             and not p.startswith("seed=")]
    return separator.join([*parts, f"seed={seed}"])


def write_hydra_folder(job_dir: Path, run_dir: Path, stored: dict[str, Any]) -> None:
    """A seed's own .hydra/, as every run folder has: the job's overrides with the seed,
    its resolved config, and the job's hydra.yaml."""
    folder, job_folder = run_dir / ".hydra", job_dir / ".hydra"
    folder.mkdir(parents=True, exist_ok=True)
    overrides = []
    if (job_folder / "overrides.yaml").exists():
        overrides = [o for o in OmegaConf.load(job_folder / "overrides.yaml")
                     if o.split("=", 1)[0].lstrip("+~") not in ("seed", "num_seeds")]
    OmegaConf.save(OmegaConf.create([*overrides, f"seed={stored['seed']}"]),
                   folder / "overrides.yaml")
    config = {k: v for k, v in stored.items() if k not in ("choices", "options", "schemas")}
    OmegaConf.save(OmegaConf.create(config), folder / "config.yaml")
    if (job_folder / "hydra.yaml").exists():
        shutil.copyfile(job_folder / "hydra.yaml", folder / "hydra.yaml")
