"""Q-networks: map an observation to one Q-value per action."""

from __future__ import annotations

import copy

import torch
from torch import nn

from dqn.config import MLPConfig

_ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
}


def build_q_network(cfg: MLPConfig, obs_dim: int, n_actions: int) -> nn.Sequential:
    """An MLP obs_dim -> hidden_sizes... -> n_actions with the configured activation."""
    layers: list[nn.Module] = []
    width = obs_dim
    for hidden in cfg.hidden_sizes:
        layers += [nn.Linear(width, hidden), _ACTIVATIONS[cfg.activation]()]
        width = hidden
    layers.append(nn.Linear(width, n_actions))
    return nn.Sequential(*layers)


class StackedLinear(nn.Module):
    """K independent linear layers applied as one batched matrix product: input
    (K, N, in_features) -> (K, N, out_features). Parameters are stacked along a leading
    agent dimension in nn.Linear's layout (weight (K, out, in), bias (K, out)), so agent
    k's slice is a plain nn.Linear's state."""

    def __init__(self, layers: list[nn.Linear]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.stack([layer.weight.detach() for layer in layers]))
        self.bias = nn.Parameter(torch.stack([layer.bias.detach() for layer in layers]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))


def stack_networks(networks: list[nn.Sequential]) -> nn.Sequential:
    """One network computing K networks of the same architecture at once, starting from
    their weights: input (K, N, obs_dim) -> (K, N, n_actions). Its state_dict() has the
    keys of each network's, with a leading agent dimension (see `agent_state_dict`)."""
    stacked: list[nn.Module] = []
    for layers in zip(*networks):
        if isinstance(layers[0], nn.Linear):
            stacked.append(StackedLinear(list(layers)))
        else:  # an activation, without parameters
            stacked.append(copy.deepcopy(layers[0]))
    return nn.Sequential(*stacked)


def agent_state_dict(stacked: nn.Module, agent: int) -> dict[str, torch.Tensor]:
    """The state_dict of agent `agent`'s network alone, as `build_q_network` makes it."""
    return {key: value[agent].clone() for key, value in stacked.state_dict().items()}
