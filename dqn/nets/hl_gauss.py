"""HL-Gauss's head ("Stop Regressing", Farebrother et al. 2024): Q as the mean of a
histogram over a fixed support, trained by classification towards a Gaussian-smoothed
histogram of the scalar TD target."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from dqn.checks import at_least, positive
from dqn.interfaces import HeadConfig, LossTerms, TDContext
from dqn.nets.heads import LinearHead
from dqn.options import option


@dataclass
class HLGaussConfig(HeadConfig):
    title: ClassVar[str] = "HL-Gauss"
    bins: int = 51  # histogram bins of equal width on [v_min, v_max]
    sigma_ratio: float = 0.75  # the Gaussian's sigma over the bin width (the paper's 0.75)

    def check(self) -> None:
        super().check()
        at_least("head.bins", self.bins, 2)
        positive("head.sigma_ratio", self.sigma_ratio)


def gaussian_histogram(values: torch.Tensor, edges: torch.Tensor,
                       sigma: float) -> torch.Tensor:
    """The probabilities (..., bins) that N(value, sigma^2), truncated to [edges[0],
    edges[-1]], gives each bin: differences of its CDF at the bin edges, normalised."""
    cdf = torch.special.ndtr((edges - values.unsqueeze(-1)) / sigma)
    mass = cdf[..., 1:] - cdf[..., :-1]
    return mass / (cdf[..., -1:] - cdf[..., :1])


@option("head", "hl_gauss", HLGaussConfig)
class HLGaussHead(LinearHead):
    """Logits of a histogram over `bins` bins of [v_min, v_max] per action; Q is the
    histogram's mean (bin centres weighted by softmax probabilities). The loss is the
    cross-entropy towards the histogram of N(y, sigma^2), y the scalar TD target (replay's
    r + discount * Q_target(s', a*), or a rollout's Q(lambda) return) clipped to the
    support and sigma = sigma_ratio x bin width; train.loss does not apply. TD errors
    (prioritized replay) are y - Q(s, a)."""

    def __init__(self, cfg: HLGaussConfig, in_features: int, n_actions: int) -> None:
        super().__init__(cfg, n_actions, event=(cfg.bins,))
        edges = torch.linspace(cfg.v_min, cfg.v_max, cfg.bins + 1)
        self.register_buffer("edges", edges, persistent=False)
        self.register_buffer("centres", (edges[1:] + edges[:-1]) / 2, persistent=False)
        self.sigma = cfg.sigma_ratio * (cfg.v_max - cfg.v_min) / cfg.bins
        self.build_layers(in_features)

    def q_values(self, output: torch.Tensor) -> torch.Tensor:
        return (output.softmax(-1) * self.centres.to(output.device)).sum(-1)

    def loss(self, context: TDContext, regression: str) -> LossTerms:
        output = context.online
        edges = self.edges.to(output.device)
        log_probs = self.taken(output, context.actions).log_softmax(-1)
        with torch.no_grad():
            y = context.scalar_target(self.q_values).clamp(float(edges[0]), float(edges[-1]))
            histogram = gaussian_histogram(y, edges, self.sigma)
        per_sample = -(histogram * log_probs).sum(-1)
        q_taken = (log_probs.detach().exp() * self.centres.to(output.device)).sum(-1)
        return LossTerms(per_sample, y - q_taken, q_taken)
