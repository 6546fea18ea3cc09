"""The DQN agent: epsilon-greedy acting and the temporal-difference update."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from dqn.buffers import Batch
from dqn.config import AdamWConfig, OptimizerConfig
from dqn.targets import TargetUpdater

_LOSSES = {"huber": nn.functional.smooth_l1_loss, "mse": nn.functional.mse_loss}


def td_target(rewards: torch.Tensor, next_q: torch.Tensor, terminated: torch.Tensor,
              gamma: float, next_q_online: torch.Tensor | None = None) -> torch.Tensor:
    """r + gamma * Q_target(s', a*), without bootstrapping where the episode terminated.
    Truncated transitions carry terminated = 0 and are bootstrapped.

    a* = argmax_a Q_target(s', a), or with `next_q_online` (Double DQN) the online
    network's argmax, which curbs the overestimation of the max.
    """
    if next_q_online is None:
        next_value = next_q.max(dim=1).values
    else:
        next_value = next_q.gather(1, next_q_online.argmax(dim=1, keepdim=True)).squeeze(1)
    return rewards + gamma * (1.0 - terminated) * next_value


def build_optimizer(cfg: OptimizerConfig, params) -> torch.optim.Optimizer:
    """Adam or AdamW with the configured lr, eps, weight decay and AMSGrad.

    The fused implementation computes the same update as the default one in a single
    kernel, which for small Q-networks is several times faster on CPU and GPU alike.
    """
    optimizer = torch.optim.AdamW if isinstance(cfg, AdamWConfig) else torch.optim.Adam
    return optimizer(params, lr=cfg.lr, eps=cfg.eps, weight_decay=cfg.weight_decay,
                     amsgrad=cfg.amsgrad, fused=True)


class DQNAgent:
    """Online and target Q-networks, their optimizer and the update rule."""

    def __init__(self, q_network: nn.Module, optimizer_cfg: OptimizerConfig,
                 target_updater: TargetUpdater, gamma: float, loss: str,
                 n_actions: int, rng: np.random.Generator,
                 device: torch.device | str = "cpu", double_q: bool = False) -> None:
        self.device = torch.device(device)
        self.online = q_network.to(self.device)
        self.target = copy.deepcopy(self.online).requires_grad_(False)
        self.optimizer = build_optimizer(optimizer_cfg, self.online.parameters())
        self.clip_grad_value = optimizer_cfg.clip_grad_value
        self.clip_grad_norm = optimizer_cfg.clip_grad_norm
        self.update_target = target_updater
        self.gamma = gamma
        self.double_q = double_q
        self.loss_fn = _LOSSES[loss]
        self.n_actions = n_actions
        self.rng = rng
        self.gradient_steps = 0

    def state_dict(self) -> dict[str, Any]:
        """Both networks, the optimizer and the update counter (for resuming)."""
        return {"target": self.target.state_dict(), "optimizer": self.optimizer.state_dict(),
                "gradient_steps": self.gradient_steps}

    def load_state_dict(self, online: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        self.online.load_state_dict(online)
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.gradient_steps = state["gradient_steps"]

    @torch.no_grad()
    def greedy(self, obs: np.ndarray) -> np.ndarray:
        """argmax_a Q(obs, a) for a batch of observations."""
        q = self.online(torch.as_tensor(obs, dtype=torch.float32, device=self.device))
        return q.argmax(dim=1).cpu().numpy()

    def act(self, obs: np.ndarray, epsilon: float) -> int:
        """A random action with probability epsilon, else the greedy one."""
        if self.rng.random() < epsilon:
            return int(self.rng.integers(self.n_actions))
        return int(self.greedy(obs[None])[0])

    def update(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """One gradient step on the TD loss, then the target update.

        Returns the loss and the mean Q(s, a) of the batch, as detached tensors (reading
        them with .item() would synchronise a GPU every step).
        """
        q = self.online(batch.obs).gather(1, batch.actions[:, None]).squeeze(1)
        with torch.no_grad():
            next_q_online = self.online(batch.next_obs) if self.double_q else None
            target = td_target(batch.rewards, self.target(batch.next_obs),
                               batch.terminated, self.gamma, next_q_online)
        loss = self.loss_fn(q, target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip_grad_value is not None:
            nn.utils.clip_grad_value_(self.online.parameters(), self.clip_grad_value)
        if self.clip_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.online.parameters(), self.clip_grad_norm)
        self.optimizer.step()
        self.gradient_steps += 1
        self.update_target(self.online, self.target, self.gradient_steps)
        return loss.detach(), q.detach().mean()
