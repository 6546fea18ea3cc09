"""A Q-network is an encoder and a head; `greedy_actions` is the one place where Q-values
become actions (training, evaluation, video and `python -m dqn.evaluate` all call it)."""

from __future__ import annotations

from typing import Any, TypeVar

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from dqn.interfaces import NetworkConfig, unedited
from dqn.options import build

ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, torch.Tensor)


class QNetwork(nn.Module):
    """encoder: observations (N, *obs_shape) -> features (N, F); head: features -> the
    head's output, (N, n_actions) Q-values for an expected-value head. Both are written
    with negative dimensions, so any leading batch dimensions pass through."""

    def __init__(self, encoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, obs: torch.Tensor, draws: torch.Tensor | None = None) -> torch.Tensor:
        """The head's output on the encoder's features of `obs`; `draws` reach a head that
        samples (dqn.interfaces.Head.sample) and only such a head."""
        features = self.encoder(obs)
        return self.head(features) if draws is None else self.head(features, draws)

    def q_values(self, output: torch.Tensor) -> torch.Tensor:
        """The Q-values (..., n_actions) of an output of forward() (parameter-free)."""
        return self.head.q_values(output)

    # --- fast forms (dqn.fastpath asks for them; each only for this class's forward) -----
    def stackable(self) -> bool:
        """True: with every nn.Linear inside replaced by K stacked ones, forward computes
        K networks at once on inputs (K, N, ...) (if the encoder and head are stackable)."""
        return unedited(self, QNetwork, "forward")

    def as_layers(self) -> list[nn.Module] | None:
        """Layers that compose to forward followed by q_values (encoder's, then head's),
        or None when the encoder or head offers none."""
        if not unedited(self, QNetwork, "forward", "q_values"):
            return None
        encoder, head = (_offered(part, "as_layers") for part in (self.encoder, self.head))
        return None if encoder is None or head is None else [*encoder, *head]


def _offered(module: nn.Module, form: str) -> Any:
    """The fast form `form` a module offers (a method it has), or None."""
    method = getattr(type(module), form, None)
    return None if method is None else method(module)


def build_q_network(cfg: NetworkConfig, observation_space: gym.spaces.Box, n_actions: int,
                    head: Any = None) -> QNetwork:
    """The encoder that the network option `cfg` names, with the head option `head` (a
    head schema; None: head=q with its defaults) on top."""
    from dqn.nets.heads import QConfig

    encoder = build(cfg, tuple(observation_space.shape), observation_space.dtype)
    return QNetwork(encoder, build(head or QConfig(), encoder.out_features, n_actions))


def parameter_count(cfg: NetworkConfig, observation_space: gym.spaces.Box,
                    n_actions: int, head: Any = None) -> int:
    """The parameters of the network `build_q_network` makes, counted on torch's meta
    device: shapes only, so a network of any size costs no memory to count."""
    with torch.device("meta"):
        network = build_q_network(cfg, observation_space, n_actions, head)
    return sum(p.numel() for p in network.parameters())


def greedy_actions(q_values: ArrayOrTensor) -> ArrayOrTensor:
    """argmax_a Q(s, a) over the last dimension: the greedy action of each observation,
    for Q-values in a torch tensor or (acting on the CPU) a NumPy array."""
    return q_values.argmax(-1)
