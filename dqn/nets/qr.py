"""QR-DQN's head (Dabney et al. 2018): the return distribution of each action as N
quantiles at fixed fractions, trained by quantile regression."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from dqn.checks import at_least
from dqn.interfaces import HeadConfig, LossTerms, TDContext
from dqn.losses import quantile_huber
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

    def loss(self, context: TDContext, regression: str) -> LossTerms:
        quantiles = self.taken(context.online, context.actions)
        with torch.no_grad():
            targets = (context.rewards.unsqueeze(-1)
                       + context.discounts.unsqueeze(-1) * context.next_output)
        n = quantiles.shape[-1]
        midpoints = (2 * torch.arange(n, device=quantiles.device) + 1) / (2 * n)
        per_sample = quantile_huber(quantiles, targets, midpoints)
        return LossTerms(per_sample, per_sample.detach(), quantiles.detach().mean(-1))
