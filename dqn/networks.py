"""Q-networks: map an observation to one Q-value per action."""

from __future__ import annotations

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
