"""What the heads' losses share: the elementwise regression losses of train.loss, C51's
projection of a shifted distribution onto a fixed support, and the quantile Huber loss of
QR-DQN and IQN. Each head (dqn/nets/heads.py) composes its own loss from these."""

from __future__ import annotations

from typing import Callable

import torch
from torch.nn import functional

ELEMENTWISE: dict[str, Callable[..., torch.Tensor]] = {
    "huber": functional.smooth_l1_loss, "mse": functional.mse_loss}


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


def quantile_huber(quantiles: torch.Tensor, targets: torch.Tensor,
                   fractions: torch.Tensor) -> torch.Tensor:
    """The quantile Huber loss (kappa = 1) of quantiles (..., N) at `fractions` tau_i
    ((N,), or (..., N) per sample) towards target samples (..., N'): for every pair,
    |tau_i - 1{u < 0}| * Huber(u), u = target_j - quantile_i; summed over i, averaged over
    j (Dabney et al. 2018a, 2018b). Returns (...)."""
    errors = targets.unsqueeze(-2) - quantiles.unsqueeze(-1)  # (..., N, N'): [i, j]
    huber = torch.where(errors.abs() <= 1, 0.5 * errors.pow(2), errors.abs() - 0.5)
    weights = (fractions.unsqueeze(-1) - (errors.detach() < 0).float()).abs()
    return (weights * huber).sum(-2).mean(-1)
