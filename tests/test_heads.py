"""Heads as a config group: every registered network x head computes the same through its
fast forms as through its own forward, an edited forward is never bypassed, old configs
and overrides find their new spelling."""

from __future__ import annotations

import copy
import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch

from dqn.agent import Agents
from dqn.checks import ConfigError
from dqn.config import config_from_dict, stored_config, validate, with_head_group
from dqn.interfaces import Head
from dqn.nets import build_q_network
from dqn.nets.encoders import MinAtarCNNConfig, MLPConfig, NatureCNNConfig
from dqn.nets.heads import QConfig, QHead
from dqn.nets.qnet import QNetwork
from dqn.optim import AdamConfig
from dqn.options import options
from dqn.targets import HardTargetConfig
from tests.conftest import compose_config, run_python

NETWORKS = {
    "mlp": (MLPConfig(hidden_sizes=[8, 8]), gym.spaces.Box(-1, 1, (3,), np.float32)),
    "nature_cnn": (NatureCNNConfig(features=16), gym.spaces.Box(0, 255, (4, 36, 36), np.uint8)),
    "minatar_cnn": (MinAtarCNNConfig(channels=4, features=16),
                    gym.spaces.Box(0, 1, (3, 10, 10), bool)),
}
VARIANTS = {"plain": {}, "dueling": {"dueling": True}, "noisy": {"noisy": True},
            "dueling noisy": {"dueling": True, "noisy": True}}
N_ACTIONS = 3


def head_configs() -> dict[str, object]:
    """Every registered head with each variant of the settings every head has."""
    return {f"{name} {variant}": dataclasses.replace(entry.schema(), **settings)
            for name, entry in sorted(options("head").items())
            for variant, settings in VARIANTS.items()}


def observations(space: gym.spaces.Box, *lead: int) -> torch.Tensor:
    rng = np.random.default_rng(0)
    if space.dtype == np.uint8:
        return torch.from_numpy(rng.integers(0, 256, (*lead, *space.shape), np.uint8))
    if space.dtype == bool:
        return torch.from_numpy(rng.random((*lead, *space.shape)) < 0.3)
    return torch.from_numpy(rng.normal(size=(*lead, *space.shape)).astype(np.float32))


def agents_of(networks: list[QNetwork]) -> Agents:
    return Agents(networks, AdamConfig(), HardTargetConfig(), n_actions=N_ACTIONS)


@pytest.mark.parametrize("head", head_configs())
@pytest.mark.parametrize("network", NETWORKS)
@pytest.mark.parametrize("k", [1, 2])
def test_every_fast_form_equals_the_module_s_own_forward(network, head, k):
    """Training (the Ensemble's forward: one Sequential, K stacked products or vmap) and
    acting (NumPy or torch) give what each network's own forward and q_values give; a
    head that samples (head=iqn) gets the same draws, fixed, in both."""
    cfg, space = NETWORKS[network]
    networks = []
    for seed in range(k):
        torch.manual_seed(seed)
        networks.append(build_q_network(cfg, space, N_ACTIONS, head_configs()[head]))
    own = [copy.deepcopy(n) for n in networks]
    obs = observations(space, k, 5)
    agents = agents_of(networks)
    agents.online.reset_noise([torch.Generator().manual_seed(j) for j in range(k)])
    for j, net in enumerate(own):  # the same noise in the plain networks
        net.load_state_dict(agents.online.member_state_dict(j))
    draws = agents.draws("online", 5)  # None for a head that draws nothing
    assert (draws is None) == (type(agents.head).sample is Head.sample)

    def own_pass(j: int, net: QNetwork, fixed: torch.Tensor | None) -> torch.Tensor:
        return net(obs[j]) if fixed is None else net(obs[j], fixed[j])

    with torch.no_grad():
        expected = torch.stack([own_pass(j, net, draws) for j, net in enumerate(own)])
        torch.testing.assert_close(agents.online(obs, draws), expected)
        for net in own:  # acting as evaluation does: noisy layers at their mean weights
            net.eval()
        acting = [torch.Generator().set_state(g.get_state()) for g in agents.eval_noise]
        acting_draws = (None if draws is None else
                        torch.stack([agents.head.sample("act", 5, g) for g in acting]))
        q_expected = torch.stack([net.q_values(own_pass(j, net, acting_draws))
                                  for j, net in enumerate(own)])
    agents.acting(False)
    torch.testing.assert_close(torch.from_numpy(agents.q_values(obs.numpy())), q_expected)


class ShiftedQHead(QHead):
    """A contributor's edit of the Q head: every Q-value one higher."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return super().forward(features) + 1.0


class ShiftedNetwork(QNetwork):
    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return super().forward(obs) + 1.0


@pytest.mark.parametrize("edited", ["head", "network"])
@pytest.mark.parametrize("k", [1, 2])
def test_an_edited_forward_is_never_bypassed(edited, k):
    cfg, space = NETWORKS["mlp"]
    networks, plain = [], []
    for seed in range(k):
        torch.manual_seed(seed)
        net = build_q_network(cfg, space, N_ACTIONS)
        plain.append(copy.deepcopy(net))
        if edited == "head":
            head = ShiftedQHead(QConfig(), net.encoder.out_features, N_ACTIONS)
            head.load_state_dict(net.head.state_dict())
            net.head = head
        else:
            net = ShiftedNetwork(net.encoder, net.head)
        networks.append(net)
    agents = agents_of(networks)
    obs = observations(space, k, 4)
    with torch.no_grad():
        shifted = torch.stack([n(obs[j]) for j, n in enumerate(plain)]) + 1.0
        torch.testing.assert_close(agents.online(obs), shifted)  # training
    torch.testing.assert_close(torch.from_numpy(agents.q_values(obs.numpy())), shifted)  # acting


# --- configs and overrides from before heads were a group ---------------------------------
def old_stored(*overrides: str) -> dict:
    """A stored config as checkpoints held it when the head lived in the network group."""
    stored = stored_config(validate(compose_config(*overrides)))
    head, option = stored.pop("head"), stored["options"].pop("head")
    stored["choices"].pop("head")
    atoms = head.pop("atoms", 1)
    stored["network"].update(head=("dueling" if head.pop("dueling") else "q"), atoms=atoms)
    stored["network"].update(head)
    assert option in ("q", "c51")
    return stored


@pytest.mark.parametrize("overrides, option", [
    ([], "q"), (["head=dueling", "head.noisy=true"], "q"),
    (["experiment=acrobot", "rainbow=full"], "c51")])
def test_a_config_stored_before_heads_were_a_group_is_read_as_the_same_run(overrides, option):
    now = validate(compose_config(*overrides))
    old = old_stored(*overrides)
    assert "head" not in old and "atoms" in old["network"]
    migrated = with_head_group(old)
    assert migrated["options"]["head"] == option
    assert config_from_dict(old) == now


@pytest.mark.parametrize("old, new", [
    ("network.atoms=51", "network.atoms moved to the head group: use head=c51 head.atoms=51"),
    ("network.head=dueling", "use head=dueling (or head.dueling=true on any head)"),
    ("network.noisy=true", "use head.noisy=true"),
    ("network.v_min=0", "use head.v_min=0")])
def test_an_old_head_override_names_its_new_spelling(tmp_path, old, new):
    result = run_python(tmp_path, "-m", "dqn.train", old)
    assert result.returncode == 2
    assert new in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_any_head_can_be_dueling_and_a_distributional_one_refuses_a_rollout():
    config = validate(compose_config("head=c51", "head.dueling=true"))
    assert config.head.dueling and config.head.atoms == 51
    with pytest.raises(ConfigError) as error:
        validate(compose_config("experiment=pqn", "head=c51"))
    message = str(error.value)
    assert "head=c51 cannot learn from buffer=rollout" in message and "\n" not in message


# --- what every head must do end to end (each head's own test calls this) -------------------
def trains_resumes_evaluates_records_and_sweeps(tmp_path, *head: str) -> None:
    """`head` (overrides choosing a head) with dueling, 3-step prioritized replay: a killed
    run resumes to the numbers of the uninterrupted one; two seeds in one process train,
    record a video and are evaluated by dqn.evaluate; a sweep over seeds completes."""
    from tests.conftest import TINY_OVERRIDES
    from tests.test_cli import dqn_train
    from tests.test_resume import RUN, assert_same_run, finish, kill_and_resume, start

    family = [*head, "head.dueling=true", "buffer=prioritized", "buffer.n_step=3"]
    args = [*(a for a in RUN if not a.startswith("train.total_steps=")),
            "train.total_steps=2000", *family]
    code, output = finish(start(tmp_path, *args, "hydra.run.dir=reference"))
    assert code == 0, output
    assert "resumed" in kill_and_resume(tmp_path, args, "run", 1000)
    assert_same_run(tmp_path / "run", tmp_path / "reference")
    result = dqn_train(tmp_path, *TINY_OVERRIDES, *family, "num_seeds=2", "video.episodes=1",
                       "video.max_steps=20", "logger=none", "hydra.run.dir=job")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "job" / "seed_1" / "videos" / "best-episode-0.mp4").stat().st_size > 0
    evaluated = run_python(tmp_path, "-m", "dqn.evaluate", "checkpoint=job/seed_1",
                           "episodes=3")
    assert evaluated.returncode == 0, evaluated.stderr
    sweep = dqn_train(tmp_path, "-m", "seed=0,1", *TINY_OVERRIDES, *family, "logger=none",
                      "hydra.sweep.dir=sweep")
    assert sweep.returncode == 0, sweep.stderr
    assert "| (all jobs alike) | 2 | 0 |" in (tmp_path / "sweep" / "summary.md").read_text()


def test_c51_with_dueling_and_prioritized_replay_works_end_to_end(tmp_path):
    trains_resumes_evaluates_records_and_sweeps(tmp_path, "head=c51", "head.v_min=0",
                                                "head.v_max=50")
