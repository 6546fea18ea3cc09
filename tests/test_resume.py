"""Resume, preemption and faults: a killed or stopped run continues to the same numbers,
checkpoints survive a kill mid-write, numerical and tracker faults end cleanly."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from dqn.run.checkpoint import load_checkpoint
from tests.conftest import REPO
from tests.dashboard import dashboard

# Per-step updates on a small network, long enough to be interrupted mid-way.
RUN = ["train.total_steps=4000", "buffer.learning_starts=200", "eval.every_steps=500",
       "eval.episodes=3", "eval.final_episodes=5", "network.hidden_sizes=[16,16]",
       "train.train_frequency=1", "train.gradient_steps=1", "train.checkpoint_every=500",
       "logger=none", "seed=11"]


def start(cwd: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "dqn.train", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> tuple[int, str]:
    out, err = process.communicate(timeout=300)
    return process.returncode, out + err


def wait_for_checkpoint(path: Path, process: subprocess.Popen, min_step: int) -> int:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be interrupted"
        try:
            step = load_checkpoint(path)["env_step"]
            if step >= min_step:
                return step
        except Exception:  # noqa: BLE001 - not written yet
            pass
        time.sleep(0.05)
    raise TimeoutError(path)


def evals(run_dir: Path) -> list[tuple[str, str, str]]:
    with (run_dir / "metrics.csv").open() as file:
        return [(r["env_step"], r["eval_return_mean"], r["eval_return_std"])
                for r in csv.DictReader(file)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("reference")
    code, output = finish(start(cwd, *RUN, "hydra.run.dir=run"))
    assert code == 0, output
    return cwd / "run"


def assert_same_run(resumed: Path, reference: Path) -> None:
    assert evals(resumed) == evals(reference)
    a = load_checkpoint(resumed / "checkpoints" / "last.pt")
    b = load_checkpoint(reference / "checkpoints" / "last.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
    summaries = [json.loads((d / "summary.json").read_text()) for d in (resumed, reference)]
    assert summaries[0]["status"] == "completed"
    assert summaries[0]["final_eval"] == summaries[1]["final_eval"]
    assert summaries[0]["best_eval_step"] == summaries[1]["best_eval_step"]


def kill_and_resume(cwd: Path, args: list[str], folder: str, min_step: int) -> str:
    """Start `python -m dqn.train ARGS hydra.run.dir=FOLDER`, SIGKILL it once its last.pt
    has reached `min_step`, resume it to the end; returns the resumed run's output."""
    process = start(cwd, *args, f"hydra.run.dir={folder}")
    wait_for_checkpoint(cwd / folder / "checkpoints" / "last.pt", process, min_step)
    process.kill()
    process.wait()
    code, output = finish(start(cwd, f"resume={cwd / folder}"))
    assert code == 0, output
    return output


def test_sigkill_then_resume_matches_the_uninterrupted_run(tmp_path, reference):
    assert "resumed" in kill_and_resume(tmp_path, RUN, "run", 1000)
    assert_same_run(tmp_path / "run", reference)
    assert (tmp_path / "run" / ".hydra" / "overrides.yaml").read_text().count("seed=11") == 1


@pytest.mark.parametrize("options", [["train.total_steps=3000"],
                                     ["experiment=rainbow", "train.total_steps=1600"]],
                         ids=["dqn", "rainbow"])
def test_a_killed_num_seeds_job_resumes_to_the_same_numbers(tmp_path, options):
    """Agents trained together resume like a single run: every agent ends with the weights,
    evaluations and final scores of the job left alone. With Rainbow's six components,
    the priorities, beta, the noise generators and the pending n-step transitions too."""
    job = [*RUN, "num_seeds=2", *options]
    code, output = finish(start(tmp_path, *job, "hydra.run.dir=reference"))
    assert code == 0, output
    kill_and_resume(tmp_path, job, "job", 500)
    for seed in (11, 12):
        assert_same_run(tmp_path / "job" / f"seed_{seed}", tmp_path / "reference" / f"seed_{seed}")
    summary = json.loads((tmp_path / "job" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["seeds"] == [11, 12]


@pytest.mark.parametrize("vectorization", ["sync", "async"])
def test_a_killed_run_with_many_envs_resumes_to_the_same_numbers(tmp_path, vectorization):
    """Each of the envs is brought back to where it was (its episode's seed and actions
    replayed), under either backend; n-step transitions still in the window come along,
    and periods that 3 envs do not divide (checkpoint_every=500) stay where they were."""
    job = [*RUN, "train.total_steps=3000", "env.num_envs=3", "buffer.n_step=3",
           f"env.vectorization={vectorization}"]
    code, output = finish(start(tmp_path, *job, "hydra.run.dir=reference"))
    assert code == 0, output
    kill_and_resume(tmp_path, job, "run", 500)
    assert_same_run(tmp_path / "run", tmp_path / "reference")
    episodes = [(tmp_path / d / "episodes.csv").read_text() for d in ("run", "reference")]
    assert episodes[0] == episodes[1]


def test_a_killed_pqn_job_resumes_mid_rollout_to_the_same_numbers(tmp_path):
    """PQN's rollout in progress travels in last.pt (checkpoints every 500 env steps fall
    inside rollouts of 4 x 24 = 96), with two agents and the learning rate's decay."""
    job = ["experiment=pqn", "num_seeds=2", "train.total_steps=3000", "env.num_envs=4",
           "buffer.rollout_steps=24", "buffer.minibatches=4", "eval.every_steps=500",
           "eval.episodes=3", "eval.final_episodes=5", "train.checkpoint_every=500",
           "logger=none", "seed=11"]
    code, output = finish(start(tmp_path, *job, "hydra.run.dir=reference"))
    assert code == 0, output
    kill_and_resume(tmp_path, job, "job", 1000)
    for seed in (11, 12):
        assert_same_run(tmp_path / "job" / f"seed_{seed}", tmp_path / "reference" / f"seed_{seed}")


def test_sigterm_saves_and_says_how_to_resume(tmp_path, reference):
    process = start(tmp_path, *RUN, "hydra.run.dir=run")
    wait_for_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt", process, 2000)
    process.send_signal(signal.SIGTERM)
    code, output = finish(process)
    assert code == 128 + signal.SIGTERM
    assert "Traceback" not in output
    assert f"python -m dqn.train resume={tmp_path / 'run'}" in output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["resume"]
    stopped_at = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["env_step"]
    assert stopped_at == summary["env_steps"] >= 2000
    code, output = finish(start(tmp_path, f"resume={tmp_path / 'run'}"))
    assert code == 0, output
    assert_same_run(tmp_path / "run", reference)


def _with_descendants(pid: int) -> list[int]:
    """The process and every process below it (a Slurm job step's processes)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo += children.get(found[-1], [])
    return found


def test_a_stop_signal_to_every_process_of_the_job_keeps_every_dashboard_run(tmp_path):
    """As Slurm does before a time limit: SIGUSR2 to training and to its SwanLab writer.
    The writer outlives it and writes both agents' runs, the one still waiting too."""
    run = [a for a in RUN if a != "logger=none"] + ["num_seeds=2", "train.total_steps=20000",
                                                    f"logger.log_dir={tmp_path / 'swanlog'}"]
    process = start(tmp_path, *run, "hydra.run.dir=run")
    wait_for_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt", process, 2000)
    for pid in _with_descendants(process.pid):
        os.kill(pid, signal.SIGUSR2)
    code, output = finish(process)
    assert code == 128 + signal.SIGUSR2, output
    with dashboard(tmp_path / "swanlog") as board:
        experiments = board.experiments()
        assert sorted(e["name"].rsplit(",", 1)[-1] for e in experiments) == ["seed=11",
                                                                             "seed=12"]
        for experiment in experiments:
            assert len(board.series(experiment["id"], "train/epsilon")) >= 2  # by step 2000


@pytest.mark.parametrize("args,words", [
    (["resume=/no/such/run"], "no such run directory"),
    (["resume=RUN", "seed=3"], "drop the other overrides: seed=3"),
])
def test_resume_mistakes_are_one_line(tmp_path, args, words):
    args = [a.replace("RUN", str(tmp_path)) for a in args]
    code, output = finish(start(tmp_path, *args))
    assert code == 2 and "Traceback" not in output
    assert words in output.strip().splitlines()[-1]


def test_resuming_a_completed_run_is_refused(reference):
    code, output = finish(start(reference.parent, f"resume={reference}"))
    assert code == 2 and "already completed" in output and "Traceback" not in output


def test_kill_during_checkpoint_writes_never_corrupts(tmp_path):
    writer = textwrap.dedent(f"""
        import torch
        from pathlib import Path
        from dqn.run.checkpoint import save_checkpoint
        path = Path({str(tmp_path / 'last.pt')!r})
        save_checkpoint(path, {{"w": torch.zeros(200_000)}}, {{}}, env_step=0)
        print("ready", flush=True)
        step = 0
        while True:
            step += 1
            save_checkpoint(path, {{"w": torch.full((200_000,), float(step))}}, {{}},
                            env_step=step)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for delay in (0.05, 0.13, 0.31):
        process = subprocess.Popen([sys.executable, "-c", writer], env=env,
                                   stdout=subprocess.PIPE, text=True)
        assert process.stdout.readline().strip() == "ready"
        time.sleep(delay)
        process.kill()
        process.wait()
        payload = load_checkpoint(tmp_path / "last.pt")
        assert torch.all(payload["model"]["w"] == payload["env_step"])


def test_non_finite_loss_stops_the_run_cleanly(tmp_path):
    code, output = finish(start(
        tmp_path, "train.total_steps=3000", "buffer.learning_starts=600",
        "eval.every_steps=500", "eval.episodes=2", "train.train_frequency=1",
        "train.gradient_steps=1", "train.loss=mse", "optimizer.lr=1e30",
        "optimizer.clip_grad_norm=null", "logger=none", "hydra.run.dir=run"))
    assert code == 1 and "Traceback" not in output
    last_line = output.strip().splitlines()[-1]
    assert last_line.startswith("Training stopped:") and "non-finite" in last_line
    assert "last finite mean loss" in last_line
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and "non-finite" in summary["error"]
    assert (tmp_path / "run" / "checkpoints" / "best.pt").exists()  # from step 500


def test_unwritable_run_directory_fails_before_training(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoints").write_text("a file where a folder must go")
    code, output = finish(start(tmp_path, "hydra.run.dir=run", "logger=none"))
    assert code == 2 and "Traceback" not in output
    assert "cannot write checkpoints" in output.strip().splitlines()[-1]
    assert not (tmp_path / "run" / "metrics.csv").exists()


def test_a_requeued_sweep_job_continues_its_own_folder(tmp_path, reference):
    # What submitit does after a preemption: run the same job again, same folder.
    command = ["-m", *RUN, "hydra.sweep.dir=sweep", "hydra.sweep.subdir=job"]
    process = start(tmp_path, *command)
    wait_for_checkpoint(tmp_path / "sweep" / "job" / "checkpoints" / "last.pt", process, 1000)
    process.kill()
    process.wait()
    code, output = finish(start(tmp_path, *command))
    assert code == 0, output
    assert "resumed" in output
    assert_same_run(tmp_path / "sweep" / "job", reference)


def test_a_hanging_tracker_finish_is_cut_off(caplog, monkeypatch):
    from dqn.run.tracking import SwanLabConfig, SwanLabTracker, SwanLabWorker, close_trackers

    # A worker that takes every message and never finishes (SwanLab's finish() hangs when
    # the network is gone in online mode).
    never_done = "import sys, time; sys.stdin.read(); time.sleep(60)"
    monkeypatch.setattr(SwanLabWorker, "command", [sys.executable, "-c", never_done])
    monkeypatch.setattr(SwanLabWorker, "finish_timeout", 1)
    monkeypatch.setattr(SwanLabWorker, "_shared", None)
    tracker = SwanLabTracker(SwanLabConfig(), "hanging", {})
    tracker.log({"train/loss": 1.0}, 1)
    tracker.finish()
    started = time.monotonic()
    close_trackers()
    assert time.monotonic() - started < 5
    assert "did not finish" in caplog.text and SwanLabWorker._shared.broken
