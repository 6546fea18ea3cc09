"""dqn.fastpath: each shortcut computes what the public computation it replaces computes,
and switches itself off for what it does not know."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from dqn.ensemble import Ensemble, VmapStack
from dqn.fastpath import StackedNetwork, numpy_q_values, optimizer_step, stack_networks
from dqn.nets import build_q_network
from dqn.nets.encoders import MLPConfig
from dqn.optim import AdamConfig, AdamWConfig, adam, adamw

SPACE = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)


def networks(count: int, activation: str = "relu", space=SPACE) -> list[nn.Module]:
    made = []
    for seed in range(count):
        torch.manual_seed(seed)
        made.append(build_q_network(MLPConfig(hidden_sizes=[16, 8], activation=activation),
                                    space, 3))
    return made


@pytest.mark.parametrize("count", [1, 3])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_numpy_acting_equals_the_torch_forward(count, activation):
    ensemble = Ensemble(networks(count, activation))
    q_values = numpy_q_values(ensemble)
    assert q_values is not None
    obs = np.random.default_rng(0).normal(size=(count, 5, 4)).astype(np.float32)
    with torch.no_grad():
        expected = ensemble(torch.from_numpy(obs))
    torch.testing.assert_close(torch.from_numpy(q_values(obs)), expected, rtol=1e-5, atol=1e-6)
    # Weights changed in place (an optimizer step) and replaced (load_state_dict) show at once.
    with torch.no_grad():
        for p in ensemble.parameters():
            p.mul_(-2.0)
        expected = ensemble(torch.from_numpy(obs))
    torch.testing.assert_close(torch.from_numpy(q_values(obs)), expected, rtol=1e-5, atol=1e-6)
    ensemble.load_weights(Ensemble(networks(count, activation)[::-1]).weights())
    with torch.no_grad():
        expected = ensemble(torch.from_numpy(obs))
    torch.testing.assert_close(torch.from_numpy(q_values(obs)), expected, rtol=1e-5, atol=1e-6)


def test_numpy_acting_switches_off_for_what_it_does_not_know():
    assert numpy_q_values(Ensemble(networks(1, "gelu"))) is None  # activation
    image = gym.spaces.Box(0, 255, (2, 3, 3), np.uint8)
    assert numpy_q_values(Ensemble(networks(1, space=image))) is None  # cast and flatten
    ensemble = Ensemble(networks(2))
    ensemble.net = VmapStack(networks(2))
    assert numpy_q_values(ensemble) is None  # not the stacked fast path


def test_stacked_networks_equal_vmap_forward_and_gradients():
    made = networks(3, "tanh")
    stacked, vmapped = stack_networks(copy.deepcopy(made)), VmapStack(copy.deepcopy(made))
    assert type(stacked) is StackedNetwork
    obs = torch.randn(3, 7, 4)
    out_stacked, out_vmapped = stacked(obs), vmapped(obs)
    torch.testing.assert_close(out_stacked, out_vmapped)
    out_stacked.square().sum().backward()
    out_vmapped.square().sum().backward()
    for k in range(3):
        grads = {name: p.grad[k] for name, p in stacked.net.named_parameters()}
        for name in vmapped.param_names:
            torch.testing.assert_close(grads[name], getattr(vmapped, vmapped.names[name]).grad[k])


def test_stacking_switches_off_for_unknown_modules():
    class Scaled(nn.Module):  # a forward the fast path cannot vouch for
        def forward(self, x):
            return x.view(x.shape[0], -1) * 2

    made = networks(2)
    for network in made:
        network.encoder.layers.append(Scaled())
    assert stack_networks(made) is None
    assert type(Ensemble(made).net) is VmapStack


@pytest.mark.parametrize("cfg,make", [(AdamConfig(lr=1e-2), adam),
                                      (AdamWConfig(lr=1e-2, amsgrad=True), adamw)])
def test_direct_fused_step_matches_torch_optim(cfg, make):
    torch.manual_seed(0)
    ours_net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    torch_net = copy.deepcopy(ours_net)
    ours = make(cfg, ours_net.parameters())
    step = optimizer_step(ours)
    assert step != ours.step  # the direct kernel call
    reference = make(cfg, torch_net.parameters())
    x = torch.randn(16, 4)
    for _ in range(5):
        for net, optimizer, do_step in ((ours_net, ours, step),
                                        (torch_net, reference, reference.step)):
            optimizer.zero_grad()
            net(x).pow(2).mean().backward()
            do_step()
    for a, b in zip(ours_net.parameters(), torch_net.parameters()):
        assert torch.equal(a, b)
    assert str(ours.state_dict()) == str(reference.state_dict())


def test_direct_step_switches_off_for_other_optimizers():
    params = [nn.Parameter(torch.zeros(3))]
    for optimizer in (torch.optim.Adam(params, foreach=True), torch.optim.SGD(params, lr=0.1),
                      torch.optim.RMSprop(params)):
        assert optimizer_step(optimizer) == optimizer.step
