"""Fast paths: exact shortcuts for the parts that a small network spends most time in.

Each one is used only for what it recognises and returns None (or the public API) for
anything else, so a new network or optimizer is always correct and at worst slower:

- `stack_networks`: K MLPs as batched matrix products (torch.baddbmm) instead of
  torch.func.vmap, for networks built only from the layer types listed in STACKABLE.
- `numpy_q_values`: acting with an MLP on the CPU through NumPy, on the parameters' own
  memory; for one observation torch's per-operation overhead is most of the cost.
- `optimizer_step`: torch.optim.Adam/AdamW(fused=True)'s kernel called directly, without
  the per-step bookkeeping of Optimizer.step(), which costs more than the kernel on a
  small network. This one calls torch internals (`Optimizer._init_group`,
  `torch._fused_adam_`), which is why pyproject pins torch to the releases the tests run.

tests/test_fastpath.py compares each with the public computation it replaces.
"""

from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import torch
from torch import nn

from dqn.nets.encoders import MLPEncoder
from dqn.nets.heads import QHead
from dqn.nets.qnet import QNetwork

ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.ELU, nn.GELU, nn.SiLU, nn.LeakyReLU, nn.Identity)
# Modules whose forward works unchanged on inputs with an extra leading (agent) dimension
# once their nn.Linear layers are stacked.
STACKABLE = (QNetwork, MLPEncoder, QHead, nn.Sequential, nn.Linear, *ELEMENTWISE)


class StackedLinear(nn.Module):
    """K nn.Linear layers as one: input (K, N, in) -> (K, N, out), one batched product.
    Parameters are stacked in nn.Linear's layout (weight (K, out, in), bias (K, out))."""

    def __init__(self, layers: list[nn.Linear]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.stack([layer.weight.detach() for layer in layers]))
        self.bias = nn.Parameter(torch.stack([layer.bias.detach() for layer in layers]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))


class StackedNetwork(nn.Module):
    """K networks of the STACKABLE types computed as one; its state_dict has the keys of
    each network's, with a leading agent dimension."""

    def __init__(self, networks: list[nn.Module]) -> None:
        super().__init__()
        self.net = copy.deepcopy(networks[0])
        for name, module in networks[0].named_modules():
            if type(module) is nn.Linear:
                layers = [network.get_submodule(name) for network in networks]
                parent, _, child = name.rpartition(".")
                setattr(self.net.get_submodule(parent), child, StackedLinear(layers))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)

    def member_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        return {name: value[k].detach().clone() for name, value in self.net.state_dict().items()}


def stack_networks(networks: list[nn.Module]) -> StackedNetwork | None:
    """The K networks as batched matrix products, or None unless every module in them is
    of a STACKABLE type (exact types: a subclass may change what forward does)."""
    if all(type(m) in STACKABLE and (type(m) is not nn.Linear or m.bias is not None)
           for network in networks for m in network.modules()):
        return StackedNetwork(networks)
    return None


def numpy_q_values(ensemble: nn.Module) -> Callable[[np.ndarray], torch.Tensor] | None:
    """Q-values (K, N, n_actions) of observations (K, N, obs_dim) through NumPy, for an
    Ensemble of MLPs with a Q head (ReLU or Tanh, float32 on the CPU, flat float32
    observations); None for anything else. Each call reads the parameters' current
    memory, so optimizer steps and loaded weights show through at once."""
    net = ensemble.net
    stacked = isinstance(net, StackedNetwork)
    network = net.net if stacked else net
    if (type(network) is not QNetwork or type(network.encoder) is not MLPEncoder
            or type(network.head) is not QHead or network.encoder.obs_dims != 1
            or network.encoder.cast):
        return None
    layers = [*network.encoder.layers, network.head.out]
    linear = StackedLinear if stacked else nn.Linear
    if any(type(layer) not in (linear, nn.ReLU, nn.Tanh) for layer in layers):
        return None
    if any(p.device.type != "cpu" or p.dtype != torch.float32 for p in network.parameters()):
        return None

    def forward(obs: np.ndarray) -> torch.Tensor:
        x = np.asarray(obs, dtype=np.float32)
        if not stacked:
            x = x[0]
        for layer in layers:
            if type(layer) is nn.ReLU:
                np.maximum(x, 0.0, out=x)
            elif type(layer) is nn.Tanh:
                np.tanh(x, out=x)
            else:
                weight = layer.weight.detach().numpy()
                bias = layer.bias.detach().numpy()
                if stacked:  # (K, N, in) @ (K, in, out) + (K, 1, out)
                    x = np.matmul(x, weight.transpose(0, 2, 1))
                    x += bias[:, None, :]
                else:
                    x = x @ weight.T
                    x += bias
        return torch.from_numpy(x if stacked else x[None])

    return forward


def optimizer_step(optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    """A function that performs `optimizer.step()`: the fused Adam(W) kernel called
    directly where the optimizer is exactly torch.optim.Adam or AdamW with fused=True
    (same kernel, same state, so the same numbers and state_dict), else optimizer.step."""
    if (type(optimizer) not in (torch.optim.Adam, torch.optim.AdamW)
            or not hasattr(torch, "_fused_adam_") or not hasattr(optimizer, "_init_group")
            or any(not g.get("fused") or g.get("differentiable") or g.get("capturable")
                   for g in optimizer.param_groups)
            or len({p.device for g in optimizer.param_groups for p in g["params"]}) != 1):
        return optimizer.step
    decoupled = type(optimizer) is torch.optim.AdamW

    @torch.no_grad()
    def step() -> None:
        for group in optimizer.param_groups:
            params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps = [], [], [], [], [], []
            optimizer._init_group(group, params, grads, exp_avgs, exp_avg_sqs,
                                  max_exp_avg_sqs, steps)
            if not params:
                continue
            beta1, beta2 = group["betas"]
            kernel = (torch._fused_adamw_ if group.get("decoupled_weight_decay", decoupled)
                      else torch._fused_adam_)
            torch._foreach_add_(steps, 1)
            kernel(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps,
                   amsgrad=group["amsgrad"], lr=group["lr"], beta1=beta1, beta2=beta2,
                   weight_decay=group["weight_decay"], eps=group["eps"],
                   maximize=group["maximize"], grad_scale=None, found_inf=None)

    return step
