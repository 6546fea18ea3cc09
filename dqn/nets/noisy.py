"""NoisyNet linear layers (Fortunato et al. 2018), with factorised Gaussian noise."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional


class NoisyLinear(nn.Module):
    """y = (mu_w + sigma_w * eps_w) x + mu_b + sigma_b * eps_b, with eps_w = eps_out
    eps_in^T, eps_b = eps_out, and eps_in, eps_out drawn as f(standard normal),
    f(x) = sign(x) sqrt(|x|). The noise is held in the buffers `noise_sizes` names and
    changes only when new noise is written into them (dqn.ensemble.Ensemble.reset_noise,
    for every gradient step and every action); in evaluation mode (`.eval()`) the layer
    uses the mean weights alone."""

    def __init__(self, in_features: int, out_features: int, sigma0: float) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = 1 / math.sqrt(in_features)
        self.weight_mu = nn.Parameter(
            torch.empty(out_features, in_features).uniform_(-bound, bound))
        self.weight_sigma = nn.Parameter(torch.full((out_features, in_features), sigma0 * bound))
        self.bias_mu = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))
        self.bias_sigma = nn.Parameter(torch.full((out_features,), sigma0 * bound))
        self.register_buffer("eps_in", torch.zeros(in_features))
        self.register_buffer("eps_out", torch.zeros(out_features))

    def noise_sizes(self) -> dict[str, int]:
        """The noise buffers and their sizes."""
        return {"eps_in": self.in_features, "eps_out": self.out_features}

    @staticmethod
    def shape_noise(normal: torch.Tensor) -> torch.Tensor:
        """f(x) = sign(x) sqrt(|x|) of standard normal draws: the factorised noise."""
        return normal.sign() * normal.abs().sqrt()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return functional.linear(x, self.weight_mu, self.bias_mu)
        weight = self.weight_mu + self.weight_sigma * torch.outer(self.eps_out, self.eps_in)
        bias = self.bias_mu + self.bias_sigma * self.eps_out
        return functional.linear(x, weight, bias)
