"""Heads: features -> what the loss and the greedy policy read.

A head is registered with `@option("head", name)` and chosen by `network.head`; it is
built from the network's settings, the encoder's feature size and the number of actions.
Every head honours the network's `noisy` (NoisyNet linear layers) and `atoms` (1: one
expected Q-value per action; more: C51's distribution over `atoms` returns on
[v_min, v_max]). Its `q_values` turns its output into Q-values without parameters, and
every forward is written with negative dimensions, so both apply to any leading
dimensions (K agents at once).
"""

from __future__ import annotations

import torch
from torch import nn

from dqn.nets.noisy import NoisyLinear
from dqn.nets.qnet import NetworkConfig
from dqn.options import option


class Head(nn.Module):
    """What every head shares: its linear layers (plain or noisy) and, with atoms > 1,
    the support of the return distribution."""

    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__()
        self.atoms, self.noisy, self.sigma0 = cfg.atoms, cfg.noisy, cfg.noisy_sigma0
        self.distributional = cfg.atoms > 1
        support = torch.linspace(cfg.v_min, cfg.v_max, cfg.atoms) if self.distributional \
            else torch.zeros(0)
        self.register_buffer("support", support, persistent=False)

    def linear(self, in_features: int, out_features: int) -> nn.Module:
        if self.noisy:
            return NoisyLinear(in_features, out_features, self.sigma0)
        return nn.Linear(in_features, out_features)

    def per_action(self, x: torch.Tensor, n_actions: int) -> torch.Tensor:
        """(..., n_actions * atoms) -> (..., n_actions), or (..., n_actions, atoms)."""
        return x.unflatten(-1, (n_actions, self.atoms)) if self.distributional else x

    def q_values(self, output: torch.Tensor) -> torch.Tensor:
        """Q-values (..., n_actions): the output itself, or the expected return of each
        action's distribution."""
        if not self.distributional:
            return output
        return (output.softmax(-1) * self.support.to(output.device)).sum(-1)


@option("head", "q")
class QHead(Head):
    """One linear layer: features -> one value (or distribution) per action (Mnih et al.)."""

    def __init__(self, cfg: NetworkConfig, in_features: int, n_actions: int) -> None:
        super().__init__(cfg)
        self.n_actions = n_actions
        self.out = self.linear(in_features, n_actions * self.atoms)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.per_action(self.out(features), self.n_actions)


@option("head", "dueling")
class DuelingHead(Head):
    """Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a') (Wang et al. 2016): a state value and
    action advantages, identifiable because the mean advantage is subtracted. With atoms,
    per atom of the logits (as in Rainbow)."""

    def __init__(self, cfg: NetworkConfig, in_features: int, n_actions: int) -> None:
        super().__init__(cfg)
        self.n_actions = n_actions
        self.value = self.linear(in_features, self.atoms)
        self.advantage = self.linear(in_features, n_actions * self.atoms)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        value = self.value(features)
        advantage = self.advantage(features)
        if self.distributional:
            value = value.unsqueeze(-2)  # (..., 1, atoms)
            advantage = advantage.unflatten(-1, (self.n_actions, self.atoms))
            return value + advantage - advantage.mean(-2, keepdim=True)
        return value + advantage - advantage.mean(-1, keepdim=True)
