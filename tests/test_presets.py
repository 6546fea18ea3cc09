"""The env presets (experiment=cartpole, acrobot, mountaincar, lunarlander), the suite
script that reproduces the published table, and sweep summaries over several envs."""

from __future__ import annotations

import json

import pytest

from dqn.cli.sweeps import find_jobs, summary_markdown
from tests.conftest import REPO, run_python
from tests.test_batched import train_in_process
from tests.test_sweeps import fake_job

QUICK = ["train.total_steps=1500", "buffer.learning_starts=500", "eval.every_steps=500",
         "eval.episodes=2", "eval.final_episodes=3"]


@pytest.mark.parametrize("preset,env", [("cartpole", "CartPole-v1"), ("acrobot", "Acrobot-v1"),
                                        ("mountaincar", "MountainCar-v0"),
                                        ("lunarlander", "LunarLander-v3")])
def test_each_preset_trains(tmp_path, preset, env):
    final, run_dir = train_in_process(tmp_path / "run", f"experiment={preset}", *QUICK)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["env_steps"] == 1500
    config = (run_dir / "checkpoints" / "best.pt")
    assert config.is_file()
    assert final == summary["final_eval"]["mean"]


def test_the_suite_script_writes_the_table(tmp_path):
    result = run_python(tmp_path, str(REPO / "scripts" / "reproduce.py"), "--seeds", "2",
                        "--only", "cartpole,acrobot", "--out", "out", "train.total_steps=600",
                        "buffer.learning_starts=200", "eval.every_steps=300",
                        "eval.episodes=2", "eval.final_episodes=3")
    assert result.returncode == 0, result.stderr
    table = (tmp_path / "out" / "table.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0].startswith("| env | preset | env steps | solved |")
    cartpole, acrobot = rows[1].split(" | "), rows[2].split(" | ")
    assert cartpole[:3] == ["| CartPole-v1", "experiment=cartpole", "600"]
    assert acrobot[:3] == ["| Acrobot-v1", "experiment=acrobot", "600"]
    assert acrobot[3].endswith("/2 (>= -100)") and "-76.6 ± 11.8 at 100k" in rows[2]
    assert "IQM" in rows[0] and "95% CI" in rows[0]


def test_a_sweep_over_envs_gets_one_table_per_env_with_its_threshold(tmp_path):
    fake_job(tmp_path, "0_a", ["seed=0", "experiment=cartpole"], 480.0, [(1000, 480)])
    fake_job(tmp_path, "1_b", ["seed=0", "experiment=acrobot"], -90.0, [(1000, -95)])
    fake_job(tmp_path, "2_c", ["seed=1", "experiment=acrobot"], -120.0, [(1000, -130)])
    (tmp_path / "1_b" / ".hydra" / "config.yaml").write_text("env:\n  id: Acrobot-v1\n")
    (tmp_path / "2_c" / ".hydra" / "config.yaml").write_text("env:\n  id: Acrobot-v1\n")
    table = summary_markdown(find_jobs([tmp_path]))
    assert "### Acrobot-v1 (solved: final eval >= -100)" in table
    assert "### CartPole-v1 (solved: final eval >= 475)" in table
    acrobot = table[table.index("### Acrobot"):table.index("### CartPole")]
    assert "| experiment=acrobot | 2 | 0 | 1/2 |" in acrobot
