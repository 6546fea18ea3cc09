"""Benchmark: training-loop throughput, time to solve CartPole-v1, and SB3 for comparison.

    python scripts/bench.py                      # everything (a few minutes on 2 cores)
    python scripts/bench.py --quick              # a rough version in about a minute
    python scripts/bench.py --parts throughput   # only part a (also: solve, sb3, seeds)
    python scripts/bench.py --parts solve,sb3 --seeds 5
    python scripts/bench.py --parts none --baseline ../old-checkout   # part e alone

a. throughput: env steps per second of the real training loop (dqn.loop.train in this
   process, one gradient step per env step, logger=none, no periodic evaluation), beside
   the updates per second of a bare PyTorch loop doing the same forward, backward and
   optimizer step on random batches, and their ratio. The loop's rate is read from its own
   `perf/sps` windows after learning starts, so setup and the evaluations at the end are
   not counted.
b. time to solve: the default config, one `python -m dqn.train` process per seed with
   train.target_return=475 (stop once a greedy evaluation and a 100-episode confirmation
   reach 475); whole-process wall time, median and worst, and the solve rate.
c. the same protocol for Stable-Baselines3's DQN with the RL Zoo's CartPole-v1
   hyperparameters, if stable-baselines3 is installed (pip install -e ".[bench]").
d. many seeds in one process: aggregate env steps per second of num_seeds=8 (one
   batched computation) against one agent, default config, each a whole training call in
   this process (evaluations and the final evaluation included).
e. with --baseline DIR, another checkout of the project (the previous main, say), measured
   interleaved with this one: the time to a confirmed solve over the seeds (and its two
   factors, wall per env step and env steps to the solve, with bootstrap intervals of the
   median ratios), the cost of the default SwanLab logging for seed 2 against logger=none,
   and part d's ratio.
f. the DQN family: the cost of drawing a batch and setting its priorities in prioritized
   replay at capacities 10^4-10^6 (it grows like log N) beside uniform sampling and a
   gradient step, and env steps per second of each option alone and of Rainbow.
g. pixels: env steps per second of the whole loop on MinAtar Breakout (minatar_dqn) and
   Atari Pong (atari_dqn) after learning starts, beside the bound of the bare gradient steps
   and Stable-Baselines3's DQN with the same network and hyperparameters, on 1 and 2 threads.
i. many envs per agent (env.num_envs=N): env steps per second of the whole loop after
   learning starts for the default CartPole config and minatar_dqn at N = 1, 4, 16, beside
   Stable-Baselines3's DQN with n_envs = N and the same hyperparameters and replay ratio;
   and Atari Pong (atari_dqn) before learning starts (acting and env stepping) at N = 1, 8
   for the sync and async backends.
j. PQN (experiment=pqn_minatar) on each MinAtar game: env steps per second of the whole
   loop beside the bare bound of its parts (a vector step of 128 envs, a greedy forward
   pass on their observations, RAdam steps on minibatches, each timed alone) and beside
   minatar_dqn's loop after learning starts; num_seeds=3 in one process against three
   separate processes.
h. memory: an Atari replay memory (experiment=atari_dqn's buffer) of 100k and 1M
   transitions: bytes per transition, the process's peak memory, and the time and disk of
   a full-state checkpoint holding it (written, then read back into a fresh buffer).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's dqn, not an installed one

from dqn.cli.args import ArgumentParser, positive_int  # noqa: E402 - after pointing sys.path at the checkout

TARGET = 475.0


# --- a. throughput ---------------------------------------------------------------------
def throughput_overrides(steps: int) -> list[str]:
    """One gradient step per env step with a 64x64 MLP and batches of 64; epsilon at its
    floor once learning starts, so nearly every step acts through the network; no
    evaluation but the one at the end."""
    return ["logger=none", "train.train_frequency=1", "train.gradient_steps=1",
            "network.hidden_sizes=[64,64]", "buffer.batch_size=64",
            f"train.total_steps={steps}", "exploration.steps=1000", "eval.every_steps=null",
            "eval.every_episodes=null", "eval.episodes=1", "eval.final_episodes=1"]


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from dqn.cli.conf import CONF_DIR, register_schemas

    register_schemas()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


class WindowRecorder:
    """Stands in for the tracker: the loop logs its training aggregates every 1000 env
    steps, so each call marks a window boundary, timed in wall-clock and CPU time."""

    run_id = None

    def __init__(self) -> None:
        self.marks: list[tuple[int, float, float]] = []  # (env step, wall, CPU time)

    def log(self, metrics: dict[str, float], step: int) -> None:
        if "perf/sps" in metrics:
            self.marks.append((step, time.perf_counter(), time.process_time()))

    def finish(self, crashed: bool = False, error: str | None = None) -> None:
        pass


def loop_steps_per_second(steps: int, overrides: list[str] | None = None,
                          from_step: int | None = None) -> tuple[float, float]:
    """Env steps per second of dqn.loop.train from the first update (or `from_step`) to
    the end of the budget, in wall-clock and in CPU time."""
    import dqn.loop
    from dqn.config import stored_config, validate

    cfg = compose(throughput_overrides(steps) if overrides is None else overrides)
    config = validate(cfg)
    recorder = WindowRecorder()
    import dqn.seed_run

    build_tracker = dqn.seed_run.build_tracker
    dqn.seed_run.build_tracker = lambda *args: recorder
    try:
        with tempfile.TemporaryDirectory(prefix="bench_") as run_dir:
            dqn.loop.train(config, Path(run_dir), "bench", stored_config(config))
    finally:
        dqn.seed_run.build_tracker = build_tracker
    start = config.buffer.learning_starts if from_step is None else from_step
    timed = [mark for mark in recorder.marks if mark[0] >= start]
    (first, wall0, cpu0), (last, wall1, cpu1) = timed[0], timed[-1]
    return (last - first) / (wall1 - wall0), (last - first) / (cpu1 - cpu0)


def timed_loop(update, batches, updates: int) -> tuple[float, float]:
    """Updates per second of `update` over the batches, in wall-clock and CPU time."""
    for i in range(200):  # warm-up
        update(batches[i % len(batches)])
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(updates):
        update(batches[i % len(batches)])
    return updates / (time.perf_counter() - wall), updates / (time.process_time() - cpu)


def bare_updates_per_second(updates: int) -> tuple[float, float]:
    """The gradient steps alone, in plain PyTorch: the default network, optimizer, gradient
    clipping, Huber loss and (Double) DQN target, on random batches made beforehand."""
    import torch
    from torch import nn

    cfg = compose(throughput_overrides(1000))
    from dqn.config import validate

    config = validate(cfg)
    torch.set_num_threads(config.torch_threads)
    torch.manual_seed(0)
    layers, width = [], 4
    for hidden in config.network.hidden_sizes:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    online = nn.Sequential(*layers, nn.Linear(width, 2))
    target = copy.deepcopy(online).requires_grad_(False)
    o = config.optimizer
    optimizer = torch.optim.Adam(online.parameters(), lr=o.lr, eps=o.eps, fused=True)
    gamma, b = config.train.gamma, config.buffer.batch_size
    batches = [(torch.randn(b, 4), torch.randint(0, 2, (b,)), torch.ones(b), torch.randn(b, 4),
                (torch.rand(b) < 0.05).float()) for _ in range(64)]

    def update(obs, actions, rewards, next_obs, terminated):
        q = online(obs).gather(1, actions[:, None]).squeeze(1)
        with torch.no_grad():
            next_actions = online(next_obs).argmax(dim=1, keepdim=True)
            next_value = target(next_obs).gather(1, next_actions).squeeze(1)
            y = rewards + gamma * (1.0 - terminated) * next_value
        loss = nn.functional.smooth_l1_loss(q, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if o.clip_grad_norm is not None:
            nn.utils.clip_grad_norm_(online.parameters(), o.clip_grad_norm)
        optimizer.step()

    def update_and_sync(batch, count=iter(range(1, 10**12))):
        update(*batch)
        if next(count) % config.target.period == 0:
            target.load_state_dict(online.state_dict())

    return timed_loop(update_and_sync, batches, updates)


def agent_updates_per_second(updates: int) -> tuple[float, float]:
    """Agents.update alone on the same kind of random batches (no env, no replay)."""
    import gymnasium as gym
    import torch

    from dqn.agent import Agents
    from dqn.config import validate
    from dqn.nets import build_q_network
    from dqn.replay import Batch

    config = validate(compose(throughput_overrides(1000)))
    torch.set_num_threads(config.torch_threads)
    torch.manual_seed(0)
    space = gym.make("CartPole-v1").observation_space
    agent = Agents([build_q_network(config.network, space, 2, config.head)], config.optimizer,
                  config.target, n_actions=2, loss=config.train.loss,
                  double_q=config.train.double_q)
    b = config.buffer.batch_size
    batches = [Batch(torch.randn(1, b, 4), torch.randint(0, 2, (1, b)), torch.ones(1, b),
                     torch.randn(1, b, 4), 0.99 * (torch.rand(1, b) > 0.05).float())
               for _ in range(64)]
    return timed_loop(agent.update, batches, updates)


def run_throughput(steps: int, repeats: int) -> list[str]:
    loop, bare, agent = [], [], []
    updates = steps - 1000
    for _ in range(repeats):  # interleaved, so that all three see the same machine load
        loop.append(loop_steps_per_second(steps))
        bare.append(bare_updates_per_second(updates))
        agent.append(agent_updates_per_second(updates))
    med = statistics.median

    def rate(runs: list[tuple[float, float]], unit: str) -> str:
        walls = [wall for wall, _ in runs]
        return f"{med(walls):,.0f} {unit} ({min(walls):,.0f}-{max(walls):,.0f})"

    def ratio(a: list[tuple[float, float]], b: list[tuple[float, float]], i: int) -> float:
        return med(x[i] / y[i] for x, y in zip(a, b))

    return [
        f"| a. training loop, 1 gradient step per env step | {rate(loop, 'env steps/s')} | "
        f"median (range) of {repeats} runs of {steps:,} env steps, timed from the first "
        "update (step 1,000) to the end |",
        f"| a. bare PyTorch loop: forward, backward, optimizer step | "
        f"{rate(bare, 'updates/s')} | random batches; torch.optim.Adam(fused), "
        "clip_grad_norm_ |",
        f"| a. ratio loop / bare (target >= 0.8) | **{ratio(loop, bare, 0):.2f}** "
        f"(CPU time: {ratio(loop, bare, 1):.2f}) | median of {repeats} interleaved pairs |",
        f"| a. Agents.update alone | {rate(agent, 'updates/s')} | loop / agent.update: "
        f"{ratio(loop, agent, 0):.2f} (CPU time: {ratio(loop, agent, 1):.2f}) |",
    ]


# --- d. many seeds in one process -----------------------------------------------------
def seeds_steps_per_second(num_seeds: int, steps: int, threads: int = 1,
                           overrides: tuple[str, ...] = ()) -> float:
    """Aggregate env steps per second (all agents) of one training call with the default
    config (and `overrides`): setup, evaluations, checkpoints and the final evaluations
    included."""
    import dqn.loop
    from dqn.config import stored_config, validate

    cfg = compose(["logger=none", f"num_seeds={num_seeds}", f"train.total_steps={steps}",
                   f"torch_threads={threads}", *overrides])
    config = validate(cfg)
    with tempfile.TemporaryDirectory(prefix="bench_seeds_") as run_dir:
        start = time.perf_counter()
        dqn.loop.train(config, Path(run_dir), "bench", stored_config(config))
        return num_seeds * steps / (time.perf_counter() - start)


def run_seeds(num_seeds: int, steps: int, repeats: int) -> list[str]:
    one, many, threaded = [], [], []
    cores = os.cpu_count() or 1
    for _ in range(repeats):  # interleaved, so that all see the same machine load
        one.append(seeds_steps_per_second(1, steps))
        many.append(seeds_steps_per_second(num_seeds, steps))
        if cores > 1:
            threaded.append(seeds_steps_per_second(num_seeds, steps, cores))
    med = statistics.median
    ratio = med(m / o for m, o in zip(many, one))
    lines = []
    if threaded:
        lines = [f"| d. num_seeds={num_seeds}, torch_threads={cores} | "
                 f"{med(threaded):,.0f} env steps/s | ratio to one agent (on one thread): "
                 f"**{med(t / o for t, o in zip(threaded, one)):.1f}x** |"]
    return [
        f"| d. one agent (default config) | {med(one):,.0f} env steps/s "
        f"({min(one):,.0f}-{max(one):,.0f}) | dqn.loop.train, {steps:,} env steps, evaluations "
        "and final evaluation included |",
        f"| d. num_seeds={num_seeds} in one process | {med(many):,.0f} env steps/s "
        f"({min(many):,.0f}-{max(many):,.0f}) | aggregate over the {num_seeds} agents, "
        f"{steps:,} env steps each |",
        f"| d. ratio (target >= 4 at K = 8) | **{ratio:.1f}x** | median of {repeats} "
        "interleaved pairs |",
        *lines,
    ]


# --- f. the DQN family's options ---------------------------------------------------
OPTIONS = {
    "default (DQN, double Q)": (),
    "head=dueling": ("head=dueling",),
    "head.noisy=true exploration=none": ("head.noisy=true", "exploration=none"),
    "head=c51 (51 atoms)": ("head=c51", "head.v_min=0", "head.v_max=100"),
    "buffer=prioritized": ("buffer=prioritized",),
    "buffer.n_step=3": ("buffer.n_step=3",),
    "experiment=rainbow": ("experiment=rainbow",),
    "head=qr (50 quantiles)": ("head=qr",),
    "head=iqn (N = N' = 64, K = 32)": ("head=iqn",),
    "head=munchausen": ("head=munchausen",),
}


def run_options(steps: int, repeats: int) -> list[str]:
    """Env steps per second of a whole training call with each option alone, and Rainbow."""
    rates: dict[str, list[float]] = {name: [] for name in OPTIONS}
    for _ in range(repeats):  # interleaved
        for name, overrides in OPTIONS.items():
            rates[name].append(seeds_steps_per_second(1, steps, overrides=overrides))
    base = statistics.median(rates["default (DQN, double Q)"])
    return [f"| f. {name} | {statistics.median(r):,.0f} env steps/s | "
            f"{statistics.median(r) / base:.2f}x the default; {steps:,} env steps, median of "
            f"{repeats} |" for name, r in rates.items()]


def replay_costs(capacities: tuple[int, ...], repeats: int = 2000) -> list[str]:
    """Microseconds to draw a batch of 64 and set its priorities (prioritized replay), and
    to draw one (uniform), from a full buffer of CartPole transitions; and one gradient
    step of the default agent."""
    import gymnasium as gym
    import numpy as np
    import torch

    from dqn.replay.prioritized import PrioritizedBufferConfig, PrioritizedReplay
    from dqn.replay.uniform import UniformBufferConfig, UniformReplay

    torch.set_num_threads(1)
    space = gym.make("CartPole-v1").observation_space
    rng = np.random.default_rng(0)

    def full(cls, config, capacity):
        buffer = cls(config(capacity=capacity, batch_size=64), space,
                     [np.random.default_rng(0)], 0.99, "cpu")
        for name, array in buffer.fields.items():
            array[:] = rng.random(array.shape) if array.dtype.kind == "f" else 0
        buffer.position, buffer.size = 0, capacity
        if cls is PrioritizedReplay:
            buffer.trees.set(np.arange(capacity)[None], rng.random((1, capacity)))
        return buffer

    def per_call(work) -> float:
        for _ in range(100):
            work()
        start = time.perf_counter()
        for _ in range(repeats):
            work()
        return (time.perf_counter() - start) / repeats * 1e6

    lines = []
    for capacity in capacities:
        prioritized = full(PrioritizedReplay, PrioritizedBufferConfig, capacity)
        uniform = full(UniformReplay, UniformBufferConfig, capacity)
        errors = torch.rand(1, 64)

        def draw_and_update():
            batch = prioritized.sample(64)
            prioritized.update_priorities(batch, errors)

        lines.append(f"| f. replay, capacity {capacity:,}: batch of 64 | prioritized (draw + "
                     f"set priorities) {per_call(draw_and_update):.0f} us; uniform "
                     f"{per_call(lambda: uniform.sample(64)):.0f} us | sum tree of "
                     f"{prioritized.trees.levels} levels |")
    update = 1e6 / agent_updates_per_second(repeats)[0]
    lines.append(f"| f. one gradient step (default agent, batch 64) | {update:.0f} us | "
                 "for scale |")
    return lines


# --- g. pixels ---------------------------------------------------------------------
PIXELS = {  # preset, overrides that shorten it, env steps timed after learning starts
    "MinAtar Breakout (experiment=minatar_dqn)": (
        ["experiment=minatar_dqn", "buffer.learning_starts=1000"], 1000),
    "Atari Pong (experiment=atari_dqn)": (
        ["experiment=atari_dqn", "buffer.capacity=20000", "buffer.learning_starts=1000"], 1000),
}


def pixel_overrides(preset: list[str], steps: int, threads: int) -> list[str]:
    return [*preset, "logger=none", f"train.total_steps={steps}", "eval.every_steps=null",
            "eval.episodes=1", "eval.final_episodes=1", "train.checkpoint_every=null",
            f"torch_threads={threads}"]


def bare_pixel_updates_per_second(preset: list[str], updates: int, threads: int) -> float:
    """The preset's gradient step alone in plain PyTorch: its network (online forward and
    backward, target forward), loss and optimizer on random batches of its shape."""
    import numpy as np
    import torch
    from torch import nn

    from dqn.config import validate
    from dqn.envs import make_env
    from dqn.nets import build_q_network

    config = validate(compose(pixel_overrides(preset, 100_000, threads)))
    torch.set_num_threads(threads)
    env = make_env(config.env)
    space, n = env.observation_space, int(env.action_space.n)
    env.close()
    online = build_q_network(config.network, space, n, config.head)
    target = build_q_network(config.network, space, n, config.head).requires_grad_(False)
    o = config.optimizer
    if type(o).__name__ == "RMSpropConfig":
        optimizer = torch.optim.RMSprop(online.parameters(), lr=o.lr, alpha=o.alpha, eps=o.eps,
                                        centered=o.centered)
    else:
        optimizer = torch.optim.Adam(online.parameters(), lr=o.lr, eps=o.eps)
    loss_fn = nn.functional.mse_loss if config.train.loss == "mse" else nn.functional.smooth_l1_loss
    b = config.buffer.batch_size
    dtype = torch.uint8 if np.dtype(space.dtype) == np.uint8 else torch.bool
    high = 256 if dtype == torch.uint8 else 2
    batches = [(torch.randint(0, high, (b, *space.shape)).to(dtype), torch.randint(0, n, (b,)),
                torch.rand(b), torch.randint(0, high, (b, *space.shape)).to(dtype),
                torch.rand(b)) for _ in range(8)]

    def update(batch):
        obs, actions, rewards, next_obs, discounts = batch
        q = online(obs).gather(1, actions[:, None]).squeeze(1)
        with torch.no_grad():
            y = rewards + discounts * target(next_obs).max(1).values
        loss = loss_fn(q, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return timed_loop(update, batches, updates)[0]


def sb3_pixel_steps_per_second(preset: list[str], steps: int, threads: int,
                               n_envs: int = 1) -> float | None:
    """Stable-Baselines3's DQN on the same env, network and hyperparameters: env steps per
    second after learning starts (None without stable-baselines3)."""
    try:
        import stable_baselines3  # noqa: F401
    except ImportError:
        return None
    import torch
    from stable_baselines3 import DQN
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
    from torch import nn

    from dqn.config import validate
    from dqn.envs import make_env

    config = validate(compose(pixel_overrides(preset, 100_000, threads)))
    torch.set_num_threads(threads)
    env = make_vec_env(lambda: make_env(config.env), n_envs=n_envs, seed=0)
    b, t, x = config.buffer, config.train, config.exploration
    starts = b.learning_starts

    class MinAtarFeatures(BaseFeaturesExtractor):  # the MinAtar paper's network
        def __init__(self, space):
            super().__init__(space, features_dim=128)
            channels, height, width = space.shape
            self.net = nn.Sequential(nn.Conv2d(channels, 16, 3), nn.ReLU(), nn.Flatten(),
                                     nn.Linear(16 * (height - 2) * (width - 2), 128), nn.ReLU())

        def forward(self, obs):
            return self.net(obs.float())

    minatar = "minatar" in " ".join(preset)
    mlp = "cartpole" in " ".join(preset)
    policy_kwargs = dict(features_extractor_class=MinAtarFeatures, net_arch=[]) if minatar \
        else dict(net_arch=list(config.network.hidden_sizes)) if mlp else dict(net_arch=[])
    o = config.optimizer
    if minatar:
        policy_kwargs.update(optimizer_class=torch.optim.RMSprop,
                             optimizer_kwargs=dict(alpha=o.alpha, eps=o.eps, centered=True))
    else:
        policy_kwargs.update(optimizer_kwargs=dict(eps=o.eps))
    marks: list[tuple[int, float]] = []

    class Clock(BaseCallback):
        def _on_step(self) -> bool:
            if (not marks and self.num_timesteps > starts) or self.num_timesteps >= steps:
                marks.append((self.num_timesteps, time.perf_counter()))
            return True

    # SB3 counts train_freq in vector steps: the same replay ratio with n_envs envs
    train_freq = max(1, t.train_frequency // n_envs)
    gradient_steps = t.gradient_steps * train_freq * n_envs // t.train_frequency
    model = DQN("CnnPolicy" if not (minatar or mlp) else "MlpPolicy", env, learning_rate=o.lr,
                buffer_size=b.capacity, learning_starts=starts, batch_size=b.batch_size,
                gamma=t.gamma, train_freq=train_freq, gradient_steps=gradient_steps,
                # ours counts the period in gradient steps, SB3 in env steps
                target_update_interval=config.target.period * t.train_frequency
                // t.gradient_steps,
                exploration_fraction=min(1.0, x.steps / steps),
                exploration_initial_eps=x.start, exploration_final_eps=x.end,
                max_grad_norm=o.clip_grad_norm or 1e9, policy_kwargs=policy_kwargs,
                device="cpu", seed=0,
                optimize_memory_usage=False)
    model.learn(total_timesteps=steps, callback=Clock())
    (first, start), (last, end) = marks[0], marks[-1]
    return (last - first) / (end - start)


def run_pixels(repeats: int) -> list[str]:
    """Env steps per second of the whole loop on MinAtar and Atari after learning starts,
    beside the bare gradient-step bound and Stable-Baselines3, with 1 and 2 threads."""
    lines = []
    med = statistics.median
    for name, (preset, timed) in PIXELS.items():
        starts = int(preset[-1].split("=")[1])
        steps = starts + timed
        for threads in (1, 2):
            ours, bare, sb3 = [], [], []
            for _ in range(repeats):
                ours.append(loop_steps_per_second(
                    steps, pixel_overrides(preset, steps, threads))[0])
                config_steps = compose(pixel_overrides(preset, steps, threads))
                per_step = (config_steps.train.gradient_steps
                            / config_steps.train.train_frequency)
                bare.append(bare_pixel_updates_per_second(preset, 200, threads) / per_step)
                rate = sb3_pixel_steps_per_second(preset, steps, threads)
                if rate is not None:
                    sb3.append(rate)
            sb3_text = (f"SB3 {med(sb3):,.0f} env steps/s (ours / SB3: "
                        f"**{med(ours) / med(sb3):.2f}**)" if sb3 else "SB3 not installed")
            lines.append(f"| g. {name}, torch_threads={threads} | {med(ours):,.0f} env steps/s "
                         f"| bare gradient steps bound {med(bare):,.0f} env steps/s (ours / "
                         f"bound: **{med(ours) / med(bare):.2f}**); {sb3_text}; medians of "
                         f"{repeats} |")
    return lines


# --- i. many envs per agent ------------------------------------------------------------
ENV_COUNTS = {"CartPole-v1 (default config)": (["experiment=cartpole"], 8000, (1, 4, 16)),
              "MinAtar Breakout (minatar_dqn)": (["experiment=minatar_dqn",
                                                  "buffer.learning_starts=2000"], 3000,
                                                 (1, 4, 16))}


def run_envs(repeats: int) -> list[str]:
    """Env steps per second after learning starts at several N, ours beside SB3's n_envs;
    then Atari acting and stepping speed per backend."""
    lines = []
    med = statistics.median
    for name, (preset, timed, counts) in ENV_COUNTS.items():
        starts = 1000 if "cartpole" in preset[0] else int(preset[-1].split("=")[1])
        steps = starts + timed
        base = None
        for n in counts:
            overrides = [*pixel_overrides(preset, steps, 1), f"env.num_envs={n}"]
            ours = [loop_steps_per_second(steps, overrides)[0] for _ in range(repeats)]
            sb3 = [rate for _ in range(repeats)
                   if (rate := sb3_pixel_steps_per_second(preset, steps, 1, n)) is not None]
            base = base or med(ours)
            sb3_text = (f"SB3 n_envs={n}: {med(sb3):,.0f} env steps/s (ours / SB3 "
                        f"**{med(ours) / med(sb3):.2f}**)" if sb3 else "SB3 not installed")
            lines.append(f"| i. {name}, env.num_envs={n} | {med(ours):,.0f} env steps/s "
                         f"({med(ours) / base:.2f}x N=1) | {sb3_text}; medians of {repeats} |")
    for vectorization in ("sync", "async"):
        for n in (1, 8):
            overrides = [*pixel_overrides(["experiment=atari_dqn"], 3000, 1),
                         "buffer.learning_starts=2999", "buffer.capacity=20000",
                         f"env.num_envs={n}", f"env.vectorization={vectorization}"]
            rates = [loop_steps_per_second(3000, overrides, from_step=1000)[0]
                     for _ in range(repeats)]
            lines.append(f"| i. Atari Pong before learning starts, {vectorization}, "
                         f"env.num_envs={n} | {med(rates):,.0f} env steps/s | acting and "
                         f"env stepping; medians of {repeats} |")
    return lines


# --- j. PQN ----------------------------------------------------------------------------
MINATAR_GAMES = ("Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders")


def bare_pqn_steps_per_second(overrides: list[str], rollouts: int = 3) -> float:
    """PQN's bound from its three costs measured alone, in plain PyTorch and gymnasium:
    a vector step of the preset's envs (SyncVectorEnv, random actions), a greedy forward
    pass on their observations, and a gradient step (forward, MSE towards given targets,
    backward, gradient clipping, RAdam) on a minibatch; env steps per second of T x (step
    + act) + epochs x minibatches x (gradient step) per rollout of T x N."""
    import gymnasium as gym
    import numpy as np
    import torch
    from torch import nn

    from dqn.config import validate
    from dqn.envs import env_maker
    from dqn.nets import build_q_network

    config = validate(compose(overrides))
    torch.set_num_threads(config.torch_threads)
    maker, b, n = env_maker(config.env), config.buffer, config.env.num_envs
    envs = gym.vector.SyncVectorEnv([maker.make for _ in range(n)])
    obs, _ = envs.reset(seed=0)
    net = build_q_network(config.network, envs.single_observation_space,
                          int(envs.single_action_space.n), config.head)
    optimizer = torch.optim.RAdam(net.parameters(), lr=config.optimizer.lr, foreach=True)
    actions = [envs.action_space.sample() for _ in range(64)]
    size = b.rollout_steps * n // b.minibatches
    batch = (torch.as_tensor(np.concatenate([obs] * (size // n + 1))[:size]),
             torch.randint(0, int(envs.single_action_space.n), (size,)), torch.randn(size))

    def step(i: int) -> None:
        envs.step(actions[i % 64])

    def act(i: int) -> None:
        with torch.no_grad():
            net(torch.as_tensor(obs)).argmax(-1).numpy()

    def update(i: int) -> None:
        x, a, y = batch
        loss = nn.functional.mse_loss(net(x).gather(1, a[:, None]).squeeze(1), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), config.optimizer.clip_grad_norm)
        optimizer.step()

    def seconds(work, count: int) -> float:
        for i in range(min(count, 20)):
            work(i)
        start = time.perf_counter()
        for i in range(count):
            work(i)
        return (time.perf_counter() - start) / count

    steps = b.rollout_steps * rollouts
    rollout = (b.rollout_steps * (seconds(step, steps) + seconds(act, steps))
               + b.epochs * b.minibatches * seconds(update, b.epochs * b.minibatches * rollouts))
    envs.close()
    return b.rollout_steps * n / rollout


def pqn_overrides(game: str, steps: int, extra: tuple[str, ...] = ()) -> list[str]:
    return [*pixel_overrides(["experiment=pqn_minatar"], steps, 1),
            f"env.id=MinAtar/{game}-v1", *extra]


def separate_processes_steps_per_second(overrides: list[str], processes: int) -> float:
    """Aggregate env steps per second of `processes` runs of `python -m dqn.train` started
    together (whole processes, start-up included)."""
    with tempfile.TemporaryDirectory(prefix="bench_") as root:
        started = time.perf_counter()
        running = [subprocess.Popen([sys.executable, "-m", "dqn.train", *overrides,
                                     f"seed={k}", f"hydra.run.dir={root}/{k}"], cwd=REPO,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                   for k in range(processes)]
        for process in running:
            process.wait()
        wall = time.perf_counter() - started
        steps = sum(json.loads((Path(root) / str(k) / "summary.json").read_text())["env_steps"]
                    for k in range(processes))
    return steps / wall


def run_pqn(repeats: int, rollouts: int = 12, num_seeds: int = 3) -> list[str]:
    """For each MinAtar game: env steps per second of the whole PQN loop (pqn_minatar, no
    periodic evaluation, timed after its first rollouts) beside its bare bound and
    beside minatar_dqn's loop after learning starts; then num_seeds=K PQN in one process
    against K separate processes, on Breakout."""
    lines = []
    med = statistics.median
    steps = 128 * 32 * rollouts
    for game in MINATAR_GAMES:
        ours, bare, dqn = [], [], []
        for _ in range(repeats):
            ours.append(loop_steps_per_second(steps, pqn_overrides(game, steps),
                                              from_step=steps // 4)[0])
            bare.append(bare_pqn_steps_per_second(pqn_overrides(game, steps)))
            dqn.append(loop_steps_per_second(3000, [
                *pixel_overrides(["experiment=minatar_dqn"], 3000, 1),
                f"env.id=MinAtar/{game}-v1", "buffer.learning_starts=1000"])[0])
        lines.append(f"| j. PQN, MinAtar {game} (pqn_minatar) | {med(ours):,.0f} env steps/s "
                     f"| bare bound {med(bare):,.0f} (ours / bound **{med(ours) / med(bare):.2f}**)"
                     f"; minatar_dqn {med(dqn):,.0f} (PQN / DQN **{med(ours) / med(dqn):.1f}x**)"
                     f"; medians of {repeats} |")
    job = pqn_overrides("Breakout", steps, (f"num_seeds={num_seeds}",))
    together = [loop_steps_per_second(steps, job, from_step=steps // 4)[0] * num_seeds
                for _ in range(repeats)]
    single = pqn_overrides("Breakout", steps, ("train.checkpoint_every=null",))
    apart = [separate_processes_steps_per_second(single, num_seeds) for _ in range(repeats)]
    lines.append(f"| j. PQN, num_seeds={num_seeds} in one process | {med(together):,.0f} env "
                 f"steps/s over all agents | {num_seeds} separate processes at once: "
                 f"{med(apart):,.0f} (start-up included; one process / separate "
                 f"**{med(together) / med(apart):.2f}**); medians of {repeats} |")
    return lines


# --- h. memory -------------------------------------------------------------------------
def run_memory(capacities: tuple[int, ...]) -> list[str]:
    """Bytes per transition, peak memory, and full-state checkpoint time and disk of a full
    Atari replay memory at each capacity (frames filled with noise, one per transition)."""
    import gymnasium as gym
    import numpy as np

    from dqn.replay.buffer import ReplayBuffer
    from dqn.replay.uniform import UniformBufferConfig, UniformReplay
    from dqn.run.checkpoint import load_checkpoint, save_training_state

    space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    per_transition = ReplayBuffer.transition_bytes(space, frame_stack=4)
    lines = []
    for capacity in capacities:
        def fresh():
            return UniformReplay(UniformBufferConfig(capacity=capacity, batch_size=32), space,
                                 [np.random.default_rng(0)], 0.99, "cpu", frame_stack=4)

        buffer = fresh()
        noise = np.random.default_rng(0).integers(0, 256, (1024, 84, 84), dtype=np.uint8)
        for start in range(0, capacity, 1024):  # touch every page, as a full ring would
            end = min(start + 1024, capacity)
            buffer.frames.frames[start:end, 0] = noise[:end - start]
        buffer.frames.history[:] = 3
        buffer.frames.next_steps[:] = 1
        buffer.frames.steps = buffer.size = capacity
        with tempfile.TemporaryDirectory(dir=REPO / "outputs") as folder:
            path = Path(folder) / "last.pt"
            reset_peak_memory()
            start = time.perf_counter()
            save_training_state(path, {}, {}, buffer.state_dict())
            write = time.perf_counter() - start
            write_peak = peak_memory()
            disk = sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())
            del buffer
            reset_peak_memory()
            start = time.perf_counter()
            restored = fresh()
            restored.load_state_dict(load_checkpoint(path)["state"])
            read = time.perf_counter() - start
            read_peak = peak_memory()
            del restored
        gib = 2**30
        lines.append(f"| h. Atari replay, {capacity:,} transitions | {per_transition:,} bytes "
                     f"per transition, {per_transition * capacity / gib:.2f} GiB | full-state "
                     f"checkpoint written in {write:.1f} s (process peak "
                     f"{write_peak / gib:.2f} GiB), {disk / gib:.2f} GiB on disk; read back "
                     f"into a fresh buffer in {read:.1f} s (peak {read_peak / gib:.2f} GiB, "
                     "the file's mapped pages included) |")
    return lines


def reset_peak_memory() -> None:
    """Start the process's peak resident memory afresh (Linux; elsewhere a no-op)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_memory() -> int:
    """The process's peak resident memory in bytes since the last reset (Linux: VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


# --- b. and c. time to solve -----------------------------------------------------------
def solve_dqn(seed: int, out: Path, checkout: Path = REPO,
              logger: tuple[str, ...] = ("logger=none",), core: int | None = None) -> dict:
    """One whole `python -m dqn.train` process of `checkout` with the default config until
    a confirmed solve (or its whole budget), pinned to `core` if given."""
    run_dir = out / f"dqn_{checkout.name}_seed{seed}_{time.monotonic_ns()}"
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "dqn.train", f"seed={seed}", *logger,
         f"train.target_return={TARGET:g}", f"hydra.run.dir={run_dir}"],
        cwd=checkout, capture_output=True, text=True,
        preexec_fn=None if core is None else lambda: os.sched_setaffinity(0, {core}))
    wall = time.perf_counter() - start
    if result.returncode != 0:
        return {"seed": seed, "wall": wall, "solved": False,
                "error": (result.stderr.strip().splitlines() or ["?"])[-1]}
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"seed": seed, "wall": wall, "solved": summary["solved"],
            "solved_step": summary["solved_step"], "solved_seconds": summary["solved_seconds"]}


def solve_sb3(seed: int, out: Path) -> dict:
    path = out / f"sb3_seed{seed}.json"
    start = time.perf_counter()
    result = subprocess.run([sys.executable, __file__, "--sb3-worker", str(seed), str(path)],
                            cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        return {"seed": seed, "wall": wall, "solved": False,
                "error": (result.stderr.strip().splitlines() or ["?"])[-1]}
    return {"seed": seed, "wall": wall, **json.loads(path.read_text())}


def sb3_worker(seed: int, path: Path) -> None:
    """One SB3 run with the RL Zoo's CartPole-v1 DQN hyperparameters, evaluated like ours:
    a greedy evaluation every eval.every_steps env steps over eval.episodes episodes, and
    when it reaches the target, a confirmation over eval.final_episodes episodes."""
    start = time.perf_counter()
    import torch
    from stable_baselines3 import DQN
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    from dqn.config import validate

    ours = validate(compose(["logger=none"]))
    torch.set_num_threads(ours.torch_threads)  # as ours; one thread is faster here too
    every, episodes, confirm = ours.eval.every_steps, ours.eval.episodes, ours.eval.final_episodes
    record = {"solved": False, "solved_step": None, "solved_seconds": None}

    class StopWhenSolved(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.eval_env = make_vec_env("CartPole-v1", n_envs=episodes, seed=seed + 10_000)

        def _on_step(self) -> bool:
            if self.num_timesteps % every:
                return True
            mean, _ = evaluate_policy(self.model, self.eval_env, episodes, deterministic=True)
            if mean >= TARGET:
                mean, _ = evaluate_policy(self.model, self.eval_env, confirm, deterministic=True)
                if mean >= TARGET:
                    record.update(solved=True, solved_step=self.num_timesteps,
                                  solved_seconds=time.perf_counter() - start)
                    return False
            return True

    model = DQN("MlpPolicy", "CartPole-v1", learning_rate=2.3e-3, batch_size=64,
                buffer_size=100_000, learning_starts=1000, gamma=0.99,
                target_update_interval=10, train_freq=256, gradient_steps=128,
                exploration_fraction=0.16, exploration_final_eps=0.04,
                policy_kwargs=dict(net_arch=[256, 256]), seed=seed, device="cpu")
    model.learn(total_timesteps=50_000, callback=StopWhenSolved())
    path.write_text(json.dumps(record))


def solve_rows(name: str, rows: list[dict]) -> tuple[list[str], float]:
    walls = [r["wall"] for r in rows]
    solved = [r for r in rows if r["solved"]]
    steps = [r["solved_step"] for r in solved]
    errors = [f"seed {r['seed']}: {r['error']}" for r in rows if "error" in r]
    median = statistics.median(walls)
    lines = [
        f"| b. {name}: time to solve, median / worst | **{median:.1f} s** / "
        f"{max(walls):.1f} s | whole process per seed; unsolved runs count with their "
        "whole budget |",
        f"| b. {name}: solve rate | {len(solved)}/{len(rows)} | env steps to solve: "
        + (f"median {statistics.median(steps):,.0f}, worst {max(steps):,}" if steps else "-")
        + (f"; failed: {'; '.join(errors)}" if errors else "") + " |",
    ]
    return lines, median


def run_solve(parts: set[str], seeds: int) -> list[str]:
    lines: list[str] = []
    medians = {}
    with tempfile.TemporaryDirectory(prefix="bench_solve_") as tmp:
        out = Path(tmp)
        if "solve" in parts:
            rows = [solve_dqn(seed, out) for seed in range(seeds)]
            part, medians["dqn"] = solve_rows("dqn (this repo)", rows)
            lines += part
            print("dqn walls:", [round(r["wall"], 1) for r in rows], file=sys.stderr)
        if "sb3" in parts:
            try:
                import stable_baselines3  # noqa: F401
            except ImportError:
                lines.append("| c. Stable-Baselines3 | skipped | not installed: pip install "
                             "-e \".[bench]\" |")
                return lines
            rows = [solve_sb3(seed, out) for seed in range(seeds)]
            part, medians["sb3"] = solve_rows("SB3 DQN, RL Zoo hyperparameters", rows)
            lines += [line.replace("| b. ", "| c. ", 1) for line in part]
            print("sb3 walls:", [round(r["wall"], 1) for r in rows], file=sys.stderr)
    if len(medians) == 2:
        lines.append(f"| c. speed-up: SB3 median / dqn median (target >= 3) | "
                     f"**{medians['sb3'] / medians['dqn']:.1f}x** | same seeds, same "
                     "evaluation protocol |")
    return lines


# --- e. side by side with another checkout (--baseline) --------------------------------
def solve_side_by_side(seed: int, out: Path, checkouts) -> list[dict]:
    """solve_dqn for each checkout at the same time, each process on a core of its own
    (where the OS lets us pin it): on a machine whose speed drifts (a shared VM), runs at
    the same moment compare far better than runs one after another."""
    from concurrent.futures import ThreadPoolExecutor

    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    with ThreadPoolExecutor(len(checkouts)) as pool:
        futures = [pool.submit(solve_dqn, seed, out, checkout,
                               core=cores[(i + seed) % len(cores)] if cores else None)
                   for i, checkout in enumerate(checkouts)]
        return [future.result() for future in futures]


def in_checkout(checkout: Path, expression: str) -> float:
    """`expression` evaluated with the bench.py (and hence the dqn) of `checkout`, in a
    fresh process."""
    code = (f"import sys; sys.path.insert(0, {str(checkout / 'scripts')!r}); import bench; "
            f"print(float({expression}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=checkout, capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{checkout}: {result.stderr.strip().splitlines()[-1:]}")
    return float(result.stdout.strip().splitlines()[-1])


def median_ratio_ci(after: list[float], before: list[float], resamples: int = 10_000,
                    seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of median(after) / median(before), resampling the
    seeds (each seed's pair together); seeded: same input, same interval."""
    import numpy as np

    a, b = np.asarray(after, dtype=float), np.asarray(before, dtype=float)
    picks = np.random.default_rng(seed).integers(0, len(a), size=(resamples, len(a)))
    ratios = np.median(a[picks], axis=1) / np.median(b[picks], axis=1)
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float(low), float(high)


def run_compare(baseline: Path, seeds: int, repeats: int, num_seeds: int,
                steps: int) -> list[str]:
    """The targets that compare this checkout with `baseline` (another checkout of the
    project, e.g. the previous main), each measured interleaved in this one process."""
    med = statistics.median
    checkouts = {"before": baseline.resolve(), "after": REPO}
    lines = [f"| e. before: {checkouts['before']} | after: {REPO} | |"]
    with tempfile.TemporaryDirectory(prefix="bench_compare_") as tmp:
        out = Path(tmp)
        solves: dict[str, list[dict]] = {"before": [], "after": []}
        for seed in range(seeds):  # side by side: the two see the same machine at once
            for which, row in zip(checkouts, solve_side_by_side(seed, out, checkouts.values())):
                solves[which].append(row)
        walls = {which: [r["wall"] for r in rows] for which, rows in solves.items()}
        solved = {which: sum(r["solved"] for r in rows) for which, rows in solves.items()}
        ratio = med(a["wall"] / b["wall"] for a, b in zip(solves["after"], solves["before"]))
        low, high = median_ratio_ci(walls["after"], walls["before"])
        lines.append(
            f"| e. time to a confirmed solve, median / worst, solved | before "
            f"{med(walls['before']):.1f} s / {max(walls['before']):.1f} s, "
            f"{solved['before']}/{seeds}; after {med(walls['after']):.1f} s / "
            f"{max(walls['after']):.1f} s, {solved['after']}/{seeds} | after / before: "
            f"**{med(walls['after']) / med(walls['before']):.2f}** [95% CI {low:.2f}, "
            f"{high:.2f}] (target <= 1.15); median of the seeds' ratios {ratio:.2f}; each "
            "seed's two runs at once, one per core |")
        per_seed = "; ".join(f"{a['seed']}: {a['wall']:.1f}/{a.get('solved_step') or '-'} vs "
                             f"{b['wall']:.1f}/{b.get('solved_step') or '-'}"
                             for a, b in zip(solves["after"], solves["before"]))
        lines.append(f"| e. per seed: wall s / env steps to the solve, after vs before | "
                     f"{per_seed} | |")
        # Time to solve = env steps to the solve x time per step: the two factors apart tell
        # a slower loop from a seed whose trajectory (not speed) changed.
        both = [(a, b) for a, b in zip(solves["after"], solves["before"])
                if a.get("solved_step") and b.get("solved_step")]
        if both:
            per_step = med((a["wall"] / a["solved_step"]) / (b["wall"] / b["solved_step"])
                           for a, b in both)
            after_steps = [a["solved_step"] for a, _ in both]
            before_steps = [b["solved_step"] for _, b in both]
            steps_low, steps_high = median_ratio_ci(after_steps, before_steps)
            lines.append(
                f"| e. the two factors, over the {len(both)} seeds both solved | wall per env "
                f"step after / before **{per_step:.2f}** (median of the seeds' ratios) | env "
                f"steps to the solve after / before "
                f"{med(after_steps) / med(before_steps):.2f} [95% CI {steps_low:.2f}, "
                f"{steps_high:.2f}] (medians: after {med(after_steps):,.0f}, before "
                f"{med(before_steps):,.0f}) |")
        logger_walls: dict[tuple[str, str], list[float]] = {}
        loggers = {"swanlab": (f"logger.log_dir={out / 'swanlog'}",), "none": ("logger=none",)}
        for _ in range(repeats):
            for which, checkout in checkouts.items():
                for name, overrides in loggers.items():
                    wall = solve_dqn(2, out, checkout, overrides)["wall"]
                    logger_walls.setdefault((which, name), []).append(wall)
        for which in checkouts:
            swan, none = logger_walls[(which, "swanlab")], logger_walls[(which, "none")]
            pairs = med(a / b for a, b in zip(swan, none))
            lines.append(
                f"| e. {which}: seed 2 to a confirmed solve, SwanLab local / logger=none | "
                f"{med(swan):.1f} s / {med(none):.1f} s | **{pairs:.2f}x** (target after <= "
                f"1.2): median of {repeats} back-to-back pairs |")
    for which, checkout in checkouts.items():
        ratios = []
        for _ in range(repeats):
            one = in_checkout(checkout, f"bench.seeds_steps_per_second(1, {steps})")
            many = in_checkout(checkout, f"bench.seeds_steps_per_second({num_seeds}, {steps})")
            ratios.append(many / one)
        lines.append(f"| e. {which}: num_seeds={num_seeds} / one agent, aggregate env steps/s "
                     f"| **{med(ratios):.2f}x** | median of {repeats} pairs, {steps:,} env "
                     "steps per agent (target after >= 2.5) |")
    return lines


def main() -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts",
                        default="throughput,solve,sb3,seeds,family,pixels,memory,envs,pqn",
                        help="comma-separated: throughput, solve, sb3, seeds, family, pixels, "
                             "memory, envs, pqn (default: all)")
    parser.add_argument("--num-seeds", type=positive_int, default=8,
                        help="agents trained together in part d (default 8)")
    parser.add_argument("--seeds", type=positive_int, default=None,
                        help="seeds 0..N-1 for the time to solve (default 10, quick 3)")
    parser.add_argument("--steps", type=positive_int, default=None,
                        help="env steps per throughput run (default 6000, quick 3000)")
    parser.add_argument("--repeats", type=positive_int, default=None,
                        help="throughput runs (default 5, quick 3)")
    parser.add_argument("--quick", action="store_true", help="fewer seeds, steps and repeats")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another checkout (e.g. the previous main): part e compares the "
                             "time to solve, the logger's cost and num_seeds with it")
    parser.add_argument("--sb3-worker", nargs=2, metavar=("SEED", "OUT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sb3_worker:
        sb3_worker(int(args.sb3_worker[0]), Path(args.sb3_worker[1]))
        return 0
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    unknown = parts - {"throughput", "solve", "sb3", "seeds", "family", "pixels", "memory",
                       "envs", "pqn", "none"}
    if unknown:
        parser.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    seeds = args.seeds or (3 if args.quick else 10)
    steps = args.steps or (3000 if args.quick else 6000)
    repeats = args.repeats or (3 if args.quick else 5)

    started = time.perf_counter()
    lines = ["| measure | value | notes |", "| --- | --- | --- |"]
    if "throughput" in parts:
        lines += run_throughput(steps, repeats)
    if parts & {"solve", "sb3"}:
        lines += run_solve(parts, seeds)
    if "seeds" in parts:
        lines += run_seeds(args.num_seeds, 10 * steps // 3, repeats)
    if "family" in parts:
        lines += replay_costs((10**4, 10**5, 10**6) if not args.quick else (10**4, 10**5))
        lines += run_options(10 * steps // 3, repeats)
    if "pixels" in parts:
        lines += run_pixels(1 if args.quick else 3)
    if "memory" in parts:
        lines += run_memory((10**5,) if args.quick else (10**5, 10**6))
    if "envs" in parts:
        lines += run_envs(args.repeats or (1 if args.quick else 3))
    if "pqn" in parts:
        lines += run_pqn(args.repeats or (1 if args.quick else 3))
    if args.baseline is not None:
        if not (args.baseline / "dqn").is_dir():
            parser.error(f"--baseline {args.baseline}: not a checkout of this project")
        lines += run_compare(args.baseline, seeds, repeats, args.num_seeds, 10 * steps // 3)
    print("\n".join(lines))
    print(f"\n{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end; "
          f"benchmark took {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
