"""Munchausen-DQN's head (Vieillard et al. 2020): Q-learning towards a soft, entropy-
regularised target with the scaled log-policy of the action taken added to the reward."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from dqn.checks import ConfigError, fail, positive, within
from dqn.interfaces import TDContext
from dqn.nets.heads import QConfig, QHead
from dqn.options import option, option_of


@dataclass
class MunchausenConfig(QConfig):
    title: ClassVar[str] = "M-DQN"
    tau: float = 0.03  # entropy temperature of the policy softmax(q_target / tau)
    alpha: float = 0.9  # scale of the Munchausen term alpha * clip(tau log pi(a|s), l0, 0)
    l0: float = -1.0  # the lower clip of tau log pi(a|s) (< 0)

    def check(self) -> None:
        super().check()
        positive("head.tau", self.tau)
        within("head.alpha", self.alpha, 0, 1)
        if not self.l0 < 0:
            fail("head.l0", self.l0, "must be < 0")

    def against(self, config: Any) -> None:
        buffer = option_of(config.buffer).name
        if buffer == "rollout":
            raise ConfigError("head=munchausen cannot learn from buffer=rollout: its target "
                              "needs the target network at s and s', which a rollout's "
                              "Q(lambda) returns do not carry; use buffer=uniform|prioritized")
        n_step = getattr(config.buffer, "n_step", 1)
        if n_step != 1:
            fail("buffer.n_step", n_step, "must be 1 with head=munchausen (its bonus is the "
                 "log-policy of one step's action; the paper's agent is one-step)")


@option("head", "munchausen", MunchausenConfig)
class MunchausenHead(QHead):
    """Q-values as head=q's (dueling and noisy as every head's), regressed with train.loss
    towards y = r + alpha * clip(tau log pi(a|s), l0, 0) + discount * sum_a' pi(a'|s')
    (q(s', a') - tau log pi(a'|s')), where q is the target network and pi = softmax(q /
    tau): the target network's values at s and at s' for every action (its `needs`).
    train.double_q changes nothing (no a* is chosen). TD errors are y - Q(s, a)."""

    needs = frozenset({"target_at_s", "target_next"})

    def __init__(self, cfg: MunchausenConfig, in_features: int, n_actions: int) -> None:
        super().__init__(cfg, in_features, n_actions)
        self.tau, self.alpha, self.l0 = cfg.tau, cfg.alpha, cfg.l0

    def target(self, context: TDContext) -> torch.Tensor:
        """The Munchausen target y (K, B); head=q's loss regresses Q(s, a) towards it."""
        log_policy = (context.target_at_s / self.tau).log_softmax(-1)
        taken_log_policy = self.taken(log_policy, context.actions)
        bonus = self.alpha * (self.tau * taken_log_policy).clamp(self.l0, 0.0)
        next_q = context.target_next
        next_log_policy = (next_q / self.tau).log_softmax(-1)
        soft_value = (next_log_policy.exp() * (next_q - self.tau * next_log_policy)).sum(-1)
        return context.rewards + bonus + context.discounts * soft_value
