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
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))


class StackedMLP(nn.Sequential):
    """StackedLinear layers and activations. With ReLU or Tanh activations, a forward
    pass that needs gradients runs as one autograd node with a hand-written backward
    pass (see _StackedMLPFunction); otherwise layer by layer through autograd."""

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__(*layers)
        self.fused = all(type(m) in (StackedLinear, nn.ReLU, nn.Tanh) for m in self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fused:
            return super().forward(x)
        if torch.is_grad_enabled():
            return _StackedMLPFunction.apply(x, tuple(type(m) for m in self),
                                             *(p for m in self for p in m.parameters()))
        for layer in self:  # activations in place: each one follows a fresh layer output
            if type(layer) is StackedLinear:
                x = layer(x)
            else:
                x = torch.relu_(x) if type(layer) is nn.ReLU else torch.tanh_(x)
        return x


class _StackedMLPFunction(torch.autograd.Function):
    """The forward and backward pass of a StackedMLP as one autograd node.

    Autograd would record about a dozen nodes per pass, and it computes the gradient of
    each weight as a batched product whose last dimension is out_features: for 2 actions
    that product takes several times longer than the same numbers computed the other way
    round. This backward pass orders every product so that its last dimension is the
    wider one, and computes the gradient of the input only if asked for.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, kinds: tuple[type, ...], *params: torch.Tensor):
        inputs, outputs = [], []  # each linear layer's input; each activation's output
        weights = params[0::2]
        h, i = x, 0
        for kind in kinds:
            if kind is StackedLinear:
                inputs.append(h)
                h = torch.baddbmm(params[2 * i + 1].unsqueeze(1), h, weights[i].transpose(1, 2))
                i += 1
            else:
                h = torch.relu_(h) if kind is nn.ReLU else torch.tanh_(h)
                outputs.append(h)
        ctx.kinds = kinds
        ctx.save_for_backward(*inputs, *outputs, *weights)
        return h

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        kinds = ctx.kinds
        n = sum(kind is StackedLinear for kind in kinds)
        saved = ctx.saved_tensors
        inputs, outputs, weights = saved[:n], saved[n:len(saved) - n], saved[len(saved) - n:]
        grads: list[torch.Tensor] = []
        i, j = n, len(outputs)
        for kind in reversed(kinds):
            if kind is StackedLinear:
                i -= 1
                x, weight = inputs[i], weights[i]
                if weight.shape[2] >= weight.shape[1]:  # in >= out: (out, N) @ (N, in)
                    grad_weight = torch.bmm(grad.transpose(1, 2), x)
                else:  # ((in, N) @ (N, out))^T
                    grad_weight = torch.bmm(x.transpose(1, 2), grad).transpose(1, 2)
                grads[:0] = [grad_weight.contiguous(), grad.sum(1)]
                if i or ctx.needs_input_grad[0]:
                    grad = torch.bmm(grad, weight)
            else:
                j -= 1
                h = outputs[j]
                if kind is nn.ReLU:
                    grad = torch.ops.aten.threshold_backward(grad, h, 0)
                else:
                    grad = grad * (1 - h * h)
        return (grad if ctx.needs_input_grad[0] else None, None, *grads)


def stack_networks(networks: list[nn.Sequential]) -> StackedMLP:
    """One network computing K networks of the same architecture at once, starting from
    their weights: input (K, N, obs_dim) -> (K, N, n_actions). Its state_dict() has the
    keys of each network's, with a leading agent dimension (see `agent_state_dict`)."""
    stacked: list[nn.Module] = []
    for layers in zip(*networks):
        if isinstance(layers[0], nn.Linear):
            stacked.append(StackedLinear(list(layers)))
        else:  # an activation, without parameters
            stacked.append(copy.deepcopy(layers[0]))
    return StackedMLP(*stacked)


def agent_state_dict(stacked: nn.Module, agent: int) -> dict[str, torch.Tensor]:
    """The state_dict of agent `agent`'s network alone, as `build_q_network` makes it."""
    return {key: value[agent].clone() for key, value in stacked.state_dict().items()}
