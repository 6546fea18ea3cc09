"""num_seeds=K: K agents trained in one process as one batched computation must be K
ordinary agents: the same update, the same replay, the same results as K separate runs."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import dqn.ensemble
import dqn.loop
from dqn.agent import Agents
from dqn.config import stored_config, validate
from dqn.ensemble import VmapStack
from dqn.fastpath import StackedNetwork
from dqn.nets import build_q_network
from dqn.nets.encoders import MLPConfig
from dqn.nets.heads import C51Config
from dqn.optim import AdamConfig
from dqn.replay import Batch
from dqn.replay.uniform import UniformBufferConfig, UniformReplay
from dqn.run.policy import TrainedPolicy
from dqn.targets import HardTargetConfig, SoftTargetConfig
from tests.conftest import TINY_OVERRIDES, compose_config, run_python
from tests.dashboard import dashboard
from tests.test_cli import CURVES, SMALL_RUN, dqn_train

K = 3
SPACE = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)


def make_agent(networks, target, first: int = 0) -> Agents:
    agents = range(first, first + len(networks))
    return Agents(networks, AdamConfig(lr=1e-2, clip_grad_norm=0.5), target,
                  n_actions=2, noise=[torch.Generator().manual_seed(k) for k in agents])


@pytest.fixture(params=["batched products", "vmap"])
def stacking(request, monkeypatch):
    """Both ways K networks run as one: dqn.fastpath's stacked MLP, and torch.func.vmap
    (what any other network gets)."""
    if request.param == "vmap":
        monkeypatch.setattr(dqn.ensemble, "stack_networks", lambda networks: None)
    return VmapStack if request.param == "vmap" else StackedNetwork


NETWORKS = {"mlp": (MLPConfig(hidden_sizes=[32, 32]), None),
            "dueling c51": (MLPConfig(hidden_sizes=[16]),
                            C51Config(dueling=True, atoms=11, v_min=-3, v_max=3)),
            "rainbow": (MLPConfig(hidden_sizes=[16]),
                        C51Config(dueling=True, atoms=11, v_min=-3, v_max=3, noisy=True))}


@pytest.mark.parametrize("network", NETWORKS)
@pytest.mark.parametrize("target", [HardTargetConfig(2), SoftTargetConfig(0.1)],
                         ids=["hard", "soft"])
def test_stacked_update_is_each_agents_own_update(target, stacking, network):
    networks = []
    for seed in range(K):
        torch.manual_seed(seed)
        networks.append(build_q_network(NETWORKS[network][0], SPACE, 2, NETWORKS[network][1]))
    separate = [make_agent([copy.deepcopy(n)], target, first=k) for k, n in enumerate(networks)]
    stacked = make_agent(networks, target)
    if network == "rainbow":  # noisy layers: only torch.func.vmap knows them
        stacking = VmapStack
    assert type(stacked.online.net) is stacking
    rng = np.random.default_rng(0)
    for _ in range(6):
        batches = [Batch(torch.from_numpy(rng.normal(size=(1, 16, 4)).astype(np.float32)),
                         torch.from_numpy(rng.integers(0, 2, (1, 16))),
                         torch.from_numpy(rng.normal(size=(1, 16)).astype(np.float32)),
                         torch.from_numpy(rng.normal(size=(1, 16, 4)).astype(np.float32)),
                         torch.from_numpy(0.99 * (rng.random((1, 16)) > 0.2)).float(),
                         torch.from_numpy(rng.random((1, 16)).astype(np.float32)))
                   for _ in range(K)]
        alone = [agent.update(batch) for agent, batch in zip(separate, batches)]
        fields = zip(*(batch[:6] for batch in batches))
        together = stacked.update(Batch(*(torch.cat(field) for field in fields)))
        for k in range(K):  # losses and mean Q per agent
            assert together.losses[k].item() == pytest.approx(alone[k].losses.item(), rel=1e-5)
            assert together.q_means[k].item() == pytest.approx(alone[k].q_means.item(), rel=1e-5)
    for k, agent in enumerate(separate):
        for name, value in agent.online.member_state_dict(0).items():
            torch.testing.assert_close(stacked.online.member_state_dict(k)[name], value)
        for name, value in agent.target.member_state_dict(0).items():
            torch.testing.assert_close(stacked.target.member_state_dict(k)[name], value)
    obs = np.random.default_rng(1).normal(size=(K, 5, 4)).astype(np.float32)
    for agent in (stacked, *separate):
        agent.acting(explore=True)
    greedy = stacked.greedy(obs)  # noisy networks: each agent's own noise
    assert [agent.greedy(obs[k][None])[0].tolist()
            for k, agent in enumerate(separate)] == greedy.tolist()


def test_stacked_buffer_samples_each_agents_own_transitions():
    cfg = UniformBufferConfig(capacity=50, batch_size=8)
    separate = [UniformReplay(cfg, SPACE, [np.random.default_rng(k)], 0.99, "cpu")
                for k in range(K)]
    stacked = UniformReplay(cfg, SPACE, [np.random.default_rng(k) for k in range(K)], 0.99,
                            "cpu")
    data = np.random.default_rng(7)
    for _ in range(70):  # wraps around
        obs, next_obs = data.normal(size=(K, 4)), data.normal(size=(K, 4))
        actions, rewards = data.integers(0, 2, K), data.normal(size=K)
        terminated, truncated = data.random(K) < 0.1, data.random(K) < 0.1
        stacked.add(obs, actions, rewards, next_obs, terminated, truncated)
        for k, buffer in enumerate(separate):
            buffer.add(obs[k:k + 1], actions[k:k + 1], rewards[k:k + 1], next_obs[k:k + 1],
                       terminated[k:k + 1], truncated[k:k + 1])
    rounds = [list(stacked.sample_batches(8, 3)), [stacked.sample(8)]]
    for k, buffer in enumerate(separate):
        alone = [list(buffer.sample_batches(8, 3)), [buffer.sample(8)]]
        for batch_together, batch_alone in zip(sum(rounds, []), sum(alone, [])):
            for field_together, field_alone in zip(batch_together[:5], batch_alone[:5]):
                torch.testing.assert_close(field_together[k], field_alone[0])


def train_in_process(directory: Path, *overrides: str) -> tuple[dict, Path]:
    cfg = compose_config("logger=none", *overrides)
    config = validate(cfg)
    directory.mkdir()
    return dqn.loop.train(config, directory, directory.name, stored_config(config)), directory


def episodes(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "episodes.csv").open() as file:
        return list(csv.DictReader(file))


def final_mean(run_dir: Path) -> float:
    return json.loads((run_dir / "summary.json").read_text())["final_eval"]["mean"]


def test_seeds_together_play_the_episodes_of_separate_runs(tmp_path):
    """Three seeds together and one by one. Each agent draws the random numbers its single
    run draws (initial weights, actions, replay, evaluation episodes), so it plays the very
    same episodes until floating-point rounding of the batched arithmetic flips a greedy
    action (after about 4-5k env steps here; the comparison stops at 2,000, which includes
    about 1,000 gradient steps). That results then agree statistically is checked over 10
    seeds in the slow suite."""
    seeds, budget = 3, "train.total_steps=2500"
    _, together = train_in_process(tmp_path / "together", f"num_seeds={seeds}", budget)
    for seed in range(seeds):
        _, alone = train_in_process(tmp_path / f"seed{seed}", f"seed={seed}", budget)
        member = together / f"seed_{seed}"
        first = [e for e in episodes(alone) if int(e["env_step"]) <= 2000]
        assert len(first) > 20
        assert episodes(member)[:len(first)] == first
        summary = json.loads((member / "summary.json").read_text())
        assert summary["seed"] == seed and summary["status"] == "completed"


@pytest.mark.slow
def test_ten_seeds_together_match_ten_separate_runs(tmp_path):
    _, together = train_in_process(tmp_path / "together", "num_seeds=10")
    batched = [final_mean(together / f"seed_{seed}") for seed in range(10)]
    single = [final_mean(train_in_process(tmp_path / f"seed{seed}", f"seed={seed}")[1])
              for seed in range(10)]
    print("together:", batched, "\nalone:", single)
    solved = sum(m >= 475 for m in batched), sum(m >= 475 for m in single)
    assert solved[0] >= 9 and abs(solved[0] - solved[1]) <= 1
    assert abs(np.mean(batched) - np.mean(single)) <= 0.05 * np.mean(single)


def test_num_seeds_from_the_command_line(tmp_path):
    result = dqn_train(tmp_path, *SMALL_RUN, "num_seeds=2", "seed=4", "hydra.run.dir=job")
    assert result.returncode == 0, result.stderr
    names = []
    for seed in (4, 5):
        member = tmp_path / "job" / f"seed_{seed}"
        summary = json.loads((member / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["seed"] == seed
        # the job's overrides with the agent's seed in place of the job's
        assert summary["run_name"].endswith(f",num_seeds=2,train.total_steps=2000,seed={seed}")
        names.append(summary["run_name"])
        assert TrainedPolicy(member / "checkpoints" / "best.pt").checkpoint["config"]["seed"] \
            == seed
        assert len(episodes(member)) > 10
        assert (member / ".hydra" / "overrides.yaml").read_text().splitlines()[-1] == \
            f"- seed={seed}"
    evaluated = run_python(tmp_path, "-m", "dqn.evaluate", "checkpoint=job/seed_5", "episodes=3")
    assert evaluated.returncode == 0, evaluated.stderr
    with dashboard(tmp_path / "outputs" / "swanlog") as board:
        experiments = board.experiments()
        assert sorted(e["name"] for e in experiments) == names
        for experiment in experiments:
            assert experiment["status"] == 1
            assert CURVES <= board.metric_keys(experiment["id"])
            assert len(board.series(experiment["id"], "train/epsilon")) == 4  # 2000 / 500
    for folder, reason in (("job", "already completed"), ("job/seed_5", "already completed")):
        again = dqn_train(tmp_path, f"resume={folder}")
        assert again.returncode == 2 and reason in again.stderr
        assert len(again.stderr.strip().splitlines()) == 1


def test_an_agent_folder_that_cannot_hold_checkpoints_fails_before_training(tmp_path):
    (tmp_path / "job" / "seed_1").mkdir(parents=True)
    (tmp_path / "job" / "seed_1" / "checkpoints").write_text("a file where a folder must go")
    result = dqn_train(tmp_path, "num_seeds=2", "logger=none", "hydra.run.dir=job")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "cannot write checkpoints to" in result.stderr.strip().splitlines()[-1]
    assert "seed_1" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "job" / "seed_0" / "metrics.csv").exists()


def test_sweep_with_seeds_per_job(tmp_path):
    result = dqn_train(tmp_path, "-m", "num_seeds=2", "target=hard,soft", "logger=none",
                       "hydra.sweep.dir=sweep", *TINY_OVERRIDES)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("sweep: 4 succeeded, 0 failed")
    with (tmp_path / "sweep" / "summary.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert sorted((r["job"].split("_")[0], r["seed"]) for r in rows) == \
        [("0", "0"), ("0", "1"), ("1", "0"), ("1", "1")]
    assert {r["status"] for r in rows} == {"completed"}
    table = (tmp_path / "sweep" / "summary.md").read_text()
    assert "| target=hard | 2 | 0 |" in table and "| target=soft | 2 | 0 |" in table


def test_diverging_agents_stop_with_one_line_and_failed_summaries(tmp_path):
    result = dqn_train(tmp_path, *TINY_OVERRIDES, "num_seeds=2", "logger=none",
                       "train.loss=mse", "optimizer.lr=1e30", "hydra.run.dir=job")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        "Training stopped: 2 of 2 agents stopped. seed 0:")
    assert "Traceback" not in result.stderr
    for seed in (0, 1):
        summary = json.loads((tmp_path / "job" / f"seed_{seed}" / "summary.json").read_text())
        assert summary["status"] == "failed" and "non-finite" in summary["error"]
