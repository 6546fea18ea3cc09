"""Encoders: observations -> a feature vector per observation."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List

import numpy as np
import torch
from torch import nn

from dqn.checks import ConfigError, choice, fail, positive
from dqn.interfaces import Encoder, NetworkConfig, unedited
from dqn.options import option

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
    hidden_sizes: List[int] = field(default_factory=lambda: [256])  # hidden layer widths
    activation: str = "relu"  # relu, tanh, elu, gelu, silu, leaky_relu

    def check(self) -> None:
        super().check()
        if not self.hidden_sizes:
            fail("network.hidden_sizes", self.hidden_sizes, "must list at least one size")
        for size in self.hidden_sizes:
            positive("network.hidden_sizes", size)
        choice("network.activation", self.activation, tuple(ACTIVATIONS))


@option("network", "mlp", MLPConfig)
class MLPEncoder(nn.Module, Encoder):
    """A multi-layer perceptron over the flattened observation: Linear and activation
    layers of `hidden_sizes` units (with norm=layer, a LayerNorm between each Linear and
    its activation). Observations of another dtype are cast to float32."""

    def __init__(self, cfg: MLPConfig, obs_shape: tuple[int, ...], obs_dtype: np.dtype) -> None:
        super().__init__()
        self.obs_dims = len(obs_shape)
        self.cast = not np.issubdtype(obs_dtype, np.floating)
        layers: list[nn.Module] = []
        width = math.prod(obs_shape)
        for hidden in cfg.hidden_sizes:
            layers += [nn.Linear(width, hidden), *normalised(cfg.norm, (hidden,)),
                       ACTIVATIONS[cfg.activation]()]
            width = hidden
        self.layers = nn.Sequential(*layers)
        self.out_features = width

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.obs_dims != 1:
            obs = obs.flatten(start_dim=obs.dim() - self.obs_dims)
        if self.cast:
            obs = obs.float()
        return self.layers(obs)

    # --- fast forms (dqn.fastpath asks for them; each only for this class's forward) -----
    def stackable(self) -> bool:
        """True: forward works on inputs with a leading agent dimension once its layers'
        nn.Linear are K-stacked (the flattening counts dimensions from the end)."""
        return unedited(self, MLPEncoder, "forward")

    def as_layers(self) -> list[nn.Module] | None:
        """Its layers, for flat float observations (forward is then just those)."""
        if self.obs_dims != 1 or self.cast or not unedited(self, MLPEncoder, "forward"):
            return None
        return list(self.layers)


def normalised(norm: str, shape: tuple[int, ...]) -> list[nn.Module]:
    """The normalisation layer that network.norm asks for after a layer whose output per
    sample has `shape`: [LayerNorm(shape)] for `layer` (over all of it, as CleanRL's PQN
    networks), [] for `none`."""
    return [nn.LayerNorm(shape)] if norm == "layer" else []


class ConvEncoder(nn.Module, Encoder):
    """Convolutions (each followed by a ReLU) over image observations (C, H, W), then one
    fully connected layer with a ReLU; with norm=layer a LayerNorm before every ReLU (over
    (C, H, W) after a convolution). Leading batch dimensions pass through (they are merged
    for the convolutions); uint8 pixels are scaled to [0, 1] on the device, other dtypes
    cast to float32."""

    def __init__(self, obs_shape: tuple[int, ...], obs_dtype: np.dtype,
                 convolutions: list[nn.Conv2d], features: int, norm: str, name: str) -> None:
        super().__init__()
        if len(obs_shape) != 3:
            raise ConfigError(f"network={name} needs image observations (channels, height, "
                              f"width); this env's are of shape {obs_shape}: use network=mlp")
        self.obs_shape = obs_shape
        self.scale = 1 / 255 if np.dtype(obs_dtype) == np.uint8 else None
        layers: list[nn.Module] = []
        x = torch.zeros(1, *obs_shape)
        with torch.no_grad():
            for convolution in convolutions:
                x = convolution(x)
                layers += [convolution, *normalised(norm, tuple(x.shape[1:])), nn.ReLU()]
        self.convolutions = nn.Sequential(*layers, nn.Flatten())
        self.fc = nn.Sequential(nn.Linear(x[0].numel(), features),
                                *normalised(norm, (features,)), nn.ReLU())
        self.out_features = features

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        lead = obs.shape[:-3]
        x = obs.reshape(-1, *self.obs_shape).float()
        if self.scale is not None:
            x = x * self.scale
        return self.fc(self.convolutions(x)).reshape(*lead, self.out_features)


@dataclass
class NatureCNNConfig(NetworkConfig):
    features: int = 512  # units of the fully connected layer

    def check(self) -> None:
        super().check()
        positive("network.features", self.features)


@option("network", "nature_cnn", NatureCNNConfig)
class NatureCNN(ConvEncoder):
    """The DQN network of Mnih et al. 2015: 32 8x8 filters stride 4, 64 4x4 stride 2,
    64 3x3 stride 1, ReLUs, then 512 units."""

    def __init__(self, cfg: NatureCNNConfig, obs_shape: tuple[int, ...],
                 obs_dtype: np.dtype) -> None:
        channels = obs_shape[0] if obs_shape else 0
        super().__init__(obs_shape, obs_dtype, [
            nn.Conv2d(channels, 32, 8, stride=4), nn.Conv2d(32, 64, 4, stride=2),
            nn.Conv2d(64, 64, 3, stride=1)], cfg.features, cfg.norm, "nature_cnn")


@dataclass
class MinAtarCNNConfig(NetworkConfig):
    channels: int = 16  # 3x3 filters
    features: int = 128  # units of the fully connected layer

    def check(self) -> None:
        super().check()
        positive("network.channels", self.channels)
        positive("network.features", self.features)


@option("network", "minatar_cnn", MinAtarCNNConfig)
class MinAtarCNN(ConvEncoder):
    """The MinAtar paper's network (Young and Tian 2019): 16 3x3 filters stride 1, ReLU,
    then 128 units."""

    def __init__(self, cfg: MinAtarCNNConfig, obs_shape: tuple[int, ...],
                 obs_dtype: np.dtype) -> None:
        channels = obs_shape[0] if obs_shape else 0
        super().__init__(obs_shape, obs_dtype, [nn.Conv2d(channels, cfg.channels, 3, stride=1)],
                         cfg.features, cfg.norm, "minatar_cnn")
