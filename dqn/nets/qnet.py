"""A Q-network is an encoder and a head; `greedy_actions` is the one place where Q-values
become actions (training, evaluation, video and `python -m dqn.evaluate` all call it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from dqn.options import at_least, build, choice, fail, lookup, options, positive

ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, torch.Tensor)
NORMS = ("none", "layer")


@dataclass
class NetworkConfig:
    """Settings every network option has: the head on top of its encoder."""

    head: str = "q"  # a registered head: q, dueling
    noisy: bool = False  # NoisyNet linear layers in the head (factorised Gaussian noise)
    noisy_sigma0: float = 0.5  # initial noise scale: sigma = sigma0 / sqrt(fan-in)
    atoms: int = 1  # 1: expected Q-values; more: C51's distribution over `atoms` returns
    v_min: float = -10.0  # the distribution's support, [v_min, v_max]
    v_max: float = 10.0  # the support's upper end (used when atoms > 1)
    norm: str = "none"  # none | layer: LayerNorm after every hidden layer (PQN's networks)

    def check(self) -> None:
        choice("network.head", self.head, sorted(options("head")))
        choice("network.norm", self.norm, NORMS)
        positive("network.noisy_sigma0", self.noisy_sigma0)
        at_least("network.atoms", self.atoms, 1)
        if self.atoms > 1 and not self.v_max > self.v_min:
            fail("network.v_max", self.v_max, f"must be > network.v_min ({self.v_min})")


class QNetwork(nn.Module):
    """encoder: observations (N, *obs_shape) -> features (N, F); head: features -> the
    head's output, (N, n_actions) Q-values for an expected-value head. Both are written
    with negative dimensions, so any leading batch dimensions pass through."""

    def __init__(self, encoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(obs))

    def q_values(self, output: torch.Tensor) -> torch.Tensor:
        """The Q-values (..., n_actions) of an output of forward() (parameter-free)."""
        return self.head.q_values(output)


def build_q_network(cfg: NetworkConfig, observation_space: gym.spaces.Box,
                    n_actions: int) -> QNetwork:
    """The encoder that the network option `cfg` names, with the head `cfg.head` on top."""
    encoder = build(cfg, tuple(observation_space.shape), observation_space.dtype)
    head = lookup("head", cfg.head).cls(cfg, encoder.out_features, n_actions)
    return QNetwork(encoder, head)


def parameter_count(cfg: NetworkConfig, observation_space: gym.spaces.Box,
                    n_actions: int) -> int:
    """The parameters of the network `build_q_network` makes, counted on torch's meta
    device: shapes only, so a network of any size costs no memory to count."""
    with torch.device("meta"):
        network = build_q_network(cfg, observation_space, n_actions)
    return sum(p.numel() for p in network.parameters())


def greedy_actions(q_values: ArrayOrTensor) -> ArrayOrTensor:
    """argmax_a Q(s, a) over the last dimension: the greedy action of each observation,
    for Q-values in a torch tensor or (acting on the CPU) a NumPy array."""
    return q_values.argmax(-1)
