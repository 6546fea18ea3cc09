"""Fast paths: exact shortcuts for the parts that a small network spends most time in.

Each one is used only for what it recognises and returns None (or the public API) for
anything else, so a new network or optimizer is always correct and at worst slower:

- `stack_networks`: K MLPs as batched matrix products (torch.baddbmm) instead of
  torch.func.vmap, for networks whose every module is stackable: one of torch's layers in
  TORCH_STACKABLE, or a module whose `stackable()` method says so.
- `sequential`: the layers a Q-network offers (its `as_layers()`) as one nn.Sequential
  (the same modules), which saves the Python overhead of the encoder/head nesting on each
  of the three forward passes of a gradient step.
- `numpy_q_values`: acting on the CPU through NumPy with those layers (Linear, ReLU,
  Tanh), on the parameters' own memory; for one observation torch's per-operation
  overhead is most of the cost. These three are asked of the modules, which offer them
  only for their own forward (dqn.nets.qnet.unedited): an edited forward is never skipped.
- `optimizer`: torch.optim.Adam/AdamW/RAdam whose add_param_group, state_dict and
  load_state_dict skip the wrapper that keeps torch.compile out of them: its first call
  imports torch._dynamo, 1-3 s of every process's start.
- `optimizer_step`: torch.optim.Adam/AdamW(fused=True)'s kernel called directly, without
  the per-step bookkeeping of Optimizer.step(), which costs more than the kernel on a
  small network.

The first three use public torch APIs only. The last two call torch internals
(`__wrapped__` of torch._disable_dynamo, `Optimizer._init_group`, `torch._fused_adam_`,
`torch._foreach_add_`), so they are used only on the torch releases in VERIFIED_TORCH, the
ones the tests were run against; any other release gets the public optimizer and its
`step()`. Setting the environment variable DQN_FAST_PATHS=0 turns all five off (the
public computations everywhere: to rule the fast paths out when a result looks wrong).

tests/test_fastpath.py compares each with the public computation it replaces.
"""

from __future__ import annotations

import copy
import os
from typing import Callable

import numpy as np
import torch
from torch import nn

from dqn.checks import ConfigError

SWITCH = "DQN_FAST_PATHS"
# torch releases (major.minor) whose internals the optimizer fast paths were tested against
VERIFIED_TORCH = frozenset({"2.13"})


def enabled() -> bool:
    """Whether fast paths may be used: DQN_FAST_PATHS unset, empty or 1 (the default);
    0 turns every one off. Any other value is a ConfigError."""
    value = os.environ.get(SWITCH, "").strip()
    if value not in ("", "0", "1"):
        raise ConfigError(f"{SWITCH}={value!r} is not valid: must be 0 (fast paths off) "
                          "or 1 (on, the default)")
    return value != "0"


def torch_release(version: str = torch.__version__) -> str:
    """The major.minor of a torch version string: '2.13.0+cpu' -> '2.13'."""
    return ".".join(version.split("+")[0].split(".")[:2])


def internals_verified() -> bool:
    """Whether the fast paths that call torch internals may run: fast paths are on and
    this torch is a release the tests verified them on (VERIFIED_TORCH)."""
    return enabled() and torch_release() in VERIFIED_TORCH


ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.ELU, nn.GELU, nn.SiLU, nn.LeakyReLU, nn.Identity)
# torch's own layers (exact types) whose forward works unchanged on inputs with an extra
# leading (agent) dimension once their nn.Linear layers are stacked.
TORCH_STACKABLE = (nn.Sequential, nn.Linear, *ELEMENTWISE)


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
    """K networks whose every module is `stackable`, computed as one; its state_dict has the keys of
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


def stackable(module: nn.Module) -> bool:
    """Whether `module` computes K agents at once with its nn.Linear layers stacked: one of
    torch's layers in TORCH_STACKABLE (exact types; a Linear with a bias), or a module
    whose `stackable()` says so (a subclass that edits forward does not)."""
    if type(module) in TORCH_STACKABLE:
        return type(module) is not nn.Linear or module.bias is not None
    offered = getattr(type(module), "stackable", None)
    return offered is not None and offered(module)


def stack_networks(networks: list[nn.Module]) -> StackedNetwork | None:
    """The K networks as batched matrix products, or None unless every module in them is
    `stackable`, or fast paths are off."""
    if enabled() and all(stackable(m) for network in networks for m in network.modules()):
        return StackedNetwork(networks)
    return None


def mlp_layers(net: nn.Module) -> list[nn.Module] | None:
    """The layers, in order, that a Q-network (or its K-stacked form) offers as the same
    computation as its forward followed by q_values (`as_layers()`), or None."""
    network = net.net if isinstance(net, StackedNetwork) else net
    offered = getattr(type(network), "as_layers", None)
    return None if offered is None else offered(network)


def sequential(net: nn.Module) -> nn.Sequential | None:
    """The same computation as `net` (a Q-network or StackedNetwork) as one nn.Sequential
    of its own layer modules, or None where `mlp_layers` does not apply or fast paths
    are off."""
    layers = mlp_layers(net) if enabled() else None
    return None if layers is None else nn.Sequential(*layers)


def numpy_q_values(ensemble: nn.Module) -> Callable[[np.ndarray], np.ndarray] | None:
    """Q-values (K, N, n_actions) of observations (K, N, obs_dim) through NumPy, for an
    Ensemble whose network offers its layers (`mlp_layers`: an MLP on flat float
    observations with a Q head), Linear, ReLU or Tanh, float32 on the CPU; None for
    anything else or with fast paths off. Each call reads the parameters' current memory,
    so optimizer steps and loaded weights show through at once."""
    layers = mlp_layers(ensemble.net) if enabled() else None
    stacked = isinstance(ensemble.net, StackedNetwork)
    linear = StackedLinear if stacked else nn.Linear
    if layers is None or any(type(layer) not in (linear, nn.ReLU, nn.Tanh) for layer in layers):
        return None
    if any(p.device.type != "cpu" or p.dtype != torch.float32
           for p in ensemble.net.parameters()):
        return None

    plan = [_NumpyLinear(layer, stacked) if type(layer) is linear else type(layer)
            for layer in layers]

    def forward(obs: np.ndarray) -> np.ndarray:
        x = np.asarray(obs, dtype=np.float32)
        if not stacked:
            x = x[0]
        for step in plan:
            if step is nn.ReLU:
                np.maximum(x, 0.0, out=x)
            elif step is nn.Tanh:
                np.tanh(x, out=x)
            else:
                x = step(x)
        return x if stacked else x[None]

    return forward


class _NumpyLinear:
    """A linear layer as NumPy operations on views of its parameters' memory: weights
    updated in place (optimizer steps, load_state_dict) show through at once, and the
    views are taken afresh if a parameter's storage moves (`.data = ...`)."""

    def __init__(self, layer: nn.Module, stacked: bool) -> None:
        self.weight, self.bias, self.stacked = layer.weight, layer.bias, stacked
        self.seen = (-1, -1)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        where = (self.weight.data_ptr(), self.bias.data_ptr())
        if where != self.seen:
            self.seen = where
            w, b = self.weight.detach().numpy(), self.bias.detach().numpy()
            # (K, N, in) @ (K, in, out) + (K, 1, out), or (N, in) @ (in, out) + (out,)
            self.weight_t = w.transpose(0, 2, 1) if self.stacked else w.T
            self.bias_view = b[:, None, :] if self.stacked else b
        x = np.matmul(x, self.weight_t)
        x += self.bias_view
        return x


def _undecorated(method: Callable) -> Callable:
    return getattr(method, "__wrapped__", method)


class _WithoutDynamoImport:
    add_param_group = _undecorated(torch.optim.Optimizer.add_param_group)
    state_dict = _undecorated(torch.optim.Optimizer.state_dict)
    load_state_dict = _undecorated(torch.optim.Optimizer.load_state_dict)


class Adam(_WithoutDynamoImport, torch.optim.Adam):
    """torch.optim.Adam, its methods as they are without torch._disable_dynamo."""


class AdamW(_WithoutDynamoImport, torch.optim.AdamW):
    """torch.optim.AdamW, its methods as they are without torch._disable_dynamo."""


class RAdam(_WithoutDynamoImport, torch.optim.RAdam):
    """torch.optim.RAdam, its methods as they are without torch._disable_dynamo."""


WITHOUT_DYNAMO = {torch.optim.Adam: Adam, torch.optim.AdamW: AdamW, torch.optim.RAdam: RAdam}
ADAMS = {torch.optim.Adam: Adam, torch.optim.AdamW: AdamW}


def optimizer(cls: type, params, **settings) -> torch.optim.Optimizer:
    """`cls(params, **settings)`; for Adam, AdamW and RAdam the subclass that never
    imports torch._dynamo (same update, same state_dict) where `internals_verified()`."""
    if not internals_verified():
        return cls(params, **settings)
    return WITHOUT_DYNAMO.get(cls, cls)(params, **settings)


def optimizer_step(optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    """A function that performs `optimizer.step()`: the fused Adam(W) kernel called
    directly where the optimizer is exactly torch.optim.Adam or AdamW (or their subclasses
    above) with fused=True (same kernel, same state, so the same numbers and state_dict),
    else optimizer.step (always where `internals_verified()` is false)."""
    if (not internals_verified() or type(optimizer) not in (*ADAMS, *ADAMS.values())
            or not hasattr(torch, "_fused_adam_") or not hasattr(optimizer, "_init_group")
            or any(not g.get("fused") or g.get("differentiable") or g.get("capturable")
                   for g in optimizer.param_groups)
            or len({p.device for g in optimizer.param_groups for p in g["params"]}) != 1):
        return optimizer.step
    decoupled = isinstance(optimizer, torch.optim.AdamW)

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
