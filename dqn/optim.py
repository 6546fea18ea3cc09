"""Optimizers (the `optimizer` group): each option is a function (cfg, params) ->
torch.optim.Optimizer (see `dqn.interfaces.OptimizerConfig`); and the learning-rate decay
and gradient clipping the agent applies around them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch

from dqn import fastpath
from dqn.checks import at_least, within
from dqn.interfaces import OptimizerConfig
from dqn.options import option


@dataclass
class AdamConfig(OptimizerConfig):
    amsgrad: bool = False  # AMSGrad: divide by the largest second-moment estimate so far


@dataclass
class AdamWConfig(AdamConfig):
    weight_decay: float = 0.01  # decoupled: weights shrink by lr x weight_decay each step


@option("optimizer", "adam", AdamConfig)
def adam(cfg: AdamConfig, params: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
    """torch.optim.Adam. The fused kernel computes the same update in one kernel, several
    times faster for small networks; torch has it for CPU and CUDA tensors."""
    return fastpath.optimizer(torch.optim.Adam, params, lr=cfg.lr, eps=cfg.eps,
                              weight_decay=cfg.weight_decay, amsgrad=cfg.amsgrad, fused=True)


@option("optimizer", "adamw", AdamWConfig)
def adamw(cfg: AdamWConfig, params: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
    """torch.optim.AdamW: Adam with decoupled weight decay (fused kernel)."""
    return fastpath.optimizer(torch.optim.AdamW, params, lr=cfg.lr, eps=cfg.eps,
                              weight_decay=cfg.weight_decay, amsgrad=cfg.amsgrad, fused=True)


@dataclass
class RMSpropConfig(OptimizerConfig):
    lr: float = 2.5e-4  # learning rate
    eps: float = 0.01  # added to the root of the (centered) mean square
    alpha: float = 0.95  # smoothing of the squared gradients ("squared gradient momentum")
    momentum: float = 0.0  # momentum of the update (0: none)
    centered: bool = True  # divide by the gradients' standard deviation, not their RMS

    def check(self) -> None:
        super().check()
        within("optimizer.alpha", self.alpha, 0, 1)
        at_least("optimizer.momentum", self.momentum, 0)


@option("optimizer", "rmsprop", RMSpropConfig)
def rmsprop(cfg: RMSpropConfig, params: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
    """torch.optim.RMSprop, centered by default (as in the MinAtar paper's DQN)."""
    return torch.optim.RMSprop(params, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps,
                               weight_decay=cfg.weight_decay, momentum=cfg.momentum,
                               centered=cfg.centered)


@dataclass
class RAdamConfig(OptimizerConfig):
    lr: float = 2.5e-4  # learning rate (CleanRL's PQN)


@option("optimizer", "radam", RAdamConfig)
def radam(cfg: RAdamConfig, params: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
    """torch.optim.RAdam (Liu et al. 2020): Adam whose adaptive step is rectified while
    the second-moment estimate is still noisy, so it needs no warm-up (PQN's optimizer).
    Its multi-tensor implementation, which torch picks on GPUs only, is faster on the CPU
    too: a third of the step for the MinAtar CNN."""
    return fastpath.optimizer(torch.optim.RAdam, params, lr=cfg.lr, eps=cfg.eps,
                              weight_decay=cfg.weight_decay, foreach=True)


def decayed_lr(cfg: OptimizerConfig, progress: float) -> float:
    """The learning rate once `progress` (0 to 1) of the training budget is spent: cfg.lr
    throughout, or with lr_decay=linear falling to 0 at the end of the budget."""
    if cfg.lr_decay == "linear":
        return cfg.lr * (1.0 - progress)
    return cfg.lr


def clip_grad_norm(grads: list[torch.Tensor], max_norm: float, stacked: bool) -> None:
    """Scale gradients so that their 2-norm is at most `max_norm`, as
    torch.nn.utils.clip_grad_norm_ does. With `stacked`, the gradients hold K agents
    along their first dimension and each agent's are clipped on their own."""
    if stacked:
        norms = torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads]), dim=0)
        scale = torch.clamp(max_norm / (norms + 1e-6), max=1.0)
        for g in grads:
            g.mul_(scale.view(-1, *[1] * (g.dim() - 1)))
        return
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(scale)
