"""Target-network updates, called once after every gradient step."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from dqn.config import HardTargetConfig, SoftTargetConfig, TargetConfig


class TargetUpdater(Protocol):
    def __call__(self, online: nn.Module, target: nn.Module, gradient_steps: int) -> None:
        """Update `target` after gradient step number `gradient_steps` (1-based)."""


class HardUpdate:
    """Copy the online weights into the target every `period` gradient steps."""

    def __init__(self, period: int) -> None:
        self.period = period

    def __call__(self, online: nn.Module, target: nn.Module, gradient_steps: int) -> None:
        if gradient_steps % self.period == 0:
            target.load_state_dict(online.state_dict())


class SoftUpdate:
    """Polyak averaging: target <- target + tau * (online - target)."""

    def __init__(self, tau: float) -> None:
        self.tau = tau

    @torch.no_grad()
    def __call__(self, online: nn.Module, target: nn.Module, gradient_steps: int) -> None:
        for p_target, p_online in zip(target.parameters(), online.parameters()):
            p_target.lerp_(p_online, self.tau)


def build_target_updater(cfg: TargetConfig) -> TargetUpdater:
    """The target updater that `cfg` describes."""
    if isinstance(cfg, HardTargetConfig):
        return HardUpdate(cfg.period)
    if isinstance(cfg, SoftTargetConfig):
        return SoftUpdate(cfg.tau)
    raise TypeError(f"no target updater for {type(cfg).__name__}")
