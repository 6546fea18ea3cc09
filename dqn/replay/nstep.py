"""n-step returns: the last n env steps of each column, turned into n-step transitions."""

from __future__ import annotations

from typing import Any

import numpy as np

from dqn.replay.arrays import as_array


class NStepWindow:
    """The last n env steps of every column (one (agent, env) pair) in ring arrays. Each
    vector step pushes one step per column and, once n steps are in, takes out one n-step
    transition per column: the one
    that started n - 1 steps ago, with

        return   = r_t + gamma r_t+1 + ... + gamma^(k-1) r_t+k-1
        next_obs = the observation after step t + k - 1
        discount = gamma^k, or 0 if the episode terminated at step t + k - 1

    where k = n, or fewer when the episode ended first: a return never crosses an episode
    end, a terminated tail is not bootstrapped, a truncated one is (with gamma^k for its
    real k). The steps of an ended episode still come out one per env step, after it:
    every column emits exactly one transition per vector step, which keeps the columns'
    replay memories in lockstep."""

    def __init__(self, n: int, columns: int, obs_shape: tuple[int, ...], obs_dtype: Any,
                 gamma: float) -> None:
        self.n, self.gamma = n, gamma
        lead = (n, columns)
        self.obs = np.zeros((*lead, *obs_shape), obs_dtype)
        self.next_obs = np.zeros((*lead, *obs_shape), obs_dtype)
        self.actions = np.zeros(lead, np.int64)
        self.rewards = np.zeros(lead, np.float64)
        self.terminated = np.zeros(lead, bool)
        self.ended = np.zeros(lead, bool)
        self.pushed = 0
        self.powers = gamma ** np.arange(n + 1)
        self.columns = np.arange(columns)

    def push(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
             next_obs: np.ndarray, terminated: np.ndarray,
             truncated: np.ndarray) -> tuple[np.ndarray, ...] | None:
        """Add one env step per column; returns the n-step transitions that are complete
        (obs, actions, returns, next_obs, discounts, steps k, truncated at the k-th step),
        or None while fewer than n steps are in."""
        i = self.pushed % self.n
        self.obs[i], self.actions[i], self.rewards[i] = obs, actions, rewards
        self.next_obs[i], self.terminated[i] = next_obs, terminated
        self.ended[i] = terminated | truncated
        self.pushed += 1
        if self.pushed < self.n:
            return None
        oldest = self.pushed % self.n
        returns = np.zeros(len(self.columns))
        live = np.ones(len(self.columns), dtype=bool)
        last = np.full(len(self.columns), oldest)
        steps = np.zeros(len(self.columns), dtype=np.int64)
        for j in range(self.n):
            slot = (oldest + j) % self.n
            returns += np.where(live, self.powers[j] * self.rewards[slot], 0.0)
            last = np.where(live, slot, last)
            steps += live
            live &= ~self.ended[slot]
        terminated = self.terminated[last, self.columns]
        discounts = np.where(terminated, 0.0, self.powers[steps])
        truncated = self.ended[last, self.columns] & ~terminated
        return (self.obs[oldest], self.actions[oldest], returns,
                self.next_obs[last, self.columns], discounts, steps, truncated)

    def state_dict(self) -> dict[str, Any]:
        return {"pushed": self.pushed,
                **{name: getattr(self, name)
                   for name in ("obs", "next_obs", "actions", "rewards", "terminated", "ended")}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pushed = state["pushed"]
        for name in ("obs", "next_obs", "actions", "rewards", "terminated", "ended"):
            getattr(self, name)[:] = as_array(state[name])
