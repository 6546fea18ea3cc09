"""Heads: features -> what the loss and the greedy policy read. A head is registered with
`@option("head", name)` and chosen by `network.head`; it is built from the network's
settings, the encoder's feature size and the number of actions, and its `q_values` turns
its output into Q-values without parameters (so it applies to any leading dimensions)."""

from __future__ import annotations

import torch
from torch import nn

from dqn.nets.qnet import NetworkConfig
from dqn.options import option


@option("head", "q")
class QHead(nn.Module):
    """One linear layer: features -> one Q-value per action (the DQN of Mnih et al.)."""

    def __init__(self, cfg: NetworkConfig, in_features: int, n_actions: int) -> None:
        super().__init__()
        self.out = nn.Linear(in_features, n_actions)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.out(features)

    def q_values(self, output: torch.Tensor) -> torch.Tensor:
        return output
