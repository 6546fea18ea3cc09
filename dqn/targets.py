"""Target networks: how the network that TD targets bootstrap from is made (`network`)
and kept up to date (called once after every gradient step); each option implements
`dqn.interfaces.TargetUpdate`."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from dqn.checks import positive, within
from dqn.interfaces import TargetConfig, TargetUpdate
from dqn.options import option


@dataclass
class HardTargetConfig(TargetConfig):
    period: int = 32  # gradient steps between copies

    def check(self) -> None:
        positive("target.period", self.period)


@dataclass
class SoftTargetConfig(TargetConfig):
    tau: float = 0.005  # Polyak factor applied after every gradient step

    def check(self) -> None:
        within("target.tau", self.tau, 0, 1, open_low=True)


class TargetCopy(TargetUpdate):
    """A target network kept apart from the online one: a frozen copy of it."""

    def network(self, online: nn.Module) -> nn.Module:
        """The target network for `online`: a copy without gradients."""
        return copy.deepcopy(online).requires_grad_(False)


@option("target", "hard", HardTargetConfig)
class HardUpdate(TargetCopy):
    """Copy the online weights into the target every `period` gradient steps."""

    def __init__(self, cfg: HardTargetConfig) -> None:
        self.period = cfg.period

    def __call__(self, online: nn.Module, target: nn.Module, gradient_steps: int) -> None:
        if gradient_steps % self.period == 0:
            target.load_state_dict(online.state_dict())


@option("target", "soft", SoftTargetConfig)
class SoftUpdate(TargetCopy):
    """Polyak averaging after every gradient step: target <- target + tau (online - target)."""

    def __init__(self, cfg: SoftTargetConfig) -> None:
        self.tau = cfg.tau

    @torch.no_grad()
    def __call__(self, online: nn.Module, target: nn.Module, gradient_steps: int) -> None:
        for p_target, p_online in zip(target.parameters(), online.parameters()):
            p_target.lerp_(p_online, self.tau)


@dataclass
class NoTargetConfig(TargetConfig):
    pass


@option("target", "none", NoTargetConfig)
class NoTarget(TargetUpdate):
    """No target network (PQN): targets bootstrap from the online network itself."""

    def __init__(self, cfg: NoTargetConfig) -> None:
        pass

    def network(self, online: nn.Module) -> nn.Module:
        return online

    def __call__(self, online: nn.Module, target: nn.Module, gradient_steps: int) -> None:
        pass
