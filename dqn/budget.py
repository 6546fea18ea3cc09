"""Budgets and periods, counted in env steps summed over an agent's envs (as SB3 and
CleanRL count `global_step`): an agent with N envs advances N env steps per vector step.

A period that N does not divide is due at the first vector step that reaches it; every
periodic test of the loop (updates, evaluations, logs, checkpoints) goes through
`periods_crossed`.
"""

from __future__ import annotations


def periods_crossed(before: int, after: int, period: int | None) -> int:
    """How many multiples of `period` lie in (before, after]: the times a period fell due
    during a vector step from `before` to `after` (0 when `period` is None or 0)."""
    if not period:
        return 0
    return after // period - before // period


def budget_spent(train, step: int, episodes: int) -> bool:
    """Whether the env-step or the episode budget of `train` (cfg.train) has run out."""
    return ((train.total_steps is not None and step >= train.total_steps)
            or (train.total_episodes is not None and episodes >= train.total_episodes))


def budget_progress(train, step: int, fewest_episodes: int) -> float:
    """The fraction of the training budget spent: the larger of the env-step budget's and
    the episode budget's (the latter by the agent with the fewest episodes)."""
    fractions = [0.0]
    if train.total_steps is not None:
        fractions.append(step / train.total_steps)
    if train.total_episodes is not None:
        fractions.append(fewest_episodes / train.total_episodes)
    return min(1.0, max(fractions))
