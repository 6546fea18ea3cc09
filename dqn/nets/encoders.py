"""Encoders: observations -> a feature vector per observation."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List

import numpy as np
import torch
from torch import nn

from dqn.nets.qnet import NetworkConfig
from dqn.options import choice, fail, option, positive

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
}


@dataclass
class MLPConfig(NetworkConfig):
    hidden_sizes: List[int] = field(default_factory=lambda: [256])
    activation: str = "relu"

    def check(self) -> None:
        super().check()
        if not self.hidden_sizes:
            fail("network.hidden_sizes", self.hidden_sizes, "must list at least one size")
        for size in self.hidden_sizes:
            positive("network.hidden_sizes", size)
        choice("network.activation", self.activation, tuple(ACTIVATIONS))


@option("network", "mlp", MLPConfig)
class MLPEncoder(nn.Module):
    """A multi-layer perceptron over the flattened observation: Linear and activation
    layers of `hidden_sizes` units. Observations of another dtype are cast to float32."""

    def __init__(self, cfg: MLPConfig, obs_shape: tuple[int, ...], obs_dtype: np.dtype) -> None:
        super().__init__()
        self.obs_dims = len(obs_shape)
        self.cast = not np.issubdtype(obs_dtype, np.floating)
        layers: list[nn.Module] = []
        width = math.prod(obs_shape)
        for hidden in cfg.hidden_sizes:
            layers += [nn.Linear(width, hidden), ACTIVATIONS[cfg.activation]()]
            width = hidden
        self.layers = nn.Sequential(*layers)
        self.out_features = width

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.obs_dims != 1:
            obs = obs.flatten(start_dim=obs.dim() - self.obs_dims)
        if self.cast:
            obs = obs.float()
        return self.layers(obs)
