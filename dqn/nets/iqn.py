"""IQN's head (Dabney et al. 2018b, "Implicit Quantile Networks"): the quantile function
of each action's return, read at fractions sampled afresh for every pass."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from dqn.checks import at_least
from dqn.interfaces import HeadConfig, LossTerms, TDContext
from dqn.losses import quantile_huber
from dqn.nets.heads import LinearHead, refuse_rollout, taken_distributions
from dqn.options import option


@dataclass
class IQNConfig(HeadConfig):
    title: ClassVar[str] = "IQN"
    embedding: int = 64  # cosines cos(pi i tau), i = 0 .. embedding - 1, of each fraction
    fractions: int = 64  # N: fractions drawn for the online pass at s (the paper's 64)
    target_fractions: int = 64  # N': for the target network's pass at s' (the paper's 64)
    acting_fractions: int = 32  # K: for acting and for choosing a* (the paper's 32)

    def check(self) -> None:
        super().check()
        for key in ("embedding", "fractions", "target_fractions", "acting_fractions"):
            at_least(f"head.{key}", getattr(self, key), 1)

    def against(self, config: Any) -> None:
        refuse_rollout(config, "quantiles from the quantiles of next returns")


@option("head", "iqn", IQNConfig)
class IQNHead(LinearHead):
    """Z(s, a; tau) = f(psi(s) * phi(tau))_a for fractions tau ~ U(0, 1): psi(s) the
    encoder's features, phi(tau) = ReLU(W cos(pi i tau) + b) over i = 0 .. embedding - 1,
    f the output layer (dueling and noisy as every head's). Each pass draws its own
    fractions per observation (`sample`): K for acting and for choosing a*, N for the
    online pass, N' for the target's. Q is the mean over the pass's fractions. Trained by
    the quantile Huber loss (kappa = 1) of the N online quantiles, at their own fractions,
    towards the N' samples r + discount * Z_target(s', a*; tau'_j); prioritized replay
    ranks samples by that loss. The output of a pass is (..., A, M), M its fractions."""

    def __init__(self, cfg: IQNConfig, in_features: int, n_actions: int) -> None:
        super().__init__(cfg, n_actions, event=())
        self.count = {"act": cfg.acting_fractions, "online": cfg.fractions,
                      "target": cfg.target_fractions}
        self.register_buffer("frequencies", math.pi * torch.arange(cfg.embedding,
                                                                   dtype=torch.float32),
                             persistent=False)
        self.embed = nn.Linear(cfg.embedding, in_features)
        self.build_layers(in_features)

    def sample(self, role: str, batch: int, generator: torch.Generator) -> torch.Tensor:
        """Fractions (batch, M) ~ U(0, 1), M as the role says (K, N or N')."""
        return torch.rand(batch, self.count[role], generator=generator)

    def forward(self, features: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        """Quantiles (..., A, M) of features (..., F) at fractions `draws` (..., M)."""
        cosines = torch.cos(draws.unsqueeze(-1) * self.frequencies.to(draws.device))
        embedded = torch.relu(self.embed(cosines))  # (..., M, F)
        per_fraction = super().forward(features.unsqueeze(-2) * embedded)  # (..., M, A)
        return per_fraction.transpose(-1, -2)

    def q_values(self, output: torch.Tensor) -> torch.Tensor:
        return output.mean(-1)

    def taken(self, output: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return taken_distributions(output, actions)  # its layers are built per fraction

    def loss(self, context: TDContext, regression: str) -> LossTerms:
        quantiles = self.taken(context.online, context.actions)  # (K, B, N)
        with torch.no_grad():
            targets = (context.rewards.unsqueeze(-1)
                       + context.discounts.unsqueeze(-1) * context.next_output)  # (K, B, N')
        per_sample = quantile_huber(quantiles, targets, context.draws["online"])
        return LossTerms(per_sample, per_sample.detach(), quantiles.detach().mean(-1))
