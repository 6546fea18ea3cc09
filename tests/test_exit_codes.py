"""One exit-status convention for `python -m dqn.train` and `python -m dqn.evaluate`:
0 done; 2 what the user typed or pointed at is wrong (a key, a value, a path, a file that
is not a usable checkpoint); 1 a failure while running (training diverged, a result that
could not be written); 130 Ctrl-C. Each status is followed by one line, never a traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import pytest

import dqn.cli.evaluate
from dqn.nets import build_q_network
from dqn.nets.encoders import MLPConfig
from dqn.run.checkpoint import save_checkpoint
from tests.conftest import REPO, TINY_OVERRIDES, run_python

TRAIN, EVALUATE = ("-m", "dqn.train"), ("-m", "dqn.evaluate")
CONFIG = {"network": {"hidden_sizes": [8], "activation": "tanh"}, "head": {},
          "env": {"id": "CartPole-v1", "max_episode_steps": None},
          "options": {"network": "mlp", "head": "q", "env": "gym"}}


def agent(path: Path, poison: float | None = None) -> Path:
    """An untrained CartPole agent's checkpoint at `path`; `poison` goes into one weight."""
    net = build_q_network(MLPConfig(hidden_sizes=[8], activation="tanh"),
                          gym.make("CartPole-v1").observation_space, 2)
    weights = {key: tensor.clone() for key, tensor in net.state_dict().items()}
    if poison is not None:
        weights["encoder.layers.0.weight"][0, 0] = poison
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, weights, CONFIG, env_step=0)
    return path


def one_line(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return lines[-1]


def not_a_run(tmp_path: Path) -> Path:
    """A folder whose checkpoints/last.pt is not a checkpoint (a user's mix-up)."""
    (tmp_path / "other" / "checkpoints").mkdir(parents=True)
    (tmp_path / "other" / "checkpoints" / "last.pt").write_text("notes")
    return tmp_path / "other"


def full_disk_eval_json(tmp_path: Path) -> Path:
    checkpoint = agent(tmp_path / "ok" / "best.pt")
    (checkpoint.parent / "eval.json").symlink_to("/dev/full")
    return checkpoint


CASES = [
    # (command, arguments, what the folder needs, status, how the line starts)
    (TRAIN, ["no_such_key=1"], None, 2, "Config error: "),
    (TRAIN, ["resume=DIR"], not_a_run, 2, "Config error: resume="),
    (TRAIN, [*TINY_OVERRIDES, "logger=none", "train.loss=mse", "optimizer.lr=1e30",
             "optimizer.clip_grad_norm=null", "hydra.run.dir=run"], None, 1,
     "Training stopped: "),
    (EVALUATE, ["checkpoint=DIR", "no_such_key=1"], not_a_run, 2, "Config error: "),
    (EVALUATE, ["checkpoint=DIR/checkpoints/last.pt"], not_a_run, 2, "Checkpoint error: "),
    (EVALUATE, ["checkpoint=DIR", "episodes=2"],
     lambda tmp: agent(tmp / "nan" / "best.pt", float("nan")), 2, "Checkpoint error: "),
    (EVALUATE, ["checkpoint=DIR", "episodes=2"], full_disk_eval_json, 1, "File error: "),
]


@pytest.mark.parametrize("command,arguments,prepare,status,title", CASES, ids=[
    "train bad key", "train resume of a folder without a checkpoint", "train diverges",
    "evaluate bad key", "evaluate not a checkpoint", "evaluate NaN weights",
    "evaluate eval.json on a full disk"])
def test_exit_status_and_one_line(tmp_path, command, arguments, prepare, status, title):
    if prepare is full_disk_eval_json and not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    target = prepare(tmp_path) if prepare else tmp_path
    arguments = [a.replace("DIR", str(target)) for a in arguments]
    result = run_python(tmp_path, *command, *arguments, timeout=120)
    assert result.returncode == status, result.stderr
    assert one_line(result).startswith(title)


def test_evaluate_ends_on_ctrl_c_with_130_and_one_line(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        signal.raise_signal(signal.SIGINT)  # as a Ctrl-C in the middle of the episodes

    monkeypatch.setattr(dqn.cli.evaluate, "play", interrupted)
    checkpoint = agent(tmp_path / "best.pt")
    assert dqn.cli.evaluate.main([f"checkpoint={checkpoint}"]) == 130
    assert capsys.readouterr().err == "Interrupted (Ctrl-C)\n"
    assert not (tmp_path / "eval.json").exists()


def test_train_ends_on_ctrl_c_with_130_after_saving(tmp_path):
    overrides = [o for o in TINY_OVERRIDES if not o.startswith("train.total_steps=")]
    process = subprocess.Popen(
        [sys.executable, "-m", "dqn.train", *overrides, "train.total_steps=1000000",
         "logger=none", "hydra.run.dir=run"], cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    best = tmp_path / "run" / "checkpoints" / "best.pt"
    deadline = time.monotonic() + 120
    while not best.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    output = "".join(process.communicate(timeout=120))
    assert process.returncode == 130, output
    assert "Traceback" not in output and "python -m dqn.train resume=" in output
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
