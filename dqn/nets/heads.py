"""Heads: features -> an output per action, what that output means as Q-values, and the
loss that trains it. The interface every head implements is `dqn.interfaces.Head`;
`LinearHead` below has the layers the heads here share.

A head is an option of the `head` config group: one class registered with
`@option("head", name, Schema)` and one conf/head/<name>.yaml. Every schema extends
`HeadConfig`, so every head can be dueling and noisy. Shapes: K agents lead every tensor,
(K, B, ...); a head's forward and q_values are written with negative dimensions, so they
apply to any leading dimensions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from dqn.checks import ConfigError, at_least
from dqn.interfaces import Head, HeadConfig, LossTerms, TDContext, unedited
from dqn.losses import ELEMENTWISE, project
from dqn.nets.noisy import NoisyLinear
from dqn.options import option, option_of


def refuse_rollout(config: Any, learns: str) -> None:
    """ConfigError naming both options when a head that `learns` from a distributional
    target is combined with buffer=rollout, whose Q(lambda) returns are scalars."""
    head, buffer = option_of(config.head).name, option_of(config.buffer).name
    if buffer == "rollout":
        raise ConfigError(
            f"head={head} cannot learn from buffer=rollout: its Q(lambda) returns are "
            f"scalars and head={head} learns {learns}; use head=q, head=dueling or "
            f"head=hl_gauss with buffer=rollout, or buffer=uniform|prioritized with "
            f"head={head}")


def taken_distributions(output: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """The distributions (..., M) of the actions (...) taken, from outputs (..., A, M)."""
    index = actions[..., None, None].expand(*actions.shape, 1, *output.shape[-1:])
    return output.gather(-2, index).squeeze(-2)


class LinearHead(nn.Module, Head):
    """The layers every head here shares: linear outputs, A x M of them, or with
    `dueling` V(s) + A(s, a) - mean_a' A(s, a') of every one of the M outputs (Rainbow's
    way), each layer noisy with `noisy`. A subclass implements q_values and loss (the
    `Head` interface, dqn/interfaces.py) and calls build_layers in its __init__."""

    def __init__(self, cfg: HeadConfig, n_actions: int, event: tuple[int, ...]) -> None:
        super().__init__()
        self.n_actions, self.event = n_actions, event
        self.dueling, self.noisy, self.sigma0 = cfg.dueling, cfg.noisy, cfg.noisy_sigma0

    def build_layers(self, in_features: int) -> None:
        """The linear layers: one to A x M outputs, or dueling's value (M) and advantages."""
        outputs = 1
        for size in self.event:
            outputs *= size
        if self.dueling:
            self.value = self.linear(in_features, outputs)
            self.advantage = self.linear(in_features, self.n_actions * outputs)
        else:
            self.out = self.linear(in_features, self.n_actions * outputs)

    def linear(self, in_features: int, out_features: int) -> nn.Module:
        if self.noisy:
            return NoisyLinear(in_features, out_features, self.sigma0)
        return nn.Linear(in_features, out_features)

    def per_action(self, x: torch.Tensor) -> torch.Tensor:
        """(..., A * M) -> (..., A, M); a head of one value per action keeps (..., A)."""
        return x.unflatten(-1, (self.n_actions, *self.event)) if self.event else x

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if not self.dueling:
            return self.per_action(self.out(features))
        value, advantage = self.value(features), self.per_action(self.advantage(features))
        if self.event:
            value = value.unsqueeze(-2)  # (..., 1, M)
        return value + advantage - advantage.mean(-len(self.event) - 1, keepdim=True)

    def taken(self, output: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        if not self.event:
            return output.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        return taken_distributions(output, actions)

    def stackable(self) -> bool:
        return unedited(self, LinearHead, "forward")


@dataclass
class QConfig(HeadConfig):
    """One expected Q-value per action (head=dueling: this head with dueling=true)."""


@option("head", "q", QConfig)
class QHead(LinearHead):
    """One Q-value per action (Mnih et al. 2015), regressed towards a scalar TD target
    with train.loss (Huber or squared error); the TD error is target - Q(s, a)."""

    def __init__(self, cfg: QConfig, in_features: int, n_actions: int) -> None:
        super().__init__(cfg, n_actions, event=())
        self.build_layers(in_features)

    def q_values(self, output: torch.Tensor) -> torch.Tensor:
        return output

    def target(self, context: TDContext) -> torch.Tensor:
        """The scalar TD target (K, B) Q(s, a) is regressed towards (computed without
        gradients): a rollout's returns, or r + discount * Q_target(s', a*)."""
        return context.scalar_target(self.q_values)

    def loss(self, context: TDContext, regression: str) -> LossTerms:
        with torch.no_grad():
            scalar = self.target(context)
        q_taken = self.taken(context.online, context.actions)
        per_sample = ELEMENTWISE[regression](q_taken, scalar, reduction="none")
        q_taken = q_taken.detach()
        return LossTerms(per_sample, scalar - q_taken, q_taken)

    def as_layers(self) -> list[nn.Module] | None:
        """[the output layer]: without dueling, forward is that layer and q_values the
        identity (for this class's own forward and q_values only)."""
        if self.dueling or not unedited(self, QHead, "forward", "q_values"):
            return None
        return [self.out]


@dataclass
class C51Config(HeadConfig):
    title: ClassVar[str] = "C51"
    atoms: int = 51  # atoms of the return distribution, evenly spaced on [v_min, v_max]

    def check(self) -> None:
        super().check()
        at_least("head.atoms", self.atoms, 2)

    def against(self, config: Any) -> None:
        refuse_rollout(config, "a distribution from the distribution of next returns")


@option("head", "c51", C51Config)
class C51Head(LinearHead):
    """C51 (Bellemare et al. 2017): logits of a distribution over `atoms` returns on
    [v_min, v_max] per action; Q is its mean. Trained by the cross-entropy between the
    projection of r + discount * Z_target(s', a*) onto the support and Z(s, a); the
    cross-entropy is also what prioritized replay ranks samples by (as in Rainbow)."""

    def __init__(self, cfg: C51Config, in_features: int, n_actions: int) -> None:
        super().__init__(cfg, n_actions, event=(cfg.atoms,))
        self.register_buffer("support", torch.linspace(cfg.v_min, cfg.v_max, cfg.atoms),
                             persistent=False)
        self.build_layers(in_features)

    def q_values(self, output: torch.Tensor) -> torch.Tensor:
        return (output.softmax(-1) * self.support.to(output.device)).sum(-1)

    def loss(self, context: TDContext, regression: str) -> LossTerms:
        support = self.support.to(context.online.device)
        log_probs = self.taken(context.online, context.actions).log_softmax(-1)
        with torch.no_grad():
            next_probs = context.next_output.softmax(-1)
            projected = project(next_probs, context.rewards, context.discounts, support)
        per_sample = -(projected * log_probs).sum(-1)
        q_taken = (log_probs.detach().exp() * support).sum(-1)
        return LossTerms(per_sample, per_sample.detach(), q_taken)
