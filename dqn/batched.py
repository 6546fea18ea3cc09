"""Many seeds in one process (num_seeds=K): K independent agents, one per seed, whose
networks act and learn as one batched computation while their K environments step in
lockstep.

Each agent is the run a single `seed=s` job would be: its own env, replay buffer,
exploration, target network, evaluations, checkpoints and summary in JOB_DIR/seed_<s>/,
and its own SwanLab run (written when the agent finishes). It draws the same random
streams as that single run (initial weights included); only the floating-point order of
the batched arithmetic differs, so results agree statistically, not bit for bit.
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

from dqn.agent import DQNAgent, numpy_forward
from dqn.buffers import StackedReplayBuffer
from dqn.config import Config
from dqn.envs import make_env, space_sizes
from dqn.evaluation import EvalResult, Evaluator
from dqn.exploration import build_schedule
from dqn.loop import (
    STREAMS,
    StopSignals,
    budget_spent,
    evaluation_due,
    prepare_process,
    seed_streams,
)
from dqn.networks import agent_state_dict, build_q_network, stack_networks
from dqn.records import NonFiniteError, Progress, RunRecord, TrainingStats
from dqn.targets import build_target_updater
from dqn.tracking import DeferredTracker, flatten

log = logging.getLogger("dqn")


class AgentView:
    """Agent k of a stacked DQNAgent, as a RunRecord sees an agent: its greedy policy,
    its weights and the update count."""

    def __init__(self, agent: DQNAgent, k: int) -> None:
        self.agent, self.k = agent, k
        self._numpy_q = numpy_forward(agent.online, k)

    @property
    def gradient_steps(self) -> int:
        return self.agent.gradient_steps

    def weights(self) -> dict[str, torch.Tensor]:
        return agent_state_dict(self.agent.online, self.k)

    def greedy(self, obs: np.ndarray) -> np.ndarray:
        if self._numpy_q is not None:
            return self._numpy_q(obs).argmax(axis=-1)
        stacked = np.broadcast_to(obs, (len(self.agent.params[0]), *np.shape(obs)))
        return self.agent.greedy(stacked)[self.k]


class Member:
    """Everything that is one agent's own: seed, env, exploration, records; its step and
    its bookkeeping after each step."""

    def __init__(self, cfg: Config, k: int, seed: int, agent: DQNAgent, job_dir: Path,
                 job_name: str, stored_config: dict[str, Any]) -> None:
        self.cfg = dataclasses.replace(cfg, seed=seed)
        self.seed, self.k = seed, k
        self.seeds = seed_streams(seed, STREAMS)
        self.env = make_env(cfg.env)
        self.obs, _ = self.env.reset(seed=seed)
        self.actions = np.random.default_rng(self.seeds["actions"])
        self.epsilon_at = build_schedule(cfg.exploration)
        self.evaluator = Evaluator(cfg.env, self.seeds["eval"])
        self.view = AgentView(agent, k)
        self.episodes = 0
        self.done = False
        self.final: float | None = None  # the final evaluation's mean, once finished
        self.failure: str | None = None
        run_dir = agent_dir(job_dir, seed)
        stored = {**copy.deepcopy(stored_config), "seed": seed}
        write_hydra_record(job_dir, run_dir, stored)
        name = member_name(job_name, seed)
        self.stats = TrainingStats(agent.device)
        self.run = RunRecord(self.cfg, run_dir, name, stored,
                             DeferredTracker(cfg.logger, name, flatten(stored)),
                             label=f"seed {seed}: ")

    def step(self, action: int, step: int) -> tuple[np.ndarray, float, bool, bool]:
        """Take `action` (the env step it ends is `step`); returns the next observation,
        the reward, terminated and whether the episode ended. A finished agent stands
        still: it only keeps the batch in shape."""
        if self.done:
            return self.obs, 0.0, False, False
        next_obs, reward, terminated, truncated, _ = self.env.step(action)
        self.stats.add_reward(reward)
        self.obs = next_obs
        if terminated or truncated:
            self.episodes += 1
            self.run.log_episode(self.episodes, step, *self.stats.end_episode())
            self.obs, _ = self.env.reset()
        return next_obs, reward, terminated, terminated or truncated

    def record(self, step: int, epsilon: float, sums: UpdateSums, evaluate: bool,
               result: EvalResult | None) -> None:
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
            self.failure = f"seed {self.seed}: {error}"
            log.error("seed %d stopped: %s", self.seed, error)
        if not self.done and budget_spent(self.cfg.train, step, self.episodes):
            self.finish(step, epsilon)

    def finish(self, step: int, epsilon: float) -> None:
        """Last evaluation and last.pt, then the final evaluation of best.pt read back
        from disk, the video if asked for, summary.json and the SwanLab run."""
        run = self.run
        if run.last_eval is None or run.last_eval[0] != step:
            run.evaluate(self.view, self.evaluator, step, self.episodes, epsilon)
        run.save("last", self.view, step)
        final = run.finish(step, self.episodes, self.seeds)
        self.close()
        self.final = final.mean
        log.info("seed %d: final evaluation of the best checkpoint: %.1f ± %.1f over %d "
                 "episodes | %s", self.seed, final.mean, final.std, len(final.returns),
                 run.best_path)

    def fail(self, error: BaseException, step: int) -> None:
        if not self.done:
            self.run.fail(error, step, self.episodes)
            self.close()

    def close(self) -> None:
        self.done = True
        self.env.close()
        self.evaluator.close()


class UpdateSums:
    """The agents' TD losses and mean Qs summed over the updates since they were last
    handed to each agent's TrainingStats (one tensor operation per update, not K)."""

    def __init__(self, members: list[Member], agents: int, device: torch.device) -> None:
        self.members = members
        self.loss = self.q = torch.zeros(agents, device=device)
        self.updates = 0

    def add(self, losses: torch.Tensor, q_means: torch.Tensor) -> None:
        self.loss, self.q, self.updates = self.loss + losses, self.q + q_means, self.updates + 1

    def hand_over(self) -> None:
        if self.updates:
            for m in self.members:
                m.stats.add_update(self.loss[m.k], self.q[m.k], self.updates)
            self.loss, self.q = torch.zeros_like(self.loss), torch.zeros_like(self.q)
            self.updates = 0


def agent_dir(job_dir: Path, seed: int) -> Path:
    """The run folder of the agent with seed `seed` in a num_seeds job's folder."""
    return job_dir / f"seed_{seed}"


def write_hydra_record(job_dir: Path, run_dir: Path, stored: dict[str, Any]) -> None:
    """An agent's own .hydra/, as every run folder has: the job's overrides with the
    agent's seed, its resolved config, and the job's hydra.yaml."""
    record, job_record = run_dir / ".hydra", job_dir / ".hydra"
    record.mkdir(parents=True, exist_ok=True)
    overrides = []
    if (job_record / "overrides.yaml").exists():
        overrides = [o for o in OmegaConf.load(job_record / "overrides.yaml")
                     if o.split("=", 1)[0].lstrip("+~") != "seed"]
    OmegaConf.save(OmegaConf.create([*overrides, f"seed={stored['seed']}"]),
                   record / "overrides.yaml")
    config = {k: v for k, v in stored.items() if k not in ("choices", "schemas")}
    OmegaConf.save(OmegaConf.create(config), record / "config.yaml")
    if (job_record / "hydra.yaml").exists():
        shutil.copyfile(job_record / "hydra.yaml", record / "hydra.yaml")


def member_name(job_name: str, seed: int) -> str:
    """The job's run name with this agent's seed in place of the job's."""
    parts = [p for p in job_name.split(",") if p and p != "default"
             and not p.startswith("seed=")]
    return ",".join([*parts, f"seed={seed}"])


def train_seeds(cfg: Config, job_dir: Path, job_name: str,
                stored_config: dict[str, Any]) -> float:
    """Train seeds cfg.seed .. cfg.seed + cfg.num_seeds - 1 together; returns the mean
    over agents of the final evaluation mean return."""
    seeds = [cfg.seed + k for k in range(cfg.num_seeds)]
    device = prepare_process(cfg)
    probe = make_env(cfg.env)
    obs_dim, n_actions = space_sizes(probe)
    probe.close()
    networks = []
    for seed in seeds:  # each agent starts from the weights its single run would have
        torch.manual_seed(seed)
        networks.append(build_q_network(cfg.network, obs_dim, n_actions))
    agent = DQNAgent(stack_networks(networks), cfg.optimizer, build_target_updater(cfg.target),
                     cfg.train.gamma, cfg.train.loss, n_actions, np.random.default_rng(0),
                     device, double_q=cfg.train.double_q)
    joint = JointEvaluator(cfg, len(seeds), seed_streams(cfg.seed, ("joint_eval",)))
    members: list[Member] = []
    sums = UpdateSums(members, len(seeds), device)
    t, b = cfg.train, cfg.buffer
    step = 0
    try:
        for k, seed in enumerate(seeds):
            members.append(Member(cfg, k, seed, agent, job_dir, job_name, stored_config))
        buffer = StackedReplayBuffer(
            b.capacity, obs_dim, [np.random.default_rng(m.seeds["replay"]) for m in members],
            device)
        with Progress(t.total_steps, t.total_episodes) as progress, StopSignals() as stop:
            while not all(m.done for m in members) and not stop.requested:
                epsilons = [m.epsilon_at(step, m.episodes) for m in members]
                obs = np.stack([m.obs for m in members])
                actions = act(agent, members, obs, epsilons, n_actions)
                stepped = [m.step(int(a), step + 1) for m, a in zip(members, actions)]
                next_obs, rewards, terminated, ended = (np.array(x) for x in zip(*stepped))
                buffer.add(obs, actions, rewards, next_obs, terminated)
                step += 1
                if step >= b.learning_starts and step % t.train_frequency == 0:
                    for batch in buffer.sample_batches(b.batch_size, t.gradient_steps):
                        sums.add(*agent.update(batch))
                due = [m for m in members
                       if not m.done and evaluation_due(cfg, step, m.episodes, ended[m.k])]
                results = joint.run(agent, due)
                for m, epsilon in zip(members, epsilons):
                    m.record(step, epsilon, sums, m in due, results.get(m.k))
                if progress.due():
                    show_progress(progress, members, step, epsilons)
        if stop.requested:
            message = (f"stopped by {stop.name} at env step {step}; runs with num_seeds > 1 "
                       "cannot be resumed")
            for m in members:
                m.fail(KeyboardInterrupt(message), step)
            log.warning("%s", message)
            raise SystemExit(128 + stop.signal_number)
    except SystemExit:
        raise
    except BaseException as error:
        for m in members:
            m.fail(error, step)
        raise
    finally:
        joint.close()
    return report(members, job_dir)


def show_progress(progress: Progress, members: list[Member], step: int,
                  epsilons: list[float]) -> None:
    active = [m for m in members if not m.done] or members
    progress.update(step, min(m.episodes for m in active),
                    float(np.mean([m.stats.last_return for m in active])),
                    float(np.median([m.run.best_return for m in active])),
                    float(np.mean(epsilons)))


def report(members: list[Member], job_dir: Path) -> float:
    """The mean final evaluation over agents; NonFiniteError naming those that stopped."""
    failures = [m.failure for m in members if m.failure]
    if failures:
        others = "" if len(failures) == len(members) else "; the others completed"
        raise NonFiniteError(f"{len(failures)} of {len(members)} agents stopped{others}. "
                             f"{'; '.join(failures)}")
    finals = {m.seed: m.final for m in members}
    mean = float(np.mean(list(finals.values())))
    log.info("%d seeds: final evaluation mean over agents %.1f (per seed: %s) | %s",
             len(members), mean, ", ".join(f"{s}: {v:.1f}" for s, v in finals.items()),
             job_dir)
    return mean


class JointEvaluator:
    """The periodic evaluation of all K agents at once, when the env has a vectorised
    implementation: K * eval.episodes episodes in one vector env, agent k playing the
    k-th block of eval.episodes, with one batched forward pass per step. The start states
    come from a stream of the job's own (seed_streams(seed)["joint_eval"]); each agent's
    confirmations and final evaluation still use its own evaluator and seeds."""

    def __init__(self, cfg: Config, agents: int, seeds: dict[str, int]) -> None:
        self.agents, self.episodes = agents, cfg.eval.episodes
        self.evaluator = Evaluator(cfg.env, seeds["joint_eval"])
        self.vectorised = self.evaluator.vector_env(agents * self.episodes) is not None

    def run(self, agent: DQNAgent, due: list[Member]) -> dict[int, EvalResult]:
        """Each due agent's evaluation, by agent index; empty when they are to evaluate
        one by one (no vectorised env, or fewer than two agents due)."""
        if not self.vectorised or len(due) < 2:
            return {}
        shape = (self.agents, self.episodes)

        def policy(obs: np.ndarray) -> np.ndarray:
            return agent.greedy(obs.reshape(*shape, -1)).reshape(-1)

        result = self.evaluator.run(policy, self.agents * self.episodes)
        returns, lengths = result.returns.reshape(shape), result.lengths.reshape(shape)
        return {m.k: EvalResult(returns[m.k], lengths[m.k]) for m in due}

    def close(self) -> None:
        self.evaluator.close()


def act(agent: DQNAgent, members: list[Member], obs: np.ndarray, epsilons: list[float],
        n_actions: int) -> np.ndarray:
    """Each agent's epsilon-greedy action from its own generator, drawn in the order a
    single run draws them; the greedy ones from one batched forward pass."""
    actions = np.zeros(len(members), dtype=np.int64)
    greedy = []
    for m, epsilon in zip(members, epsilons):
        if m.actions.random() < epsilon:
            actions[m.k] = m.actions.integers(n_actions)
        else:
            greedy.append(m.k)
    if greedy:
        best = agent.greedy(obs[:, None, :])[:, 0]
        actions[greedy] = best[greedy]
    return actions
