"""Observations that are stacks of frames (Atari: the last 4 84x84 frames), stored one frame
per env step: consecutive observations share all but one frame, so a 1M-transition
buffer keeps 1M frames (7 GB) instead of 8M (56 GB for obs and next_obs as uint8 stacks).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dqn.replay.arrays import as_array


class FrameStore:
    """The frames of C columns (one per (agent, env) pair) in a ring of (capacity, C, H, W),
    one per vector step: slot t % capacity holds the newest frame of the observation the
    column's env acted on at step t,
    with how many of the frames before it belong to the same episode (an observation at
    an episode's start repeats its first frame, as gymnasium's FrameStackObservation
    does). A transition written to slot t (the same ring index) names its next
    observation by the number of steps to it; a next observation after which the episode
    was truncated (bootstrapped, but never acted on, so not in the ring) keeps its newest
    frame on the side. After termination the next observation is not needed (discount 0).

    A transition is usable while the frames of its observation and of its next one are in
    the ring: the newest one is written a step after its next frame arrives, and the
    oldest stack - 1 + n (n-step) slots, whose history the ring has overwritten, are not
    drawn (`usable`).
    """

    def __init__(self, capacity: int, columns: int, frame_shape: tuple[int, ...],
                 dtype: Any, stack: int, n_step: int) -> None:
        self.capacity, self.stack, self.n_step = capacity, stack, n_step
        self.frames = np.zeros((capacity, columns, *frame_shape), dtype)
        self.history = np.zeros((capacity, columns), np.uint8)  # frames before, same episode
        self.next_steps = np.zeros((capacity, columns), np.uint8)  # steps to the next obs
        self.truncated = np.zeros((capacity, columns), bool)  # next obs: a frame on the side
        self.finals: dict[tuple[int, int], np.ndarray] = {}  # (slot, column) -> final frame
        self.steps = 0  # frames written (env steps seen)
        self.since_start = np.zeros(columns, np.int64)  # each column's steps in its episode
        self.columns = np.arange(columns)

    @staticmethod
    def transition_bytes(frame_bytes: int) -> int:
        """One frame, its history and next-step counts and flags, per transition."""
        return frame_bytes + 3

    def observe(self, obs: np.ndarray, ended: np.ndarray) -> None:
        """The observations (C, stack, H, W) acted on at this env step; `ended` (C,): the
        episode ended with this step (the next observation starts a new one)."""
        slot = self.steps % self.capacity
        self.frames[slot] = obs[:, -1]
        self.history[slot] = np.minimum(self.since_start, self.stack - 1)
        self.since_start = np.where(ended, 0, self.since_start + 1)
        self.steps += 1

    def place(self, slot: int, next_obs: np.ndarray, steps: np.ndarray,
              truncated: np.ndarray) -> None:
        """Record where transition `slot`'s next observation is: `steps` (C,) env steps on,
        or, where the episode was truncated there, next_obs's newest frame on the side."""
        self.next_steps[slot] = steps
        self.truncated[slot] = truncated
        for k in self.columns:
            self.finals.pop((slot, k), None)
            if truncated[k]:
                self.finals[(slot, k)] = next_obs[k, -1].copy()

    def usable(self, slots: np.ndarray, size: int, position: int) -> np.ndarray:
        """Whether the transitions in `slots` have all their frames in the ring: not among
        the oldest stack - 1 + n_step of the `size` stored (whose history is overwritten
        once the ring has wrapped)."""
        if self.steps <= self.capacity:
            return np.ones(slots.shape, dtype=bool)
        age = (slots - position) % self.capacity  # 0: the oldest transition stored
        return age >= self.stack - 1 + self.n_step - (self.capacity - size)

    def gather(self, slots: np.ndarray, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The observations and next observations (..., stack, H, W) of the transitions in
        `slots` of `columns` (arrays of the same shape)."""
        obs = self._stack(slots, columns, self.history[slots, columns])
        ahead = (slots + self.next_steps[slots, columns]) % self.capacity
        next_obs = self._stack(ahead, columns, self.history[ahead, columns])
        truncated = self.truncated[slots, columns]
        for index in zip(*np.nonzero(truncated)):
            next_obs[index] = self._truncation_stack(int(slots[index]), int(columns[index]))
        return obs, next_obs

    def _truncation_stack(self, slot: int, column: int) -> np.ndarray:
        """The stack of a truncation's final observation: the frames of the steps before it
        in the same episode (the first one repeated at the start), then the side frame."""
        last = (slot + int(self.next_steps[slot, column]) - 1) % self.capacity
        history = int(self.history[last, column])  # frames before `last`, same episode
        frames = []
        for lag in range(self.stack - 2, -1, -1):  # oldest first, ending at `last`
            frames.append(self.frames[(last - min(lag, history)) % self.capacity, column])
        return np.stack([*frames, self.finals[(slot, column)]])

    def _stack(self, slots: np.ndarray, columns: np.ndarray,
               history: np.ndarray) -> np.ndarray:
        lags = np.arange(self.stack - 1, -1, -1)  # oldest first
        lag = np.minimum(lags, history[..., None])
        return self.frames[(slots[..., None] - lag) % self.capacity, columns[..., None]]

    def state_dict(self) -> dict[str, Any]:
        """The slots written so far (views, not copies) and the counters: a checkpoint of
        50k steps in a 1M ring holds 50k frames."""
        keys = sorted(self.finals)
        used = min(self.steps, self.capacity)
        return {"frames": self.frames[:used], "history": self.history[:used],
                "next_steps": self.next_steps[:used], "truncated": self.truncated[:used],
                "since_start": self.since_start,
                "final_keys": np.array(keys, dtype=np.int64).reshape(-1, 2),
                "final_frames": (np.stack([self.finals[k] for k in keys]) if keys
                                 else np.zeros((0, *self.frames.shape[2:]), self.frames.dtype)),
                "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("frames", "history", "next_steps", "truncated", "since_start"):
            array = as_array(state[name])
            getattr(self, name)[:len(array)] = array
        self.finals = {tuple(key): np.array(frame) for key, frame in
                       zip(as_array(state["final_keys"]).tolist(),
                           as_array(state["final_frames"]))}
        self.steps = state["steps"]
