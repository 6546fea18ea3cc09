"""What the heads' losses share: the elementwise regression losses of train.loss, the
scalar TD target, and C51's projection of a shifted distribution onto a fixed support.
Each head (dqn/nets/heads.py) composes its own loss from these."""

from __future__ import annotations

from typing import Callable

import torch
from torch.nn import functional

ELEMENTWISE: dict[str, Callable[..., torch.Tensor]] = {
    "huber": functional.smooth_l1_loss, "mse": functional.mse_loss}


def td_target(rewards: torch.Tensor, discounts: torch.Tensor,
              next_values: torch.Tensor) -> torch.Tensor:
    """r + discount * V(s'): the discount is gamma^k for a k-step transition and 0 where
    the episode terminated (a truncated one keeps it and is bootstrapped)."""
    return torch.addcmul(rewards, discounts, next_values)


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
