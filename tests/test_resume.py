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
from types import SimpleNamespace

import pytest
import torch

from dqn.run.checkpoint import load_checkpoint
from tests.conftest import REPO, TINY_OVERRIDES, compose_config, run_python
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
    return process.returncode, out + (err or "")


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


# --- resume refuses what is not its run's, and changes nothing then -----------------------
def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """`folder` and every file below it with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in [folder, *folder.rglob("*")]}


def craft_run(folder: Path, folder_id: str | None, checkpoint_id: str | None,
              config: dict | None = None, model: dict | None = None,
              target: dict | None = None) -> None:
    """A run folder as an interrupted run leaves it, whose last.pt says `checkpoint_id` and
    whose birth record says `folder_id` (None: without one), carrying `config`, the online
    weights `model` and the `target` weights."""
    from dqn.run.checkpoint import save_checkpoint

    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("seed: 11\n")
    for name, text in (("metrics.csv", "env_step\n500\n"), ("episodes.csv", "episode\n1\n"),
                       ("train.log", "started\n"), (".run.lock", "12345\n")):
        (folder / name).write_text(text)
    if folder_id is not None:
        (folder / ".run.json").write_text(json.dumps({"run_id": folder_id, "run_name": "a"}))
    state = {"step": 500, "finished": False, "runs": [], "agents": {"target": target}}
    if checkpoint_id is not None:
        state["run_id"] = checkpoint_id
    save_checkpoint(folder / "checkpoints" / "last.pt", model or {"w": torch.ones(2)},
                    config or {"seed": 11}, state=state, env_step=500)


def weights_of(*overrides: str) -> dict[str, torch.Tensor]:
    """The online weights a run with these overrides saves (its num_seeds agents' as one)."""
    from dqn.config import validate
    from dqn.ensemble import Ensemble
    from dqn.envs import make_env
    from dqn.nets.qnet import build_q_network

    config = validate(compose_config(*overrides))
    env = make_env(config.env)
    space, n_actions = env.observation_space, int(env.action_space.n)
    env.close()
    return Ensemble([build_q_network(config.network, space, n_actions, config.head)
                     for _ in range(config.num_seeds)]).weights()


def craft_resumable_run(folder: Path, *overrides: str) -> None:
    """A run folder that a resume would continue (a run of TINY_OVERRIDES + `overrides`)."""
    from dqn.config import stored_config, validate

    config = stored_config(validate(compose_config(*TINY_OVERRIDES, *overrides)))
    weights = weights_of(*TINY_OVERRIDES, *overrides)
    craft_run(folder, "aaaa1111", "aaaa1111", config, weights, weights)


@pytest.mark.parametrize("folder_id,checkpoint_id,words", [
    ("aaaa1111", "bbbb2222", "belongs to another run"),
    ("aaaa1111", None, "belongs to another run"),
    (None, "bbbb2222", "comes from run bbbb2222"),
])
def test_a_last_pt_of_another_run_is_refused_and_nothing_changes(tmp_path, folder_id,
                                                                 checkpoint_id, words):
    craft_run(tmp_path / "run", folder_id, checkpoint_id)
    before = snapshot(tmp_path / "run")
    code, output = finish(start(tmp_path, f"resume={tmp_path / 'run'}"))
    assert code == 2 and "Traceback" not in output
    (line,) = output.strip().splitlines()
    assert line.startswith("Config error: resume=") and words in line
    assert snapshot(tmp_path / "run") == before


@pytest.mark.parametrize("setup,words", [
    ("empty", "holds no checkpoints/last.pt"),
    ("corrupt last.pt", "not a readable dqn checkpoint"),
])
def test_a_refused_resume_writes_nothing_into_the_folder(tmp_path, setup, words):
    folder = tmp_path / "somewhere"
    folder.mkdir()
    (folder / "notes.txt").write_text("a user's file\n")
    if setup == "corrupt last.pt":
        (folder / "checkpoints").mkdir()
        (folder / "checkpoints" / "last.pt").write_bytes(b"PK\x03\x04broken")
    before = snapshot(folder)
    code, output = finish(start(tmp_path, f"resume={folder}"))
    assert code == 2 and "Traceback" not in output
    (line,) = output.strip().splitlines()
    assert words in line
    assert snapshot(folder) == before  # no .hydra-resume/, no train.log


@pytest.mark.parametrize("stored,words", [
    ("unnamed options", "carries no usable config (the stored config names no network option"),
    ("seed beyond 32 bits", "is refused today: seed=8589934592 is out of range"),
])
def test_a_last_pt_whose_config_cannot_run_is_refused_and_nothing_changes(tmp_path, stored,
                                                                           words):
    from dqn.config import stored_config, validate

    config = stored_config(validate(compose_config(*TINY_OVERRIDES)))
    if stored == "unnamed options":  # as written before options were named (0.1.0)
        del config["options"]
    else:
        config["seed"] = 2**33
    craft_run(tmp_path / "run", "aaaa1111", "aaaa1111", config)
    before = snapshot(tmp_path / "run")
    code, output = finish(start(tmp_path, f"resume={tmp_path / 'run'}"))
    assert code == 2 and "Traceback" not in output, output
    (line,) = output.strip().splitlines()
    assert line.startswith("Config error: resume=") and words in line, line
    assert snapshot(tmp_path / "run") == before


def test_an_empty_resume_is_refused_not_a_fresh_run(tmp_path):
    code, output = finish(start(tmp_path, "resume=", "logger=none"))
    assert code == 2 and "Traceback" not in output
    (line,) = output.strip().splitlines()
    assert line.startswith("Config error: resume=''") and "empty" in line
    assert not (tmp_path / "outputs").exists()


def printed_resume_command(output: str) -> str:
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.endswith("Resume with:"))
    return lines[start + 1].strip()


def run_pasted(command: str, cwd: Path) -> tuple[int, str]:
    """`command` as a user pasting it into bash would run it."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(["bash", "-c", command.replace("python", sys.executable, 1)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout + done.stderr


def test_the_printed_resume_command_continues_a_run_when_pasted(tmp_path, reference):
    """A folder with a space and an `=` in its path; its summary.json corrupted meanwhile.
    The resumed run keeps the name it was born with."""
    folder = tmp_path / "my runs" / "a=b"
    process = start(tmp_path, *RUN, "hydra.run.dir='my runs/a=b'")
    wait_for_checkpoint(folder / "checkpoints" / "last.pt", process, 1000)
    process.send_signal(signal.SIGINT)
    code, output = finish(process)
    assert code == 128 + signal.SIGINT and "Traceback" not in output
    command = printed_resume_command(output)
    born = json.loads((folder / "summary.json").read_text())
    assert born["resume"] == command
    (folder / "summary.json").write_text('{"status": "interr')  # a crash while writing it
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code, output = run_pasted(command, elsewhere)
    assert code == 0, output
    assert_same_run(folder, reference)
    assert json.loads((folder / "summary.json").read_text())["run_name"] == born["run_name"]
    assert "(resumed)" not in born["run_name"]


def test_the_printed_command_continues_a_stopped_sweep_when_pasted(tmp_path, reference):
    process = start(tmp_path, "-m", *RUN, "hydra.sweep.dir='my sweep'")
    deadline = time.monotonic() + 120
    while not list((tmp_path / "my sweep").glob("0_*/checkpoints/last.pt")):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    (job,) = (tmp_path / "my sweep").glob("0_*")
    wait_for_checkpoint(job / "checkpoints" / "last.pt", process, 1000)
    process.send_signal(signal.SIGINT)
    code, output = finish(process)
    assert "Traceback" not in output, output
    command = printed_resume_command(output)
    assert command.startswith("python -m dqn.train -m ")
    code, output = run_pasted(command, tmp_path / "my sweep")
    assert code == 0, output
    assert "resumed" in output
    assert_same_run(job, reference)


# --- a second signal while saving, a full disk --------------------------------------------
def start_with_last_pt_saves(cwd: Path, behaviour: str, *args: str) -> subprocess.Popen:
    """`python -m dqn.train ARGS` whose saves of last.pt after the first one `behaviour`:
    "slow" (print "saving last.pt", then take 3 s) or "disk full" (fail with ENOSPC)."""
    code = textwrap.dedent(f"""
        import errno, sys, time
        import dqn.run.checkpoint as checkpoint
        from dqn.cli.train import cli
        real, saves = checkpoint.save_checkpoint, []

        def save(path, *args, **kwargs):
            if path.name == "last.pt":
                saves.append(path)
                if len(saves) > 1 and {behaviour!r} == "slow":
                    print("saving last.pt", flush=True)
                    time.sleep(3)
                if len(saves) > 1 and {behaviour!r} == "disk full":
                    raise OSError(errno.ENOSPC, "No space left on device", str(path))
            real(path, *args, **kwargs)

        checkpoint.save_checkpoint = save
        cli(sys.argv[1:])
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_a_second_ctrl_c_while_saving_stops_at_once_and_keeps_the_last_pt(tmp_path, reference):
    process = start_with_last_pt_saves(tmp_path, "slow", *RUN, "hydra.run.dir=run")
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    kept = wait_for_checkpoint(last, process, 500)
    process.send_signal(signal.SIGINT)
    lines = []
    for line in process.stdout:  # the next save is the one the first Ctrl-C asked for
        lines.append(line)
        if line.strip() == "saving last.pt":
            break
    process.send_signal(signal.SIGINT)
    code, output = finish(process)
    output = "".join(lines) + output
    assert code == 130 and "Traceback" not in output, output
    last_line = output.strip().splitlines()[-1]
    assert last_line.startswith("Stopped: stopped at once by a second signal")
    assert f"{last} from env step" in last_line
    assert load_checkpoint(last)["env_step"] >= kept  # whole: the one saved before
    assert not list(last.parent.glob(".*.tmp"))
    code, output = finish(start(tmp_path, f"resume={tmp_path / 'run'}"))
    assert code == 0, output
    assert_same_run(tmp_path / "run", reference)


def test_a_full_disk_is_one_line_and_the_last_pt_stays_resumable(tmp_path, reference):
    process = start_with_last_pt_saves(tmp_path, "disk full", *RUN, "hydra.run.dir=run")
    code, output = finish(process)
    assert code == 1 and "Traceback" not in output, output
    last_line = output.strip().splitlines()[-1]
    assert last_line.startswith("File error: no space left on device writing ")
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    assert f"{last} from env step 500 is kept" in last_line
    assert load_checkpoint(last)["env_step"] == 500
    code, output = run_pasted(last_line.split("resume with: ")[1], tmp_path)
    assert code == 0, output
    assert_same_run(tmp_path / "run", reference)


def mount_tmpfs(disk: Path, size: str) -> Path:
    """`disk` made a tmpfs of `size` (the test is skipped where mounting is not allowed);
    the caller unmounts it with `umount -l`."""
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    return disk


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB file system of its own (a tmpfs; skipped where mounting is not allowed)."""
    disk = mount_tmpfs(tmp_path / "disk", "2m")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def fill(disk: Path) -> None:
    """Write into `disk` until no space is left."""
    with pytest.raises(OSError, match="No space left"), (disk / "filler").open("wb") as file:
        while True:
            file.write(b"x" * 4096)
            file.flush()


def test_a_disk_that_fills_up_during_a_run(small_disk, tmp_path, reference):
    process = start(tmp_path, *RUN, f"hydra.run.dir={small_disk / 'run'}")
    last = small_disk / "run" / "checkpoints" / "last.pt"
    wait_for_checkpoint(last, process, 500)
    fill(small_disk)
    code, output = finish(process)
    assert code == 1 and "Traceback" not in output, output
    last_line = output.strip().splitlines()[-1]
    assert last_line.startswith("File error: no space left on device writing ")
    kept = load_checkpoint(last)["env_step"]  # whole, from before the disk filled
    assert f"{last} from env step {kept} is kept; resume with: " in last_line
    (small_disk / "filler").unlink()
    code, output = run_pasted(last_line.split("resume with: ")[1], tmp_path)
    assert code == 0, output
    assert_same_run(small_disk / "run", reference)


def test_a_sweep_run_again_keeps_its_completed_jobs(tmp_path):
    sweep = ["-m", *RUN, "train.total_steps=600", "hydra.sweep.dir=sweep"]
    code, output = finish(start(tmp_path, *sweep))
    assert code == 0, output
    (job,) = (tmp_path / "sweep").glob("0_*")
    records = {name: (job / name).stat().st_mtime_ns
               for name in ("summary.json", "metrics.csv", "checkpoints/last.pt")}
    code, output = finish(start(tmp_path, *sweep))
    assert code == 0 and "completed before; kept as it is" in output, output
    assert {name: (job / name).stat().st_mtime_ns for name in records} == records
    assert "sweep: 1 succeeded, 0 failed" in output


@pytest.mark.parametrize("folder", ["/runs/12-00-00_2", "/my runs/0_seed=1,lr=[1e-3]",
                                    "/it's/$HOME/a\\b", "/x\\", "/c:d/~e/{f,g}/*"])
def test_a_printed_resume_command_reads_back_as_its_folder(folder, tmp_path):
    """Through bash's own word expansion (globs, braces, ~, $), then Hydra's grammar."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from dqn.run.record import resume_command

    (tmp_path / "resume=x").touch()  # what an unquoted glob would match
    words = subprocess.run(["bash", "-c", f"printf '%s\\0' {resume_command(Path(folder))}"],
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    *command, word = words.split("\0")[:-1]
    assert command == ["python", "-m", "dqn.train"]
    (override,) = OverridesParser.create().parse_overrides([word])
    assert override.key_or_group == "resume" and override.value() == folder


# --- resume refuses a last.pt whose weights do not fit its config -----------------------
@pytest.mark.parametrize("num_seeds,which", [(1, "weights"), (2, "target weights")])
def test_a_last_pt_whose_weights_do_not_fit_its_config_is_refused_and_nothing_changes(
        tmp_path, num_seeds, which):
    """Its config edited after the weights were saved (hidden sizes 16 in the config, 32 in
    the weights): one line naming the key and both shapes, before Hydra writes a file."""
    from dqn.config import stored_config, validate

    overrides = [*TINY_OVERRIDES, f"num_seeds={num_seeds}"]  # hidden_sizes=[16,16]
    config = stored_config(validate(compose_config(*overrides)))
    fitting, other = weights_of(*overrides), weights_of(*overrides, "network.hidden_sizes=[32]")
    model, target = (other, fitting) if which == "weights" else (fitting, other)
    run = tmp_path / "run"
    craft_run(run, "aaaa1111", "aaaa1111", config, model, target)
    before = snapshot(run)
    code, output = finish(start(tmp_path, f"resume={run}"))
    assert code == 2 and "Traceback" not in output, output
    (line,) = output.strip().splitlines()
    agents = "" if num_seeds == 1 else "(2, "
    key = "encoder.layers.0.weight: " if num_seeds == 1 else ""  # K > 1: the stacked layout's
    assert line.startswith(f"Config error: resume='{run}': the {which} in "
                           f"{run / 'checkpoints' / 'last.pt'} do not fit the network its "
                           "config describes (network=mlp with hidden_sizes=[16, 16], head=q"), line
    assert f"{key}{agents or '('}32, 4) in the checkpoint, {agents or '('}16, 4) in the network; " \
           "that last.pt cannot be continued" in line, line
    assert snapshot(run) == before  # no train.log, episodes.csv, .run.lock or .hydra-resume


@pytest.mark.parametrize("overrides", [[], ["num_seeds=2"], ["experiment=rainbow", "num_seeds=2"],
                                       ["head=c51", "head.noisy=true"],
                                       ["network.norm=layer", "head=qr"],
                                       ["head=iqn", "num_seeds=2"]])
def test_the_expected_shapes_are_those_of_the_networks_a_run_saves(tmp_path, overrides):
    """Networks built on the meta device have the shapes of the real ones, and the weights a
    run saves pass the check."""
    from dqn.cli.runs import check_weights_fit, expected_weight_shapes
    from dqn.config import validate
    from dqn.run.checkpoint import load_checkpoint

    weights = weights_of(*TINY_OVERRIDES, *overrides)
    config = validate(compose_config(*TINY_OVERRIDES, *overrides))
    assert expected_weight_shapes(config) == {k: tuple(v.shape) for k, v in weights.items()}
    craft_resumable_run(tmp_path / "run", *overrides)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    check_weights_fit(load_checkpoint(last), config, last, "resume=RUN")


# --- resume refuses a folder it cannot write, and changes nothing then --------------------
def refused_unwritable(run: Path, reason: str) -> str:
    return (f"Config error: resume='{run}': {run} is not writable ({reason}), and a resumed run "
            "writes its checkpoints, logs and lock there; make it writable, or copy the run "
            "folder somewhere writable and resume the copy")


@pytest.fixture
def read_only_run(tmp_path):
    """A resumable run folder on a file system mounted read-only (a tmpfs; skipped where
    mounting is not allowed)."""
    disk = mount_tmpfs(tmp_path / "disk", "4m")
    try:
        craft_resumable_run(disk / "run")
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        yield disk / "run"
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def test_a_run_on_a_read_only_file_system_is_refused_in_one_line(tmp_path, read_only_run):
    before = snapshot(read_only_run)
    code, output = finish(start(tmp_path, f"resume={read_only_run}"))
    assert code == 2 and "Traceback" not in output, output
    (line,) = output.strip().splitlines()
    assert line == refused_unwritable(read_only_run, "Read-only file system")
    assert snapshot(read_only_run) == before


# `python -m dqn.train ARGS` where the lock file cannot be opened for writing, as on a
# read-only file system (which root sees past no permission bit)
LOCK_ON_READ_ONLY_DISK = """
import errno, os, sys
real_open = os.open
def open_(path, flags, *args, **kwargs):
    if str(path).endswith(".run.lock") and flags & (os.O_WRONLY | os.O_RDWR):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
    return real_open(path, flags, *args, **kwargs)
os.open = open_
from dqn.cli.train import cli
cli(sys.argv[1:])
"""


def test_a_lock_that_cannot_be_written_is_refused_in_one_line(tmp_path):
    run = tmp_path / "run"
    craft_resumable_run(run)
    before = snapshot(run)
    result = run_python(tmp_path, "-c", LOCK_ON_READ_ONLY_DISK, f"resume={run}", timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line == refused_unwritable(run, "Read-only file system")
    assert snapshot(run) == before


@pytest.mark.parametrize("read_only,writable,reason", [
    (True, True, "Read-only file system"), (False, False, "Permission denied"),
    (False, True, None)])
def test_why_a_folder_cannot_be_written_is_found_without_writing(tmp_path, monkeypatch,
                                                                 read_only, writable, reason):
    from dqn.cli import runs

    flags = os.ST_RDONLY if read_only else 0
    monkeypatch.setattr(runs.os, "statvfs", lambda path: SimpleNamespace(f_flag=flags))
    monkeypatch.setattr(runs.os, "access", lambda path, mode: writable)
    assert runs.not_writable(tmp_path) == reason
    assert list(tmp_path.iterdir()) == []
