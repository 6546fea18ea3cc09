"""Q-networks: map an observation to one Q-value per action."""

from __future__ import annotations

import copy

import torch
from torch import nn

from dqn.config import MLPConfig

_ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
}


def build_q_network(cfg: MLPConfig, obs_dim: int, n_actions: int) -> nn.Sequential:
    """An MLP obs_dim -> hidden_sizes... -> n_actions with the configured activation."""
    layers: list[nn.Module] = []
    width = obs_dim
    for hidden in cfg.hidden_sizes:
        layers += [nn.Linear(width, hidden), _ACTIVATIONS[cfg.activation]()]
        width = hidden
    layers.append(nn.Linear(width, n_actions))
    return nn.Sequential(*layers)


class StackedLinear(nn.Module):
    """K independent linear layers applied as one batched matrix product: input
    (K, N, in_features) -> (K, N, out_features). Parameters are stacked along a leading
    agent dimension in nn.Linear's layout (weight (K, out, in), bias (K, out)), so agent
    k's slice is a plain nn.Linear's state."""

    def __init__(self, layers: list[nn.Linear]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.stack([layer.weight.detach() for layer in layers]))
        self.bias = nn.Parameter(torch.stack([layer.bias.detach() for layer in layers]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))
        return _StackedLinearFunction.apply(x, self.weight, self.bias)


class _StackedLinearFunction(torch.autograd.Function):
    """x @ W^T + b per agent, with a backward pass that orders its batched products for
    speed: autograd's own computes the weight gradient as a product whose last dimension
    is out_features, which for 2 actions takes several times longer than the same
    numbers computed the other way round."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.bmm(grad, weight)
        if ctx.needs_input_grad[1]:
            if weight.shape[2] >= weight.shape[1]:  # in >= out: (out, N) @ (N, in)
                grad_weight = torch.bmm(grad.transpose(1, 2), x)
            else:  # ((in, N) @ (N, out))^T
                grad_weight = torch.bmm(x.transpose(1, 2), grad).transpose(1, 2).contiguous()
        if ctx.needs_input_grad[2]:
            grad_bias = grad.sum(1)
        return grad_x, grad_weight, grad_bias


def stack_networks(networks: list[nn.Sequential]) -> nn.Sequential:
    """One network computing K networks of the same architecture at once, starting from
    their weights: input (K, N, obs_dim) -> (K, N, n_actions). Its state_dict() has the
    keys of each network's, with a leading agent dimension (see `agent_state_dict`)."""
    stacked: list[nn.Module] = []
    for layers in zip(*networks):
        if isinstance(layers[0], nn.Linear):
            stacked.append(StackedLinear(list(layers)))
        else:  # an activation, without parameters
            stacked.append(copy.deepcopy(layers[0]))
    return nn.Sequential(*stacked)


def agent_state_dict(stacked: nn.Module, agent: int) -> dict[str, torch.Tensor]:
    """The state_dict of agent `agent`'s network alone, as `build_q_network` makes it."""
    return {key: value[agent].clone() for key, value in stacked.state_dict().items()}
