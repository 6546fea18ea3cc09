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
        with torch.no_grad():
            next_values = next_target.gather(-1, next_actions.unsqueeze(-1)).squeeze(-1)
            target = td_target(batch.rewards, batch.discounts, next_values)
        return self.towards(output, batch.actions, target)

    def towards(self, output: torch.Tensor, actions: torch.Tensor,
                target: torch.Tensor) -> LossTerms:
        """The loss between Q(s, a) and given targets (K, B), e.g. Q(lambda) returns."""
        q_taken = output.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        per_sample = self.elementwise(q_taken, target, reduction="none")
        q_taken = q_taken.detach()
        return LossTerms(per_sample, target - q_taken, q_taken)


def project(probabilities: torch.Tensor, rewards: torch.Tensor, discounts: torch.Tensor,
            support: torch.Tensor) -> torch.Tensor:
    """The distribution of r + discount * Z, with Z distributed as `probabilities` (...,
    atoms) on `support`, projected onto `support` (Bellemare et al. 2017): each shifted atom
    is clipped to [v_min, v_max] and its mass split between the two atoms around it (all
    of it to one atom it lands on exactly). Total mass is kept."""
    v_min, v_max = float(support[0]), float(support[-1])
    spacing = (v_max - v_min) / (support.numel() - 1)
    shifted = (rewards.unsqueeze(-1) + discounts.unsqueeze(-1) * support).clamp(v_min, v_max)
    position = (shifted - v_min) / spacing
    lower, upper = position.floor(), position.ceil()
    to_lower = probabilities * (upper - position + (lower == upper))
    to_upper = probabilities * (position - lower)
    projected = torch.zeros_like(probabilities)
    projected.scatter_add_(-1, lower.long(), to_lower)
    projected.scatter_add_(-1, upper.long(), to_upper)
    return projected


class CategoricalLoss:
    """C51's loss: the cross-entropy between the projected target distribution of
    r + discount * Z_target(s', a*) and the online distribution of Z(s, a), per sample.
    The cross-entropy is also what prioritized replay ranks samples by."""

    def __init__(self, support: torch.Tensor) -> None:
        self.support = support

    def __call__(self, output: torch.Tensor, batch: Batch, next_target: torch.Tensor,
                 next_actions: torch.Tensor) -> LossTerms:
        support = self.support.to(output.device)
        log_probs = _at(output, batch.actions).log_softmax(-1)
        with torch.no_grad():
            next_probs = _at(next_target, next_actions).softmax(-1)
            target = project(next_probs, batch.rewards, batch.discounts, support)
        per_sample = -(target * log_probs).sum(-1)
        q_taken = (log_probs.detach().exp() * support).sum(-1)
        return LossTerms(per_sample, per_sample.detach(), q_taken)


def _at(distributions: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """(..., n_actions, atoms) at `actions` (...) -> (..., atoms)."""
    index = actions[..., None, None].expand(*actions.shape, 1, distributions.shape[-1])
    return distributions.gather(-2, index).squeeze(-2)


def make_loss(kind: str, head: torch.nn.Module) -> "TDLoss | CategoricalLoss":
    """The loss for a head: C51's for a distributional head, else the TD loss `kind`."""
    if getattr(head, "distributional", False):
        return CategoricalLoss(head.support)
    return TDLoss(kind)
