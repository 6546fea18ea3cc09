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
from dqn.interfaces import TD_NEEDS, Head, OptimizerConfig, TargetConfig, TDContext
from dqn.nets import QNetwork, greedy_actions
from dqn.optim import clip_grad_norm, decayed_lr
from dqn.options import build
from dqn.replay import Batch

CHOOSING = frozenset({"next_output", "next_actions"})  # needs that pick a* at s'


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
                 noise: list[torch.Generator] | None = None,
                 eval_noise: list[torch.Generator] | None = None) -> None:
        """K = len(networks) agents with those initial weights; `loss` and `double_q` are
        train.loss and train.double_q; `noise`: each agent's generator for its noisy
        layers and its head's draws while training (default: seeded 0 .. K-1);
        `eval_noise`: each agent's generator for its head's draws in evaluation (default:
        seeded K .. 2K-1), so that evaluating never shifts what training draws."""
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
        self.head = self.online.template.head  # its loss and draws, parameter-free
        self.samples = type(self.head).sample is not Head.sample  # its forward draws
        self.regression = loss  # train.loss, for heads that regress Q-values
        self.double_q = double_q
        self.noise = noise or [torch.Generator().manual_seed(k) for k in range(self.size)]
        self.eval_noise = eval_noise or [torch.Generator().manual_seed(self.size + k)
                                         for k in range(self.size)]
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

    def draws(self, role: str, batch: int, ks: list[int] | None = None,
              acting: bool = False) -> torch.Tensor | None:
        """The head's draws (K, batch, ...) for one forward pass in `role` (see
        `Head.sample`), each agent's from its own generator: training's, or when `acting`
        in the mode set by `acting()` without exploring, evaluation's. With `ks`, only
        those agents draw (the others' are zeros). None for a head that draws nothing."""
        if not self.samples:
            return None
        generators = self.eval_noise if acting and not self.exploring else self.noise
        drawn = {k: self.head.sample(role, batch, generators[k])
                 for k in (range(self.size) if ks is None else ks)}
        first = next(iter(drawn.values()))
        return torch.stack([drawn.get(k, torch.zeros_like(first))
                            for k in range(self.size)]).to(self.device)

    def q_values(self, obs: np.ndarray, draws: torch.Tensor | None = None) -> np.ndarray:
        """Q-values (K, N, n_actions) of observations (K, N, *obs_shape), on the CPU, in
        the mode set by `acting`; a head that samples uses `draws` (default: fresh ones
        for every agent)."""
        if self.online.noisy:
            if self.exploring:
                self.online.reset_noise(self.noise)
            if self.online.training != self.exploring:
                self.online.train(self.exploring)
        if self._numpy_q is not None:
            return self._numpy_q(obs)
        if draws is None:
            draws = self.draws("act", obs.shape[1], acting=True)
        with torch.no_grad():
            output = self.online(torch.as_tensor(obs, device=self.device), draws)
            return self.online.q_values(output).cpu().numpy()

    def greedy(self, obs: np.ndarray) -> np.ndarray:
        """Greedy actions (K, N) for observations (K, N, *obs_shape), in the mode set by
        `acting`."""
        return greedy_actions(self.q_values(obs))

    def greedy_of(self, ks: list[int], obs: np.ndarray) -> np.ndarray:
        """Greedy actions (M, N) of the agents `ks` for their observations (M, N,
        *obs_shape), in the mode set by `acting`: one forward pass of all K, the other
        agents' observations zeros (and none of their generators drawn from)."""
        if len(ks) == self.size:
            return self.greedy(obs)
        stacked = np.zeros((self.size, *obs.shape[1:]), dtype=obs.dtype)
        stacked[ks] = obs
        draws = self.draws("act", obs.shape[1], ks, acting=True)
        return greedy_actions(self.q_values(stacked, draws))[ks]

    def values(self, obs: np.ndarray) -> JointValues:
        """The Q-values of observations (K, N, *obs_shape), computed when a policy first
        asks for them (see dqn.exploration.JointValues); a head that samples draws for
        them now, asked or not, so that every agent draws the same at every step."""
        draws = self.draws("act", obs.shape[1], acting=True)
        return JointValues(lambda: self.q_values(obs, draws), self.size, obs.shape[1],
                           self.n_actions)

    # --- learning ----------------------------------------------------------------------
    def anneal(self, progress: float) -> None:
        """The learning rate for the next round of gradient steps, once `progress` (0 to
        1) of the training budget is spent (see optimizer.lr_decay)."""
        lr = decayed_lr(self.optimizer_cfg, progress)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def pass_of(self, network: nn.Module, obs: torch.Tensor, field: str,
                draws: dict[str, torch.Tensor]) -> torch.Tensor:
        """`network`'s output on `obs` (K, M, ...) for the TDContext field `field`, with the
        head's draws for that pass's role (kept in `draws` by field name)."""
        if not self.samples:
            return network(obs)
        drawn = self.draws(TD_NEEDS.get(field, field), obs.shape[1])
        if drawn is not None:
            draws[field] = drawn
        return network(obs, drawn)

    def next_values(self, next_obs: torch.Tensor, needs: frozenset[str] | set[str],
                    draws: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The next-state fields of TD_NEEDS in `needs` (and what they are computed from)
        for next observations (K, M, ...), without gradients: a* is the target's greedy
        action, or with Double DQN the online network's. The pass that picks a* draws as
        acting does: with Double DQN the online pass at s'; without it, for a head that
        samples, a target pass of its own (IQN picks a* with K fractions and learns from
        N' others, not from the samples it maximised over)."""
        fields: dict[str, torch.Tensor] = {}
        choose = not CHOOSING.isdisjoint(needs)
        double = self.double_q and self.separate_target
        with torch.no_grad():
            if choose or "target_next" in needs:
                fields["target_next"] = self.pass_of(self.target, next_obs, "target_next", draws)
            if "online_next" in needs or (choose and double):
                fields["online_next"] = self.pass_of(self.online, next_obs, "online_next", draws)
            if choose:
                if double:
                    chooser = fields["online_next"]
                elif self.samples:
                    chooser = self.pass_of(self.target, next_obs, "next_actions", draws)
                else:
                    chooser = fields["target_next"]
                fields["next_actions"] = greedy_actions(self.online.q_values(chooser))
                fields["next_output"] = self.head.taken(fields["target_next"],
                                                        fields["next_actions"])
        return fields

    def bootstrap_values(self, next_obs: torch.Tensor) -> torch.Tensor:
        """Q_target(s', a*) of next observations (K, M, ...): (K, M), the head's Q-values
        (what a rollout memory's Q(lambda) returns bootstrap from)."""
        fields = self.next_values(next_obs, {"next_output"}, {})
        return self.online.q_values(fields["next_output"])

    def context(self, batch: Batch) -> TDContext:
        """What the head's loss reads for `batch` (K, B, ...): the online output at s, the
        batch, and of TD_NEEDS what the head declares (dqn.interfaces.TDContext)."""
        needs, draws = self.head.needs, {}
        online = self.pass_of(self.online, batch.obs, "online", draws)
        fields = {}
        if batch.returns is None:
            fields = self.next_values(batch.next_obs, needs, draws)
        if "target_at_s" in needs:
            if self.separate_target or self.samples:
                with torch.no_grad():
                    fields["target_at_s"] = self.pass_of(self.target, batch.obs, "target_at_s",
                                                         draws)
            else:  # the target is the online network, and the same pass
                fields["target_at_s"] = online.detach()
        return TDContext(online=online, actions=batch.actions, rewards=batch.rewards,
                         discounts=batch.discounts, returns=batch.returns,
                         weights=batch.weights, draws=draws,
                         **{name: fields[name] for name in needs if name in fields})

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
        terms = self.head.loss(self.context(batch), self.regression)
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
                "noise": [generator.get_state() for generator in self.noise],
                "eval_noise": [generator.get_state() for generator in self.eval_noise]}

    def load_state_dict(self, online: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        self.online.load_weights(online)
        if self.separate_target:
            self.target.load_weights(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.gradient_steps = state["gradient_steps"]
        for generator, generator_state in zip(self.noise, state["noise"]):
            generator.set_state(generator_state)
        for generator, generator_state in zip(self.eval_noise, state.get("eval_noise", ())):
            generator.set_state(generator_state)  # (a last.pt from before it existed: none)

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
