"""The DQN agent: epsilon-greedy acting and the temporal-difference update."""

from __future__ import annotations

import copy
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from dqn.buffers import Batch
from dqn.config import AdamWConfig, OptimizerConfig
from dqn.networks import StackedLinear
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
        next_value = next_q.max(dim=-1).values
    else:
        next_value = next_q.gather(-1, next_q_online.argmax(dim=-1, keepdim=True)).squeeze(-1)
    return torch.addcmul(rewards, 1.0 - terminated, next_value, value=gamma)


def build_optimizer(cfg: OptimizerConfig, params) -> torch.optim.Optimizer:
    """Adam or AdamW with the configured lr, eps, weight decay and AMSGrad.

    The fused implementation computes the same update as the default one in a single
    kernel, which for small Q-networks is several times faster on CPU and GPU alike;
    FusedAdam(W) also calls that kernel without torch.optim's per-step overhead.
    """
    optimizer = FusedAdamW if isinstance(cfg, AdamWConfig) else FusedAdam
    return optimizer(params, lr=cfg.lr, eps=cfg.eps, weight_decay=cfg.weight_decay,
                     amsgrad=cfg.amsgrad, fused=True)


def _undecorated(method):
    """`method` without torch._disable_dynamo's wrapper, whose first call imports
    torch._dynamo (1-2 s) only to keep torch.compile out of the method."""
    return getattr(method, "__wrapped__", method)


class _DirectFusedStep:
    """torch.optim.Adam/AdamW(fused=True) whose step() calls the fused kernel directly.

    Adam's own step() spends more time than its kernel on a small network: profiler
    records, hooks, grad-mode switches and torch.compile graph breaks, and its first call
    imports torch._dynamo (1-2 s per process). This step runs the same kernel on the same
    state (torch.optim.adam._fused_adam without the device grouping: one device here), so
    the numbers, state_dict() and load_state_dict() are those of torch.optim.Adam. Step
    hooks (register_step_pre_hook and co.) are not run.
    """

    add_param_group = _undecorated(torch.optim.Optimizer.add_param_group)
    state_dict = _undecorated(torch.optim.Optimizer.state_dict)
    load_state_dict = _undecorated(torch.optim.Optimizer.load_state_dict)

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            return super().step(closure)
        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps = [], [], [], [], [], []
            self._init_group(group, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs,
                             steps)
            if not params:
                continue
            beta1, beta2 = group["betas"]
            decoupled = group.get("decoupled_weight_decay", isinstance(self, torch.optim.AdamW))
            kernel = torch._fused_adamw_ if decoupled else torch._fused_adam_
            torch._foreach_add_(steps, 1)
            kernel(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps,
                   amsgrad=group["amsgrad"], lr=group["lr"], beta1=beta1, beta2=beta2,
                   weight_decay=group["weight_decay"], eps=group["eps"],
                   maximize=group["maximize"], grad_scale=None, found_inf=None)
        return None

    # Optimizer.__init__ wraps an unmarked step() in a profiler record and the step hooks,
    # which cost about as much as the kernel here; marked, step() runs as it is.
    step.hooked = True


class FusedAdam(_DirectFusedStep, torch.optim.Adam):
    pass


class FusedAdamW(_DirectFusedStep, torch.optim.AdamW):
    pass


def clip_grad_norm(grads: list[torch.Tensor], max_norm: float, stacked: bool = False) -> None:
    """torch.nn.utils.clip_grad_norm_ for gradients on one device, with the same ops and
    numbers but without its per-call grouping and checks. With `stacked`, the gradients
    of K agents' networks stacked along the first dimension are clipped agent by agent."""
    if not stacked:
        total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)
        torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))
        return
    norms = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads]), dim=0)
    scale = torch.clamp(max_norm / (norms + 1e-6), max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *[1] * (g.dim() - 1)))


def numpy_forward(network: nn.Module,
                  agent: int | None = None) -> Callable[[np.ndarray], np.ndarray] | None:
    """The forward pass of an nn.Sequential of Linear (or StackedLinear), ReLU and Tanh
    layers on the CPU as NumPy operations on the parameters' own memory (None for any
    other network).

    For one observation or a few, torch's per-operation overhead is most of a forward
    pass; NumPy does the same arithmetic 3-5 times faster. The parameters are shared, not
    copied, so in-place optimizer steps and load_state_dict() show through at once.
    With `agent`, a stacked network computes that agent's network alone.
    """
    if not isinstance(network, nn.Sequential):
        return None
    layers: list[tuple[np.ndarray, np.ndarray | None] | Callable[[np.ndarray], None]] = []
    for layer in network:
        if type(layer) in (nn.Linear, StackedLinear):
            if layer.weight.device.type != "cpu" or layer.weight.dtype != torch.float32:
                return None
            weight = layer.weight.detach().numpy()
            bias = None if layer.bias is None else layer.bias.detach().numpy()
            if type(layer) is StackedLinear and agent is not None:
                weight, bias = weight[agent].T, bias[agent]
            elif type(layer) is StackedLinear:  # (K, N, in) @ (K, in, out) + (K, 1, out)
                weight, bias = weight.transpose(0, 2, 1), bias[:, None, :]
            else:
                weight = weight.T
            layers.append((weight, bias))
        elif type(layer) is nn.ReLU:
            layers.append(lambda x: np.maximum(x, 0.0, out=x))
        elif type(layer) is nn.Tanh:
            layers.append(lambda x: np.tanh(x, out=x))
        else:
            return None

    def forward(obs: np.ndarray) -> np.ndarray:
        x = np.asarray(obs, dtype=np.float32)
        for layer in layers:
            if callable(layer):
                layer(x)
            else:
                weight, bias = layer
                x = x @ weight
                if bias is not None:
                    x += bias
        return x

    return forward


class DQNAgent:
    """Online and target Q-networks, their optimizer and the update rule.

    Given a `stack_networks` network, it is K independent agents updated as one batched
    computation: batches, Q-values and losses gain a leading agent dimension, each agent's
    loss is its own batch mean, and gradient clipping works agent by agent, so every agent
    gets the update it would get alone (Adam is elementwise).
    """

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
        self.params = list(self.online.parameters())
        self.stacked = any(isinstance(m, StackedLinear) for m in self.online.modules())
        self._numpy_q = numpy_forward(self.online)

    def state_dict(self) -> dict[str, Any]:
        """Both networks, the optimizer and the update counter (for resuming)."""
        return {"target": self.target.state_dict(), "optimizer": self.optimizer.state_dict(),
                "gradient_steps": self.gradient_steps}

    def weights(self) -> dict[str, torch.Tensor]:
        """The online network's state_dict: what best.pt holds."""
        return self.online.state_dict()

    def load_state_dict(self, online: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        self.online.load_state_dict(online)
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.gradient_steps = state["gradient_steps"]

    def greedy(self, obs: np.ndarray) -> np.ndarray:
        """argmax_a Q(obs, a) for a batch of observations ((K, N, obs_dim) if stacked)."""
        if self._numpy_q is not None:
            return self._numpy_q(obs).argmax(axis=-1)
        with torch.no_grad():
            q = self.online(torch.as_tensor(obs, dtype=torch.float32, device=self.device))
        return q.argmax(dim=-1).cpu().numpy()

    def act(self, obs: np.ndarray, epsilon: float) -> int:
        """A random action with probability epsilon, else the greedy one."""
        if self.rng.random() < epsilon:
            return int(self.rng.integers(self.n_actions))
        return int(self.greedy(obs[None])[0])

    def update(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """One gradient step on the TD loss, then the target update.

        Returns the loss and the mean Q(s, a) of the batch, as detached tensors (reading
        them with .item() would synchronise a GPU every step); one of each per agent if
        stacked.
        """
        q = self.online(batch.obs).gather(-1, batch.actions.unsqueeze(-1)).squeeze(-1)
        with torch.no_grad():
            next_q_online = self.online(batch.next_obs) if self.double_q else None
            target = td_target(batch.rewards, self.target(batch.next_obs),
                               batch.terminated, self.gamma, next_q_online)
        if self.stacked:  # the sum of the agents' own batch means
            losses = self.loss_fn(q, target, reduction="none").mean(-1)
            loss = losses.sum()
        else:
            loss = losses = self.loss_fn(q, target)
        for p in self.params:  # optimizer.zero_grad(set_to_none=True), without its overhead
            p.grad = None
        loss.backward()
        if self.clip_grad_value is not None:
            nn.utils.clip_grad_value_(self.params, self.clip_grad_value)
        if self.clip_grad_norm is not None:
            clip_grad_norm([p.grad for p in self.params if p.grad is not None],
                           self.clip_grad_norm, self.stacked)
        self.optimizer.step()
        self.gradient_steps += 1
        self.update_target(self.online, self.target, self.gradient_steps)
        return losses.detach(), q.detach().mean(-1)
