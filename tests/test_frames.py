"""Replay memory that stores each frame of stacked observations once: the stacks it hands
out are the ones the env returned, across episode starts, time limits and the ring's
wrap, for one-step and n-step transitions, and it costs one frame per transition."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from dqn.replay.buffer import ReplayBuffer
from dqn.replay.prioritized import PrioritizedBufferConfig, PrioritizedReplay
from dqn.replay.uniform import UniformBufferConfig, UniformReplay

STACK = 4
SPACE = gym.spaces.Box(0, 60000, (STACK, 2, 3), np.uint16)


def episodes(lengths_and_ends, agents=1):
    """(obs, next_obs, terminated, truncated) per env step, as a FrameStackObservation env
    gives them: each frame unique (every pixel = its frame number), an episode's first
    observation its first frame repeated."""
    counter = 0
    for length, end in lengths_and_ends:
        counter += 1
        stack = [np.full((2, 3), counter, np.uint16)] * STACK
        for t in range(length):
            counter += 1
            next_stack = stack[1:] + [np.full((2, 3), counter, np.uint16)]
            last = t == length - 1
            yield (np.stack(stack), np.stack(next_stack), last and end == "terminated",
                   last and end == "truncated")
            stack = next_stack


def drive(buffer, steps):
    """Feed the steps; returns the true (obs, next_obs, discount) of every transition
    written, by slot."""
    truth = {}
    written = 0
    pending = []  # n-step: the env steps whose transitions are not complete yet
    n = buffer.window.n if buffer.window is not None else 1
    for obs, next_obs, terminated, truncated in steps:
        buffer.add(obs[None], np.zeros(1, np.int64), np.ones(1), next_obs[None],
                   np.array([terminated]), np.array([truncated]))
        pending.append((obs, next_obs, terminated, truncated))
        if len(pending) == n:  # the window emits the oldest of the last n steps
            first = pending.pop(0)
            # the transition's next observation: after k steps or at the episode's end
            window = [first, *pending]
            k = next((i + 1 for i, p in enumerate(window) if p[2] or p[3]), n)
            last = window[k - 1]
            discount = 0.0 if last[2] else 0.5 ** k
            truth[written] = (first[0], last[1], discount)
            written += 1
    return truth


@pytest.mark.parametrize("n_step", [1, 3])
@pytest.mark.parametrize("cls", [UniformReplay, PrioritizedReplay])
def test_sampled_stacks_are_the_envs_across_episodes_and_the_wrap(n_step, cls):
    config = PrioritizedBufferConfig if cls is PrioritizedReplay else UniformBufferConfig
    buffer = cls(config(capacity=16, batch_size=1, n_step=n_step), SPACE,
                 [np.random.default_rng(0)], 0.5, "cpu", frame_stack=STACK)
    plan = [(5, "terminated"), (2, "truncated"), (1, "terminated"), (7, "truncated"),
            (9, "terminated"), (6, None)]
    truth = drive(buffer, episodes(plan))
    assert len(truth) > buffer.capacity  # the ring wrapped
    written = len(truth) - 1  # the newest waits for its next frame
    checked = 0
    for slot in range(buffer.capacity):
        rows = np.array([[slot]])
        if not buffer.usable(rows)[0, 0]:
            continue
        index = next(i for i in range(written - 1, -1, -1) if i % buffer.capacity == slot)
        obs, next_obs, discount = truth[index]
        fields = buffer.gather(rows)
        np.testing.assert_array_equal(fields[0][0, 0].numpy(), obs)
        assert fields[4][0, 0].item() == pytest.approx(discount)
        if discount:  # a terminated transition's next observation is never used
            np.testing.assert_array_equal(fields[3][0, 0].numpy(), next_obs)
        checked += 1
    assert checked >= buffer.capacity - (STACK - 1 + n_step) - 1
    # drawing never hands out an unusable transition
    for batch in buffer.sample_batches(8, 20):
        for value in batch.obs[0, :, -1, 0, 0].tolist():
            assert value > 0


def test_a_frame_stack_costs_one_frame_per_transition():
    atari = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    per_transition = ReplayBuffer.transition_bytes(atari, frame_stack=4)
    assert per_transition == 84 * 84 + 3 + 16
    assert 1_000_000 * per_transition < 8 * 2**30  # a 1M buffer fits in 8 GiB
    assert ReplayBuffer.transition_bytes(atari) == 2 * 4 * 84 * 84 + 16  # without: 56 GB


def test_frames_and_pending_transitions_survive_a_checkpoint():
    make = lambda: UniformReplay(UniformBufferConfig(capacity=16, batch_size=1, n_step=3),  # noqa: E731
                                 SPACE, [np.random.default_rng(0)], 0.5, "cpu", frame_stack=STACK)
    plan = [(5, "terminated"), (2, "truncated"), (9, None)]
    steps = list(episodes(plan))
    run_on, resumed = make(), make()
    drive(run_on, steps[:9])
    state = run_on.state_dict()
    assert len(state["frames"]["frames"]) == 9  # the frames written, not the whole ring
    resumed.load_state_dict(state)
    for buffer in (run_on, resumed):
        drive(buffer, steps[9:])
    rows = np.arange(16)[None]
    for a, b in zip(run_on.gather(rows), resumed.gather(rows)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("n_step", [1, 3])
def test_stacks_never_cross_an_episode_end_in_any_env_of_an_agent(n_step):
    """Two envs of one agent whose episodes end at different steps: each column's stacks
    and n-step next observations are its own env's, episode by episode."""
    buffer = UniformReplay(UniformBufferConfig(capacity=32, batch_size=1, n_step=n_step), SPACE,
                           [np.random.default_rng(0)], 0.5, "cpu", frame_stack=STACK,
                           envs_per_agent=2)
    plans = [[(5, "terminated"), (2, "truncated"), (1, "terminated"), (7, "truncated"),
              (9, None)],
             [(3, "truncated"), (6, "terminated"), (4, "terminated"), (11, None)]]
    streams = [[tuple(np.asarray(part) + (1000 * c if i < 2 else 0) for i, part in
                      enumerate(step)) for step in episodes(plan)] for c, plan in
               enumerate(plans)]
    truths = [{} for _ in streams]
    pending = [[] for _ in streams]
    for t, steps in enumerate(zip(*streams)):
        obs, next_obs, terminated, truncated = (np.stack(p) for p in zip(*steps))
        buffer.add(obs, np.zeros(2, np.int64), np.ones(2), next_obs, terminated, truncated)
        for c, step in enumerate(steps):
            pending[c].append(step)
            if len(pending[c]) == n_step:
                window = pending[c]
                k = next((i + 1 for i, p in enumerate(window) if p[2] or p[3]), n_step)
                discount = 0.0 if window[k - 1][2] else 0.5 ** k
                truths[c][t - n_step + 1] = (window[0][0], window[k - 1][1], discount)
                pending[c].pop(0)
    assert buffer.capacity == 16 and buffer.columns == 2
    written = len(truths[0]) - 1  # the newest waits for its next frame
    checked = 0
    for slot in range(buffer.capacity):
        for c in range(2):
            rows = np.array([[slot * 2 + c]])
            if not buffer.usable(rows)[0, 0]:
                continue
            index = next(i for i in range(written - 1, -1, -1) if i % buffer.capacity == slot)
            obs, next_obs, discount = truths[c][index]
            fields = buffer.gather(rows)
            np.testing.assert_array_equal(fields[0][0, 0].numpy(), obs)
            assert fields[4][0, 0].item() == pytest.approx(discount)
            if discount:
                np.testing.assert_array_equal(fields[3][0, 0].numpy(), next_obs)
            checked += 1
    assert checked >= 2 * (buffer.capacity - (STACK - 1 + n_step) - 1)
