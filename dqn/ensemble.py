"""K networks of one architecture computed as one (`num_seeds=K`; K = 1 is one network).

An `Ensemble` takes inputs with a leading agent dimension, (K, N, ...), and returns
outputs with one, (K, N, ...). Its parameters hold all K networks: each agent's slice is
that agent's network, and gradients, optimizer states and target updates stay per agent
because every operation on them is either per agent or elementwise.

How the K networks run as one:
- K = 1: the network itself.
- K > 1: `torch.func.stack_module_state` stacks the K networks' parameters and
  `torch.func.vmap` over `torch.func.functional_call` runs the network once on the
  stacked parameters. That works for any module. `dqn.fastpath.stack_networks` replaces
  it by plain batched matrix products for the layer types it knows (an MLP), which is
  faster; tests compare the two.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from dqn.fastpath import sequential, stack_networks
from dqn.nets import QNetwork


class Ensemble(nn.Module):
    """K Q-networks of the same architecture as one module: (K, N, ...) -> (K, N, ...)."""

    def __init__(self, networks: list[QNetwork]) -> None:
        super().__init__()
        self.size = len(networks)
        # A parameter-free copy to read Q-values off outputs and to rebuild single agents.
        self._template = (copy.deepcopy(networks[0]),)
        if self.size == 1:
            self.net: nn.Module = networks[0]
        else:
            self.net = stack_networks(networks) or VmapStack(networks)
        # The same layer modules in one flat container where dqn.fastpath knows the network
        # (not registered: the parameters belong to self.net).
        self._compute = (sequential(self.net) or self.net,)
        # The noise buffers of layers with noise (NoisyLinear): (buffer name, size, shaping).
        self.noise_layout = [(f"{name}.{buffer}", size, module.shape_noise)
                             for name, module in self.template.named_modules()
                             if hasattr(module, "noise_sizes")
                             for buffer, size in module.noise_sizes().items()]
        self.noisy = bool(self.noise_layout)
        self._noise_targets: tuple[int, list[list[torch.Tensor]]] | None = None

    @property
    def template(self) -> QNetwork:
        return self._template[0]

    def forward(self, obs: torch.Tensor, draws: torch.Tensor | None = None) -> torch.Tensor:
        """Outputs (K, N, ...) of observations (K, N, ...); `draws` (K, N, ...) are what a
        head that samples drew for this pass (see dqn.interfaces.Head), each agent's its
        own (such a head offers no fast form: the network runs as it is)."""
        if draws is not None:
            if self.size == 1:
                return self.net(obs[0], draws[0]).unsqueeze(0)
            return self.net(obs, draws)
        if self.size == 1:
            return self._compute[0](obs[0]).unsqueeze(0)
        return self._compute[0](obs)

    def q_values(self, output: torch.Tensor) -> torch.Tensor:
        """Q-values (K, N, n_actions) of an output of forward()."""
        return self.template.q_values(output)

    def reset_noise(self, generators: list[torch.Generator]) -> None:
        """New noise in every noisy layer: agent k's from one draw of generators[k] (as its
        single run would draw it), split over its noise buffers; nothing for a network
        without noise."""
        if not self.noisy:
            return
        total = sum(size for _, size, _ in self.noise_layout)
        for generator, targets in zip(generators, self._targets()):
            normal = torch.randn(total, generator=generator)
            start = 0
            for target, (_, size, shape) in zip(targets, self.noise_layout):
                target.copy_(shape(normal[start:start + size]))
                start += size

    def _targets(self) -> list[list[torch.Tensor]]:
        """Each agent's noise buffers in `noise_layout` order, looked up once per module
        (the lookup goes through module names; a copy or a move of this module looks
        them up again)."""
        if self._noise_targets is None or self._noise_targets[0] != id(self):
            names = [name for name, _, _ in self.noise_layout]
            if self.size == 1:
                targets = [[self.net.get_buffer(name) for name in names]]
            else:
                targets = [[self.net.member_buffer(k, name) for name in names]
                           for k in range(self.size)]
            self._noise_targets = (id(self), targets)
        return self._noise_targets[1]

    def _apply(self, fn, recurse: bool = True):
        self._noise_targets = None  # buffers moved (to a device, another dtype)
        return super()._apply(fn, recurse)

    def member_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Agent k's network alone, as `build_q_network` makes it (what best.pt holds)."""
        if self.size == 1:
            return {name: value.detach().clone() for name, value in self.net.state_dict().items()}
        return self.net.member_state_dict(k)

    def weights(self) -> dict[str, torch.Tensor]:
        """All agents' weights: the network's own state_dict when K = 1."""
        return self.net.state_dict()

    def load_weights(self, state: dict[str, torch.Tensor]) -> None:
        self.net.load_state_dict(state)


class VmapStack(nn.Module):
    """Any module, K times: the K modules' parameters and buffers stacked along a leading
    dimension, run through torch.func.vmap(functional_call(...))."""

    def __init__(self, networks: list[nn.Module]) -> None:
        super().__init__()
        params, buffers = stack_module_state(networks)
        self.names = {name: name.replace(".", "__") for name in (*params, *buffers)}
        for name, value in params.items():
            self.register_parameter(self.names[name], nn.Parameter(value.detach()))
        for name, value in buffers.items():
            self.register_buffer(self.names[name], value)
        self.param_names, self.buffer_names = list(params), list(buffers)
        self.saved = [name for name in networks[0].state_dict() if name in self.names]
        self._base = (copy.deepcopy(networks[0]).to("meta"),)  # structure only, unregistered

    def _call(self, parameters: dict, buffers: dict, *inputs: torch.Tensor) -> torch.Tensor:
        return functional_call(self._base[0], (parameters, buffers), inputs)

    def forward(self, obs: torch.Tensor, draws: torch.Tensor | None = None) -> torch.Tensor:
        """Every agent's network on its own inputs (K, N, ...): observations, and the draws
        of a head that samples (drawn outside, so vmap runs no random operation)."""
        parameters = {name: getattr(self, self.names[name]) for name in self.param_names}
        buffers = {name: getattr(self, self.names[name]) for name in self.buffer_names}
        inputs = (obs,) if draws is None else (obs, draws)
        return vmap(self._call)(parameters, buffers, *inputs)

    def train(self, mode: bool = True) -> "VmapStack":
        self._base[0].train(mode)
        return super().train(mode)

    def member_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        return {name: getattr(self, self.names[name])[k].detach().clone() for name in self.saved}

    def member_buffer(self, k: int, name: str) -> torch.Tensor:
        return getattr(self, self.names[name])[k]
