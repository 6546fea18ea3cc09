"""DQN agents: K of them (num_seeds; K = 1 is one) as one computation, each acting for
its N envs.

Online and target Q-networks are Ensembles (inputs and outputs with a leading agent
dimension; with target=none the target is the online network itself), composed with the
loss, the optimizer and its learning-rate decay, and the target update chosen by config.
For acting they give Q-values and greedy actions (always through
`dqn.nets.greedy_actions`); choosing actions from them is the exploration policy's
(`dqn.exploration`). `Agents[k]` is one of them, as its run sees it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from dqn import fastpath
from dqn.ensemble import Ensemble
from dqn.exploration import JointValues
from dqn.interfaces import OptimizerConfig, TargetConfig
from dqn.nets import QNetwork, greedy_actions
from dqn.nets.heads import Bootstrap
from dqn.optim import clip_grad_norm, decayed_lr
from dqn.options import build
from dqn.replay import Batch


class UpdateResult(NamedTuple):
    losses: torch.Tensor  # (K,) each agent's loss (detached)
    q_means: torch.Tensor  # (K,) each agent's mean Q(s, a) over its batch
    td_errors: torch.Tensor  # (K, B) per-sample TD errors, for prioritized replay


class Agents:
    """K DQN agents: networks, optimizer, loss and target update, and their Q-values.

    Every agent gets the update it would get alone: its loss is the mean over its own
    batch, gradient clipping works agent by agent, and Adam is elementwise.
    """

    def __init__(self, networks: list[QNetwork], optimizer: OptimizerConfig,
                 target: TargetConfig, *, n_actions: int, loss: str = "huber",
                 double_q: bool = True, device: torch.device | str = "cpu",
                 noise: list[torch.Generator] | None = None) -> None:
        """K = len(networks) agents with those initial weights; `loss` and `double_q` are
        train.loss and train.double_q; `noise`: each agent's generator for its noisy
        layers (default: seeded 0 .. K-1)."""
        self.device = torch.device(device)
        self.online = Ensemble(networks).to(self.device)
        self.update_target = build(target)
        self.target = self.update_target.network(self.online)
        self.separate_target = self.target is not self.online
        self.size = self.online.size
        self.params = list(self.online.parameters())
        self.optimizer_cfg = optimizer
        self.optimizer = build(optimizer, self.params)
        self.optimizer_step = fastpath.optimizer_step(self.optimizer)
        self.clip_grad_value = optimizer.clip_grad_value
        self.clip_grad_norm = optimizer.clip_grad_norm
        self.head = self.online.template.head  # its loss, parameter-free
        self.regression = loss  # train.loss, for heads that regress Q-values
        self.double_q = double_q
        self.noise = noise or [torch.Generator().manual_seed(k) for k in range(self.size)]
        self.n_actions = n_actions
        self.exploring = False  # see acting()
        self.gradient_steps = 0
        self._numpy_q = fastpath.numpy_q_values(self.online)

    # --- acting ------------------------------------------------------------------------
    def acting(self, explore: bool) -> None:
        """How the Q-values for acting are computed from now on: exploring (training:
        noisy layers with fresh noise at every forward pass) or not (evaluation: their
        mean weights). Without noisy layers the two are the same."""
        self.exploring = explore

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        """Q-values (K, N, n_actions) of observations (K, N, *obs_shape), on the CPU, in
        the mode set by `acting`."""
        if self.online.noisy:
            if self.exploring:
                self.online.reset_noise(self.noise)
            if self.online.training != self.exploring:
                self.online.train(self.exploring)
        if self._numpy_q is not None:
            return self._numpy_q(obs)
        with torch.no_grad():
            output = self.online(torch.as_tensor(obs, device=self.device))
            return self.online.q_values(output).cpu().numpy()

    def greedy(self, obs: np.ndarray) -> np.ndarray:
        """Greedy actions (K, N) for observations (K, N, *obs_shape), in the mode set by
        `acting`."""
        return greedy_actions(self.q_values(obs))

    def greedy_of(self, ks: list[int], obs: np.ndarray) -> np.ndarray:
        """Greedy actions (M, N) of the agents `ks` for their observations (M, N,
        *obs_shape), in the mode set by `acting`: one forward pass of all K, the other
        agents' observations zeros."""
        if len(ks) == self.size:
            return self.greedy(obs)
        stacked = np.zeros((self.size, *obs.shape[1:]), dtype=obs.dtype)
        stacked[ks] = obs
        return self.greedy(stacked)[ks]

    def values(self, obs: np.ndarray) -> JointValues:
        """The Q-values of observations (K, N, *obs_shape), computed when a policy first
        asks for them (see dqn.exploration.JointValues)."""
        return JointValues(lambda: self.q_values(obs), self.size, obs.shape[1], self.n_actions)

    # --- learning ----------------------------------------------------------------------
    def anneal(self, progress: float) -> None:
        """The learning rate for the next round of gradient steps, once `progress` (0 to
        1) of the training budget is spent (see optimizer.lr_decay)."""
        lr = decayed_lr(self.optimizer_cfg, progress)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def bootstrap(self, next_obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The target network's output on next observations (K, M, ...) and the actions
        a* it is read at: its own greedy ones, or with Double DQN the online network's."""
        with torch.no_grad():
            next_target = self.target(next_obs)
            chooser = (self.online(next_obs) if self.double_q and self.separate_target
                       else next_target)
            return next_target, greedy_actions(self.online.q_values(chooser))

    def bootstrap_values(self, next_obs: torch.Tensor) -> torch.Tensor:
        """Q_target(s', a*) of next observations (K, M, ...): (K, M), the head's Q-values
        (what a rollout memory's Q(lambda) returns bootstrap from)."""
        next_target, next_actions = self.bootstrap(next_obs)
        q_values = self.online.q_values(next_target)
        return q_values.gather(-1, next_actions.unsqueeze(-1)).squeeze(-1)

    def update(self, batch: Batch) -> UpdateResult:
        """One gradient step on the head's loss of a batch (K, B, ...), towards the targets
        it carries (batch.returns) or bootstrapped from its next observations, then the
        target update. Returns detached tensors (reading them with .item() would
        synchronise a GPU every step). Noisy layers get fresh noise for the step, online
        and target."""
        if self.online.noisy:
            if not self.online.training:
                self.online.train()
            self.online.reset_noise(self.noise)
            if self.separate_target:
                self.target.reset_noise(self.noise)
        output = self.online(batch.obs)
        if batch.returns is None:
            next_target, next_actions = self.bootstrap(batch.next_obs)
            target = Bootstrap(batch.rewards, batch.discounts,
                               self.head.taken(next_target, next_actions))
        else:
            target = batch.returns
        terms = self.head.loss(output, batch.actions, target, self.regression)
        per_sample = terms.per_sample if batch.weights is None else terms.per_sample * batch.weights
        losses = per_sample.mean(-1)
        for p in self.params:  # optimizer.zero_grad(set_to_none=True), without its overhead
            p.grad = None
        losses.sum().backward()
        if self.clip_grad_value is not None:
            nn.utils.clip_grad_value_(self.params, self.clip_grad_value)
        if self.clip_grad_norm is not None:
            clip_grad_norm([p.grad for p in self.params if p.grad is not None],
                           self.clip_grad_norm, stacked=self.size > 1)
        self.optimizer_step()
        self.gradient_steps += 1
        self.update_target(self.online, self.target, self.gradient_steps)
        return UpdateResult(losses.detach(), terms.q_taken.mean(-1), terms.td_errors)

    # --- state -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The target network (None without one), the optimizer and the update counter
        (for resuming; the online weights travel as the checkpoint's model)."""
        target = self.target.weights() if self.separate_target else None
        return {"target": target, "optimizer": self.optimizer.state_dict(),
                "gradient_steps": self.gradient_steps,
                "noise": [generator.get_state() for generator in self.noise]}

    def load_state_dict(self, online: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        self.online.load_weights(online)
        if self.separate_target:
            self.target.load_weights(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.gradient_steps = state["gradient_steps"]
        for generator, generator_state in zip(self.noise, state["noise"]):
            generator.set_state(generator_state)

    def __getitem__(self, k: int) -> "Agent":
        return Agent(self, k)


class Agent:
    """Agent k of Agents, as its run sees it: its greedy policy, its weights and the
    update count."""

    def __init__(self, agents: Agents, k: int) -> None:
        self.agents, self.k = agents, k

    @property
    def gradient_steps(self) -> int:
        return self.agents.gradient_steps

    def weights(self) -> dict[str, torch.Tensor]:
        return self.agents.online.member_state_dict(self.k)

    def greedy(self, obs: np.ndarray) -> np.ndarray:
        """Greedy actions (N,) for observations (N, *obs_shape), in the mode set by
        `Agents.acting` (evaluation sets explore=False: mean noisy weights)."""
        return self.agents.greedy_of([self.k], obs[None])[0]
