"""The DQN family as options: n-step returns, prioritized replay, C51, noisy nets, dueling
heads. Each test checks a rule that users report broken in other projects."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from dqn.agent import Agents
from dqn.losses import project
from dqn.nets import build_q_network
from dqn.nets.encoders import MLPConfig
from dqn.nets.heads import C51Config, QConfig
from dqn.optim import AdamConfig
from dqn.replay.prioritized import PrioritizedBufferConfig, PrioritizedReplay, SumTrees
from dqn.replay.uniform import UniformBufferConfig, UniformReplay
from dqn.targets import HardTargetConfig

SPACE = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)


# --- n-step returns --------------------------------------------------------------------
def steps() -> list[tuple[float, float, float, bool, bool]]:
    """(obs, reward, next_obs, terminated, truncated): an episode of 4 steps that
    terminates, one of 2 cut by a time limit, then one that runs on."""
    episodes = [([1, 2, 3, 4], "terminated"), ([10, 20], "truncated"),
                ([100, 200, 300, 400, 500], None)]
    out, t = [], 0
    for rewards, end in episodes:
        for i, reward in enumerate(rewards):
            last = i == len(rewards) - 1 and end is not None
            out.append((float(t), float(reward), 1000.0 + t if last else t + 1.0,
                        last and end == "terminated", last and end == "truncated"))
            t += 1
    return out


# (obs, n-step return, next_obs, discount) for n = 3, gamma = 0.5
EXPECTED = [
    (0.0, 1 + 0.5 * 2 + 0.25 * 3, 3.0, 0.125),
    (1.0, 2 + 0.5 * 3 + 0.25 * 4, 1003.0, 0.0),  # stops at the termination, no bootstrap
    (2.0, 3 + 0.5 * 4, 1003.0, 0.0),
    (3.0, 4.0, 1003.0, 0.0),
    (4.0, 10 + 0.5 * 20, 1005.0, 0.25),  # truncated after 2 steps: bootstrapped, gamma^2
    (5.0, 20.0, 1005.0, 0.5),
    (6.0, 100 + 0.5 * 200 + 0.25 * 300, 9.0, 0.125),
    (7.0, 200 + 0.5 * 300 + 0.25 * 400, 10.0, 0.125),
    (8.0, 300 + 0.5 * 400 + 0.25 * 500, 11.0, 0.125),
]


def nstep_buffer(capacity: int, agents: int = 1, cls=UniformReplay, **settings):
    config = (PrioritizedBufferConfig if cls is PrioritizedReplay else UniformBufferConfig)
    cfg = config(capacity=capacity, batch_size=1, n_step=3, **settings)
    return cls(cfg, SPACE, [np.random.default_rng(k) for k in range(agents)], 0.5, "cpu")


def stored(buffer, agent: int = 0) -> list[tuple[float, float, float, float]]:
    """The buffer's transitions, oldest first."""
    f = buffer.fields
    order = [(buffer.position + i) % buffer.capacity for i in range(buffer.size)]
    if buffer.size < buffer.capacity:
        order = list(range(buffer.size))
    return [(float(f["obs"][i, agent, 0]), float(f["rewards"][i, agent]),
             float(f["next_obs"][i, agent, 0]), float(f["discounts"][i, agent]))
            for i in order]


def push(buffer, step, agents: int = 1) -> None:
    obs, reward, next_obs, terminated, truncated = step
    buffer.add(np.full((agents, 1), obs, np.float32), np.zeros(agents, np.int64),
               np.full(agents, reward), np.full((agents, 1), next_obs, np.float32),
               np.full(agents, terminated), np.full(agents, truncated))


def test_n_step_returns_stop_at_episode_ends_and_bootstrap_truncations():
    buffer = nstep_buffer(capacity=100)
    written = []
    for i, step in enumerate(steps()):
        push(buffer, step)
        written.append(len(buffer))
        if i < 2:
            assert len(buffer) == 0  # nothing complete before n steps are in
    np.testing.assert_allclose(stored(buffer), EXPECTED)
    # One transition per env step after the first n - 1: those an episode end left pending
    # come out over the following steps, in order.
    assert written == [0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]


def test_n_step_transitions_are_right_across_the_ring_and_for_each_agent():
    buffer = nstep_buffer(capacity=4, agents=2)
    for step in steps():
        push(buffer, step, agents=2)
    assert buffer.position == 1 and len(buffer) == 4  # 9 written into 4 slots
    for agent in (0, 1):
        np.testing.assert_allclose(stored(buffer, agent), EXPECTED[-4:])


def test_pending_n_step_transitions_survive_a_checkpoint():
    run_on, resumed = nstep_buffer(capacity=100), nstep_buffer(capacity=100)
    for step in steps()[:4]:  # the terminated episode's tail is pending
        push(run_on, step)
    resumed.load_state_dict(run_on.state_dict())
    for step in steps()[4:]:
        push(run_on, step)
        push(resumed, step)
    assert stored(resumed) == stored(run_on)
    np.testing.assert_allclose(stored(resumed), EXPECTED)


# --- prioritized replay ------------------------------------------------------------------
def prioritized(capacity=64, size=16, agents=1, alpha=0.6, **settings) -> PrioritizedReplay:
    buffer = PrioritizedReplay(
        PrioritizedBufferConfig(capacity=capacity, batch_size=8, alpha=alpha, **settings),
        SPACE, [np.random.default_rng(k) for k in range(agents)], 0.99, "cpu")
    for i in range(size):
        obs = np.full((agents, 1), i, np.float32)
        buffer.add(obs, np.zeros(agents, np.int64), np.full(agents, float(i)), obs,
                   np.zeros(agents, bool), np.zeros(agents, bool))
    return buffer


def set_priorities(buffer: PrioritizedReplay, errors: np.ndarray) -> None:
    """Give slot i the TD error errors[i] (one agent)."""
    batch = buffer.sample(len(errors))._replace(indices=np.arange(len(errors))[None])
    buffer.update_priorities(batch, torch.from_numpy(errors[None]))


def test_sampling_frequencies_follow_the_priorities():
    buffer = prioritized(size=16, alpha=0.6, priority_eps=1e-6)
    errors = np.arange(16, dtype=np.float64) * 0.5 + 0.1
    set_priorities(buffer, errors)
    draws = np.concatenate([batch.indices[0] for batch in buffer.sample_batches(64, 500)])
    counts = np.bincount(draws, minlength=16)
    p = (errors + 1e-6) ** 0.6
    expected = len(draws) * p / p.sum()
    # 32,000 draws: each count within 5 standard deviations of its expectation
    sigma = np.sqrt(expected * (1 - p / p.sum()))
    assert np.all(np.abs(counts - expected) < 5 * sigma), (counts, expected)
    assert abs(counts[0] / counts[15] - p[0] / p[15]) < 0.1 * p[0] / p[15] + 0.01


def test_new_transitions_enter_at_the_largest_priority():
    buffer = prioritized(size=4)
    set_priorities(buffer, np.array([0.5, 3.0, 0.2, 1.0]))
    obs = np.full((1, 1), 9, np.float32)
    buffer.add(obs, np.zeros(1, np.int64), np.ones(1), obs, np.zeros(1, bool), np.zeros(1, bool))
    buffer.rank_new()  # what the next draw does first
    leaves = buffer.trees.get(np.arange(5)[None])[0]
    assert leaves[4] == pytest.approx(leaves.max()) == pytest.approx((3.0 + 1e-6) ** 0.6)


def test_weights_are_normalised_by_the_batch_maximum_and_beta_reaches_one():
    buffer = prioritized(size=16, agents=2, beta_start=0.4)
    set_priorities(buffer, np.linspace(0.1, 5.0, 16))
    for progress, beta in ((0.0, 0.4), (0.5, 0.7), (1.0, 1.0), (1.7, 1.0)):
        buffer.anneal(progress)
        assert buffer.beta == pytest.approx(beta)
    batch = buffer.sample(8)
    weights = batch.weights.numpy()
    assert weights.shape == (2, 8) and np.allclose(weights.max(axis=1), 1.0)
    slots = batch.indices
    p = buffer.trees.get(slots) / buffer.trees.totals()[:, None]
    expected = (16 * p) ** -1.0
    np.testing.assert_allclose(weights, expected / expected.max(axis=1, keepdims=True),
                               rtol=1e-6)


def test_items_of_priority_zero_are_never_drawn():
    buffer = prioritized(capacity=100, size=10)  # slots 10-99: never written, priority 0
    buffer.rank_new()
    leaves = np.array([[1, 4, 7]])
    buffer.trees.set(leaves, np.zeros((1, 3)))
    draws = np.concatenate([batch.indices[0] for batch in buffer.sample_batches(64, 200)])
    assert set(draws.tolist()) == {0, 2, 3, 5, 6, 8, 9}


def test_sum_tree_sums_and_finds():
    trees = SumTrees(agents=2, capacity=5)  # 8 leaves
    trees.set(np.array([[0, 1, 2, 3, 4], [0, 1, 2, 3, 4]]),
              np.array([[1.0, 2.0, 3.0, 4.0, 5.0], [0.0, 0.0, 1.0, 0.0, 1.0]]))
    np.testing.assert_allclose(trees.totals(), [15.0, 2.0])
    found = trees.find(np.array([[0.0, 0.99, 1.0, 2.99, 3.0, 14.99], [0.0, 0.5, 0.99, 1.0,
                                                                         1.5, 1.99]]))
    assert found.tolist() == [[0, 0, 1, 1, 2, 4], [2, 2, 2, 4, 4, 4]]


# --- C51 -------------------------------------------------------------------------------
SUPPORT = torch.linspace(-2.0, 2.0, 5)  # atoms at -2, -1, 0, 1, 2


def test_projection_keeps_mass_and_clips_to_the_support():
    probs = torch.softmax(torch.randn(64, 5, generator=torch.Generator().manual_seed(0)), -1)
    rewards = torch.linspace(-5, 5, 64)
    projected = project(probs, rewards, torch.full((64,), 0.9), SUPPORT)
    torch.testing.assert_close(projected.sum(-1), torch.ones(64))
    assert (projected >= 0).all()
    far_below = project(probs[:1], torch.tensor([-100.0]), torch.tensor([0.9]), SUPPORT)
    far_above = project(probs[:1], torch.tensor([100.0]), torch.tensor([0.9]), SUPPORT)
    torch.testing.assert_close(far_below, torch.tensor([[1.0, 0, 0, 0, 0]]))
    torch.testing.assert_close(far_above, torch.tensor([[0, 0, 0, 0, 1.0]]))


def test_projection_of_a_terminal_transition_is_its_reward():
    probs = torch.softmax(torch.randn(2, 5), -1)
    projected = project(probs, torch.tensor([0.5, 1.0]), torch.zeros(2), SUPPORT)
    # r = 0.5 lies half way between atoms 0 and 1; r = 1.0 sits on atom 1
    torch.testing.assert_close(projected, torch.tensor([[0, 0, 0.5, 0.5, 0], [0, 0, 0, 1.0, 0]]))


def test_projection_onto_an_atom_exactly_moves_all_its_mass_there():
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.25, 0.15]])
    # r = 1, discount 1: every atom lands exactly on the next one (l == u), the last clips
    projected = project(probs, torch.tensor([1.0]), torch.tensor([1.0]), SUPPORT)
    torch.testing.assert_close(projected, torch.tensor([[0.0, 0.1, 0.2, 0.3, 0.4]]))


def distributional_net(head: str = "q", noisy: bool = False, atoms: int = 51):
    """head=q or dueling, with C51's `atoms` on [-5, 5] (1: a Q head)."""
    torch.manual_seed(0)
    settings = dict(dueling=head == "dueling", noisy=noisy, v_min=-5, v_max=5)
    head_cfg = C51Config(atoms=atoms, **settings) if atoms > 1 else QConfig(**settings)
    return build_q_network(MLPConfig(hidden_sizes=[16]),
                           gym.spaces.Box(-1, 1, (3,), np.float32), 4, head_cfg)


@pytest.mark.parametrize("head", ["q", "dueling"])
def test_distributional_heads_give_distributions_and_expected_q_values(head):
    net = distributional_net(head)
    output = net(torch.randn(7, 3))
    assert output.shape == (7, 4, 51)
    expected = (output.softmax(-1) * torch.linspace(-5, 5, 51)).sum(-1)
    torch.testing.assert_close(net.q_values(output), expected)


def test_c51_learns_a_terminal_reward_distribution():
    agent = Agents([distributional_net(atoms=11)], AdamConfig(lr=1e-2), HardTargetConfig(10),
                  n_actions=4)
    obs = torch.randn(1, 32, 3)
    actions = torch.zeros(1, 32, dtype=torch.int64)
    rewards = torch.where(torch.arange(32) % 2 == 0, 2.0, 4.0)[None]  # half 2, half 4
    from dqn.replay import Batch
    batch = Batch(torch.zeros(1, 32, 3), actions, rewards, obs, torch.zeros(1, 32))
    for _ in range(300):
        result = agent.update(batch)
    probs = agent.online(torch.zeros(1, 1, 3))[0, 0, 0].softmax(-1)
    support = torch.linspace(-5, 5, 11)
    assert probs[support == 2.0].item() == pytest.approx(0.5, abs=0.05)
    assert probs[support == 4.0].item() == pytest.approx(0.5, abs=0.05)
    assert float(result.q_means) == pytest.approx(3.0, abs=0.2)


# --- noisy nets and dueling heads ------------------------------------------------------
def test_noise_changes_every_gradient_step_and_is_off_in_evaluation():
    net = distributional_net("dueling", noisy=True, atoms=1)
    agent = Agents([net], AdamConfig(lr=0.0), HardTargetConfig(1000), n_actions=4,
                  noise=[torch.Generator().manual_seed(3)])
    from dqn.replay import Batch
    batch = Batch(torch.zeros(1, 8, 3), torch.zeros(1, 8, dtype=torch.int64), torch.zeros(1, 8),
                  torch.zeros(1, 8, 3), torch.zeros(1, 8))
    noise = []
    for _ in range(3):
        agent.update(batch)
        noise.append((agent.online.net.head.value.eps_out.clone(),
                      agent.target.net.head.value.eps_out.clone()))
    assert not torch.equal(noise[0][0], noise[1][0]) and not torch.equal(noise[1][0], noise[2][0])
    assert not torch.equal(noise[0][0], noise[0][1])  # online and target: their own draws
    obs = np.random.default_rng(0).normal(size=(1, 20, 3)).astype(np.float32)
    evaluations = [agent.greedy(obs) for _ in range(3)]  # mean weights: the same every time
    assert all(np.array_equal(evaluations[0], e) for e in evaluations)
    mean = distributional_net("dueling", noisy=True, atoms=1)
    mean.load_state_dict(agent.online.member_state_dict(0))
    with torch.no_grad():
        expected = mean.eval()(torch.from_numpy(obs[0])).argmax(-1).numpy()[None]
    np.testing.assert_array_equal(evaluations[0], expected)
    agent.acting(explore=True)
    actions = {tuple(agent.greedy(obs)[0]) for _ in range(10)}
    assert len(actions) > 1  # acting to explore draws fresh noise


def test_dueling_head_subtracts_the_mean_advantage():
    net = distributional_net("dueling", atoms=1)
    features = net.encoder(torch.randn(9, 3))
    q = net.head(features)
    value = net.head.value(features).squeeze(-1)
    torch.testing.assert_close(q.mean(-1), value)  # identifiable: V = mean_a Q
    advantage = net.head.advantage(features)
    torch.testing.assert_close(q - value[:, None], advantage - advantage.mean(-1, keepdim=True))


# --- every option end to end -------------------------------------------------------------
SINGLE_OPTIONS = {
    "dueling": ["head=dueling"],
    "noisy": ["head.noisy=true", "exploration=none"],
    "c51": ["head=c51", "head.atoms=21", "head.v_min=0", "head.v_max=50"],
    "dueling c51": ["head=c51", "head.dueling=true"],
    "prioritized": ["buffer=prioritized"],
    "n_step": ["buffer.n_step=3"],
    "rainbow": ["experiment=rainbow"],
}


@pytest.mark.parametrize("option", SINGLE_OPTIONS)
def test_each_option_trains_two_agents_together(tmp_path, option):
    from tests.conftest import TINY_OVERRIDES
    from tests.test_batched import train_in_process

    final, job = train_in_process(tmp_path / "job", *TINY_OVERRIDES, "num_seeds=2",
                                  *SINGLE_OPTIONS[option])
    assert final > 0
    for seed in (0, 1):
        summary = (job / f"seed_{seed}" / "summary.json").read_text()
        assert '"status": "completed"' in summary


def test_rainbow_from_the_command_line_evaluates_records_and_sweeps(tmp_path):
    from tests.conftest import TINY_OVERRIDES, run_python
    from tests.test_cli import dqn_train

    result = dqn_train(tmp_path, "experiment=rainbow", *TINY_OVERRIDES, "num_seeds=2",
                       "video.episodes=1", "video.max_steps=20", "logger=none",
                       "hydra.run.dir=job")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "job" / "seed_1" / "videos" / "best-episode-0.mp4").stat().st_size > 0
    evaluated = run_python(tmp_path, "-m", "dqn.evaluate", "checkpoint=job/seed_1",
                           "episodes=3")
    assert evaluated.returncode == 0, evaluated.stderr
    sweep = dqn_train(tmp_path, "-m", "experiment=cartpole", "rainbow=full,none",
                      *TINY_OVERRIDES, "logger=none", "hydra.sweep.dir=sweep")
    assert sweep.returncode == 0, sweep.stderr
    table = (tmp_path / "sweep" / "summary.md").read_text()
    assert "| rainbow=full | 1 | 0 |" in table and "| rainbow=none | 1 | 0 |" in table
