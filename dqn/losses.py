"""TD losses: per-sample losses and TD errors for a batch of K agents' transitions.

A loss takes the online network's output on s, the target network's output on s', the
bootstrap actions a* (chosen by the agent: the target's or, for Double DQN, the online
network's greedy actions) and the batch with its per-sample discounts, and returns
per-sample values; the agent weights and averages them.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch.nn import functional

from dqn.replay import Batch


class LossTerms(NamedTuple):
    per_sample: torch.Tensor  # (K, B) the loss of each sample
    td_errors: torch.Tensor  # (K, B) what prioritized replay ranks samples by (detached)
    q_taken: torch.Tensor  # (K, B) Q(s, a) of the actions taken (detached)


ELEMENTWISE: dict[str, Callable[..., torch.Tensor]] = {
    "huber": functional.smooth_l1_loss, "mse": functional.mse_loss}


def td_target(rewards: torch.Tensor, discounts: torch.Tensor,
              next_values: torch.Tensor) -> torch.Tensor:
    """r + discount * V(s'): the discount is gamma^k for a k-step transition and 0 where
    the episode terminated (a truncated one keeps it and is bootstrapped)."""
    return torch.addcmul(rewards, discounts, next_values)


class TDLoss:
    """The Q-learning loss between Q(s, a) and r + discount * Q_target(s', a*), Huber or
    squared error, for heads whose output is one Q-value per action."""

    def __init__(self, kind: str) -> None:
        self.elementwise = ELEMENTWISE[kind]

    def __call__(self, output: torch.Tensor, batch: Batch, next_target: torch.Tensor,
                 next_actions: torch.Tensor) -> LossTerms:
        q_taken = output.gather(-1, batch.actions.unsqueeze(-1)).squeeze(-1)
        with torch.no_grad():
            next_values = next_target.gather(-1, next_actions.unsqueeze(-1)).squeeze(-1)
            target = td_target(batch.rewards, batch.discounts, next_values)
        per_sample = self.elementwise(q_taken, target, reduction="none")
        q_taken = q_taken.detach()
        return LossTerms(per_sample, target - q_taken, q_taken)
