"""dqn.fastpath: each shortcut computes what the public computation it replaces computes,
and switches itself off for what it does not know, for a torch release it was not verified
on (the shortcuts that call torch internals) and when DQN_FAST_PATHS=0 (all of them)."""

from __future__ import annotations

import copy
import json
import re

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from dqn import fastpath
from dqn.checks import ConfigError
from dqn.ensemble import Ensemble, VmapStack
from dqn.fastpath import StackedNetwork, numpy_q_values, optimizer_step, sequential, stack_networks
from dqn.nets import build_q_network
from dqn.nets.encoders import MLPConfig
from dqn.optim import (
    AdamConfig,
    AdamWConfig,
    RAdamConfig,
    RMSpropConfig,
    adam,
    adamw,
    radam,
    rmsprop,
)
from tests.conftest import REPO, TINY_OVERRIDES, run_python

# The direct fused step calls torch internals: only on the releases the tests verified.
needs_verified_torch = pytest.mark.skipif(
    fastpath.torch_release() not in fastpath.VERIFIED_TORCH,
    reason=f"torch {torch.__version__} is not in fastpath.VERIFIED_TORCH: the public "
           "optimizer step is used")


@pytest.fixture(autouse=True)
def fast_paths_on(monkeypatch):
    """Each test here sets the switch itself (whatever the shell running the suite set)."""
    monkeypatch.delenv(fastpath.SWITCH, raising=False)

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


@needs_verified_torch
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


def trained(make, cfg, steps: int = 20) -> tuple[nn.Module, torch.optim.Optimizer]:
    """A small network after `steps` optimizer steps (as the agent takes them) on a fixed
    regression target, from the same start whatever the optimizer path."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    optimizer = make(cfg, net.parameters())
    step = optimizer_step(optimizer)
    x, y = torch.randn(32, 4), torch.randn(32, 3)
    for _ in range(steps):
        for p in net.parameters():
            p.grad = None
        (net(x) - y).pow(2).mean().backward()
        step()
    return net, optimizer


@pytest.mark.parametrize("make,cfg", [(adam, AdamConfig(lr=1e-2)),
                                      (adamw, AdamWConfig(lr=1e-2, amsgrad=True)),
                                      (radam, RAdamConfig(lr=1e-2, weight_decay=0.1)),
                                      (rmsprop, RMSpropConfig(lr=1e-3))])
def test_fast_and_public_optimizers_give_the_same_parameters(monkeypatch, make, cfg):
    fast_net, fast = trained(make, cfg)
    monkeypatch.setenv(fastpath.SWITCH, "0")
    public_net, public = trained(make, cfg)
    assert type(public).__module__.startswith("torch.optim")  # torch's own class
    for a, b in zip(fast_net.parameters(), public_net.parameters()):
        assert torch.equal(a, b)  # the same kernels: bitwise
    assert str(fast.state_dict()) == str(public.state_dict())


def test_switch_turns_every_fast_path_off(monkeypatch):
    monkeypatch.setenv(fastpath.SWITCH, "0")
    assert stack_networks(networks(2)) is None
    assert type(Ensemble(networks(2)).net) is VmapStack
    assert sequential(networks(1)[0]) is None
    assert numpy_q_values(Ensemble(networks(1))) is None
    optimizer = adam(AdamConfig(), networks(1)[0].parameters())
    assert type(optimizer) is torch.optim.Adam
    assert optimizer_step(optimizer) == optimizer.step


def test_an_unverified_torch_release_gets_the_public_optimizer(monkeypatch):
    assert fastpath.torch_release("2.13.0+cpu") == "2.13"
    assert fastpath.torch_release("2.11.0a0+git1234") == "2.11"
    monkeypatch.setattr(fastpath, "VERIFIED_TORCH", frozenset())
    for make, cfg in ((adam, AdamConfig()), (adamw, AdamWConfig()), (radam, RAdamConfig())):
        optimizer = make(cfg, networks(1)[0].parameters())
        assert type(optimizer).__module__.startswith("torch.optim")
        assert optimizer_step(optimizer) == optimizer.step
    # The fast paths built on public APIs only stay on.
    assert numpy_q_values(Ensemble(networks(1))) is not None
    assert type(stack_networks(networks(2))) is StackedNetwork


def test_install_admits_any_current_torch_and_pins_a_verified_one_for_the_cpu():
    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    (torch_req,) = [r for r in map(Requirement, project["dependencies"]) if r.name == "torch"]
    # a GPU machine's torch (2.11, 2.12) is kept; 2.3 lacks the fused Adam on the CPU
    assert all(torch_req.specifier.contains(v, prereleases=True)
               for v in ("2.4.0", "2.11.0+cu130", "2.12.1", "2.13.0+cpu", "2.15.0"))
    assert not torch_req.specifier.contains("2.3.1")
    (pin,) = project["optional-dependencies"]["cpu"]
    assert re.fullmatch(r"torch==(\d+\.\d+)\.\*", pin)[1] in fastpath.VERIFIED_TORCH


@pytest.mark.parametrize("value", ["off", "false", "2"])
def test_switch_refuses_values_it_does_not_know(monkeypatch, value):
    monkeypatch.setenv(fastpath.SWITCH, value)
    with pytest.raises(ConfigError, match=f"DQN_FAST_PATHS='{value}' is not valid: must be 0"):
        fastpath.enabled()


def test_a_run_with_an_unknown_switch_value_is_refused_before_it_starts(tmp_path):
    refused = run_python(tmp_path, "-m", "dqn.train", "logger=none", env={fastpath.SWITCH: "off"})
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.returncode == 2 and len(lines) == 1, refused.stderr
    assert "DQN_FAST_PATHS='off' is not valid" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_training_with_fast_paths_off(tmp_path):
    run = tmp_path / "run"
    done = run_python(tmp_path, "-m", "dqn.train", *TINY_OVERRIDES, "logger=none",
                      f"hydra.run.dir={run}", env={fastpath.SWITCH: "0"})
    assert done.returncode == 0, done.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["env_steps"] == 600
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    # one gradient step per env step from learning_starts on, each one an optimizer step
    assert last["gradient_steps"] > 500
    optimizer = last["state"]["agents"]["optimizer"]
    assert ([int(state["step"]) for state in optimizer["state"].values()]
            == [last["gradient_steps"]] * 6)
    assert all(torch.isfinite(value).all() and value.abs().sum() > 0
               for value in last["model"].values())


def test_an_unknown_switch_value_stops_training_before_it_starts(tmp_path):
    run = tmp_path / "run"
    done = run_python(tmp_path, "-m", "dqn.train", *TINY_OVERRIDES, "logger=none",
                      f"hydra.run.dir={run}", env={fastpath.SWITCH: "off"})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "Config error: DQN_FAST_PATHS='off' is not valid: must be 0 (fast paths off) "
        "or 1 (on, the default)"]
    assert not (run / "checkpoints").exists()
