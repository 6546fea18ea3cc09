"""QR-DQN's head (Dabney et al. 2018): the return distribution of each action as N
quantiles at fixed fractions, trained by quantile regression."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from dqn.checks import at_least
from dqn.interfaces import Bootstrap, HeadConfig, LossTerms, Target
from dqn.nets.heads import LinearHead, refuse_rollout
from dqn.options import option


@dataclass
class QRConfig(HeadConfig):
    title: ClassVar[str] = "QR-DQN"
    quantiles: int = 50  # N quantiles per action, at fractions (2i + 1) / 2N (Atari: 200)

    def check(self) -> None:
        super().check()
        at_least("head.quantiles", self.quantiles, 1)

    def against(self, config: Any) -> None:
        refuse_rollout(config, "quantiles from the quantiles of next returns")


def quantile_huber(quantiles: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The quantile Huber loss (kappa = 1) of quantiles (..., N) at the midpoint fractions
    tau_i = (2i + 1) / 2N towards target samples (..., N'): for every pair,
    |tau_i - 1{u < 0}| * Huber(u), u = target_j - quantile_i; summed over i, averaged over
    j. Returns (...)."""
    n = quantiles.shape[-1]
    fractions = (2 * torch.arange(n, device=quantiles.device) + 1) / (2 * n)
    errors = targets.unsqueeze(-2) - quantiles.unsqueeze(-1)  # (..., N, N'): [i, j]
    huber = torch.where(errors.abs() <= 1, 0.5 * errors.pow(2), errors.abs() - 0.5)
    weights = (fractions.unsqueeze(-1) - (errors.detach() < 0).float()).abs()
    return (weights * huber).sum(-2).mean(-1)


@option("head", "qr", QRConfig)
class QRHead(LinearHead):
    """N quantiles of the return per action; Q is their mean. Trained by the quantile Huber
    loss towards the N samples r + discount * theta_j(s', a*) of the target network's
    quantiles (train.loss does not apply); prioritized replay ranks samples by that loss,
    as Rainbow does with C51's cross-entropy."""

    def __init__(self, cfg: QRConfig, in_features: int, n_actions: int) -> None:
        super().__init__(cfg, n_actions, event=(cfg.quantiles,))
        self.build_layers(in_features)

    def q_values(self, output: torch.Tensor) -> torch.Tensor:
        return output.mean(-1)

    def loss(self, output: torch.Tensor, actions: torch.Tensor, target: Target,
             regression: str) -> LossTerms:
        if not isinstance(target, Bootstrap):
            raise TypeError("head=qr learns from a Bootstrap, not from returns")
        quantiles = self.taken(output, actions)
        with torch.no_grad():
            targets = (target.rewards.unsqueeze(-1)
                       + target.discounts.unsqueeze(-1) * target.next_output)
        per_sample = quantile_huber(quantiles, targets)
        return LossTerms(per_sample, per_sample.detach(), quantiles.detach().mean(-1))
