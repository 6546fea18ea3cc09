"""NoisyNet linear layers (Fortunato et al. 2018), with factorised Gaussian noise."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional


class NoisyLinear(nn.Module):
    """y = (mu_w + sigma_w * eps_w) x + mu_b + sigma_b * eps_b, with eps_w = f(eps_out)
    f(eps_in)^T, eps_b = f(eps_out), f(x) = sign(x) sqrt(|x|) and eps_in, eps_out standard
    normal. The noise is held in buffers and changes only when `sample_noise` is written
    into them (the agent does so for every gradient step and every action); in evaluation
    mode (`.eval()`) the layer uses the mean weights alone."""

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

    def sample_noise(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """New values for the noise buffers, by buffer name, drawn from `generator`."""
        def scaled(size: int) -> torch.Tensor:
            x = torch.randn(size, generator=generator)
            return x.sign() * x.abs().sqrt()
        return {"eps_in": scaled(self.in_features), "eps_out": scaled(self.out_features)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return functional.linear(x, self.weight_mu, self.bias_mu)
        weight = self.weight_mu + self.weight_sigma * torch.outer(self.eps_out, self.eps_in)
        bias = self.bias_mu + self.bias_sigma * self.eps_out
        return functional.linear(x, weight, bias)
