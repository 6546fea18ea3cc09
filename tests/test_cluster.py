"""Sweeps on real engines: a single-node Slurm (scripts/slurm_local.sh) and a local Ray
head (one with token authentication, one without), both started here and stopped even when
a test fails: Slurm by its daemons' process ids, Ray with `ray stop`.
Run with `python -m pytest -m cluster`; skipped with the reason when an engine is missing."""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from tests.dashboard import dashboard

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[1]
QUICK = ["train.total_steps=1500", "eval.every_steps=500", "eval.episodes=2",
         "eval.final_episodes=3"]


def _unavailable(reason: str) -> None:
    """Skip, with the reason, when an engine cannot be brought up here; fail instead where
    DQN_REQUIRE_CLUSTER=1 (CI), so that a green run means the engines ran."""
    if os.environ.get("DQN_REQUIRE_CLUSTER") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def _need_ray() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        _unavailable("Ray not installed: pip install -e '.[ray]'")


def _free_port_base() -> int:
    for base in range(16817, 17817, 10):
        try:
            for port in (base, base + 1):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no free ports for Slurm")


@pytest.fixture(scope="module")
def slurm():
    """A Slurm controller and node daemon for this module, in a short folder under /tmp
    (munge's socket path must stay under 108 bytes); its environment for sbatch."""
    missing = [t for t in ("munged", "slurmctld", "slurmd", "sbatch") if not shutil.which(t)]
    if missing:
        _unavailable(f"Slurm not installed ({', '.join(missing)} missing): "
                     "apt-get install slurm-wlm munge")
    env = {**os.environ, "SLURM_LOCAL_PORT_BASE": str(_free_port_base())}
    script = [str(ROOT / "scripts" / "slurm_local.sh")]
    with tempfile.TemporaryDirectory(prefix="slurm", dir="/tmp") as state:
        try:
            up = subprocess.run([*script, "up", state], env=env, capture_output=True,
                                text=True, timeout=120)
            if up.returncode != 0:
                _unavailable(f"Slurm did not come up: {up.stderr.strip()[-300:]}")
            yield {**env, "SLURM_CONF": f"{state}/slurm.conf"}
        finally:
            subprocess.run([*script, "down", state], env=env, capture_output=True, timeout=120)


def _sweep(args: list[str], env: dict, cwd: Path, timeout: int = 900):
    return subprocess.run([sys.executable, "-m", "dqn.train", "-m", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _rows(sweep_dir: Path) -> list[dict]:
    with open(sweep_dir / "summary.csv") as f:
        return list(csv.DictReader(f))


def _squeue(env: dict) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i %T"], env=env, capture_output=True,
                         text=True, timeout=30).stdout
    return out.split("\n") if out.strip() else []


def _listening(ports: set[int]) -> set[str]:
    """The addresses that TCP sockets listening on these ports are bound to (/proc/net)."""
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port = local.split(":")
            if state == "0A" and int(port, 16) in ports:  # 0A: LISTEN
                addresses.add(address)
    return addresses


def test_local_slurm_listens_on_loopback_only(slurm):
    base = int(slurm["SLURM_LOCAL_PORT_BASE"])
    assert _listening({base, base + 1}) == {"0100007F"}  # 127.0.0.1, nothing else


SLURM = ["hydra/launcher=cluster", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]


def test_slurm_array_runs_every_job_and_the_dashboard_lists_them(slurm, tmp_path):
    sweep_dir = tmp_path / "sweep"
    done = _sweep([*SLURM, "seed=0,1,2,3", *QUICK, f"hydra.sweep.dir={sweep_dir}",
                   f"logger.log_dir={tmp_path / 'swanlog'}"], slurm, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = _rows(sweep_dir)
    assert sorted(r["seed"] for r in rows) == ["0", "1", "2", "3"]
    assert {r["status"] for r in rows} == {"completed"}
    # the jobs went through sbatch as one array: submitit's folders are named JOB_TASK
    arrays = {p.name.split("_")[0] for p in (sweep_dir / ".submitit").iterdir()
              if p.name[0].isdigit()}
    assert len(arrays) == 1
    with dashboard(tmp_path / "swanlog") as board:
        names = sorted(e["name"] for e in board.experiments())
    assert names == ["seed=0", "seed=1", "seed=2", "seed=3"]


def test_slurm_failed_job_is_recorded_and_the_others_finish(slurm, tmp_path):
    sweep_dir = tmp_path / "sweep"
    # lr=1e30 without clipping passes every check and diverges while training
    done = _sweep([*SLURM, "seed=0,1", "optimizer.lr=0.001,1e+30",
                   "optimizer.clip_grad_norm=null", *QUICK, "logger=none",
                   f"hydra.sweep.dir={sweep_dir}"], slurm, tmp_path)
    assert done.returncode != 0  # the sweep reports its failures
    rows = _rows(sweep_dir)
    assert len(rows) == 4
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 2 and all("non-finite" in r["error"] for r in failed)
    assert sum(r["status"] == "completed" for r in rows) == 2


def _first_job_log(sweep_dir: Path, text: str, timeout: float = 300) -> Path:
    """The sweep's first job's train.log, once it holds `text`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        logs = list(sweep_dir.glob("0_*/train.log"))
        if logs and text in logs[0].read_text():
            return logs[0]
        time.sleep(1)
    raise AssertionError(f"the job's train.log did not show {text!r} within {timeout:g} s")


def test_slurm_requeued_job_continues_bitwise(slurm, tmp_path):
    """A job stopped by the engine (scancel --signal=TERM, as a preemption) saves last.pt,
    requeues itself and continues under its name; its best checkpoint is the uninterrupted
    run's."""
    sweep_dir = tmp_path / "sweep"
    args = ["train.total_steps=30000", "eval.every_steps=5000", "eval.final_episodes=3"]
    sweep = subprocess.Popen([sys.executable, "-m", "dqn.train", "-m", *SLURM, "seed=0",
                              *args, f"hydra.sweep.dir={sweep_dir}",
                              f"logger.log_dir={tmp_path / 'swanlog'}"], cwd=tmp_path,
                             env=slurm, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        log = _first_job_log(sweep_dir, "step 10000")  # well into training
        job = _squeue(slurm)[0].split()[0]
        subprocess.run(["scancel", "--signal=TERM", job], env=slurm, check=True, timeout=30)
        assert sweep.wait(timeout=600) == 0
    finally:
        if sweep.poll() is None:
            sweep.send_signal(signal.SIGINT)
            try:
                sweep.wait(timeout=60)
            except subprocess.TimeoutExpired:
                sweep.kill()
                sweep.wait(timeout=60)
    text = log.read_text()
    assert "SIGTERM: stopped at env step" in text and f"requeued Slurm job {job}" in text
    assert "resumed" in text
    with dashboard(tmp_path / "swanlog") as board:  # local SwanLab: a second run on resume
        assert sorted(e["name"] for e in board.experiments()) == ["seed=0", "seed=0 (resumed)"]
    local = subprocess.run([sys.executable, "-m", "dqn.train", "seed=0", *args, "logger=none",
                            f"hydra.run.dir={tmp_path / 'local'}"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=600)
    assert local.returncode == 0, local.stderr[-2000:]
    ours = torch.load(log.parent / "checkpoints" / "best.pt", weights_only=False)
    theirs = torch.load(tmp_path / "local" / "checkpoints" / "best.pt", weights_only=False)
    assert ours["env_step"] == theirs["env_step"]
    assert all(torch.equal(ours["model"][k], theirs["model"][k]) for k in theirs["model"])


def test_slurm_cancelled_job_is_not_requeued(slurm, tmp_path):
    """A plain `scancel` also sends SIGTERM, but the job is being cancelled: it saves
    last.pt and stays cancelled. (Without accounting, submitit cannot tell that the job was
    cancelled and would wait for it: the sweep process is stopped here.)"""
    sweep_dir = tmp_path / "sweep"
    sweep = subprocess.Popen([sys.executable, "-m", "dqn.train", "-m", *SLURM, "seed=0",
                              "train.total_steps=30000", "logger=none",
                              f"hydra.sweep.dir={sweep_dir}"], cwd=tmp_path, env=slurm,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        log = _first_job_log(sweep_dir, "step 5000")
        job = _squeue(slurm)[0].split()[0]
        subprocess.run(["scancel", job], env=slurm, check=True, timeout=30)
        _first_job_log(sweep_dir, "requeue")
        time.sleep(3)
        assert _squeue(slurm) == []
    finally:
        sweep.kill()
        sweep.wait(timeout=60)
    text = log.read_text()
    assert "SIGTERM: stopped at env step" in text and "not requeued" in text
    assert (log.parent / "checkpoints" / "last.pt").is_file()


def test_slurm_bad_partition_is_one_line_before_submitting(slurm, tmp_path):
    done = _sweep([*SLURM, "hydra.launcher.partition=nope", "seed=0,1", *QUICK,
                   f"hydra.sweep.dir={tmp_path / 'sweep'}"], slurm, tmp_path, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "Config error: hydra.launcher.partition='nope': no such partition on this Slurm "
        "(it has: debug)"]
    assert not (tmp_path / "sweep").exists() and _squeue(slurm) == []


# --- Ray ---------------------------------------------------------------------------------
@contextlib.contextmanager
def _ray_env():
    """Ray's environment with a home and a temp folder of its own, the folder short enough
    for the sockets Ray puts in it (107 bytes at most)."""
    with tempfile.TemporaryDirectory(prefix="ray", dir="/tmp") as temp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
        env.update(RAY_USAGE_STATS_ENABLED="0", HOME=f"{temp}/home", RAY_TMPDIR=temp)
        yield env


@pytest.fixture(scope="module", params=["token", "open"])
def ray_head(request: pytest.FixtureRequest):
    """`ray start --head --block` on this machine, with a home and a temp folder of its own:
    with a token in ~/.ray/auth_token (which Ray's own local ray.init() writes), Ray turns
    token authentication on; without one the head is open. Its processes share one process
    group, stopped by its id (`ray stop` would stop every Ray on the machine)."""
    ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if ray is None:
        _unavailable("Ray not installed: pip install -e '.[ray]'")
    with _ray_env() as env:
        if request.param == "token":
            subprocess.run([ray, "get-auth-token", "--generate"], env=env,
                           capture_output=True, check=True, timeout=60)
        log = Path(env["RAY_TMPDIR"]) / "head.log"
        with log.open("w") as out:  # the head keeps its own copy of the file
            head = subprocess.Popen([ray, "start", "--head", "--block", "--port=0",
                                     "--num-cpus=2", "--include-dashboard=false",
                                     "--disable-usage-stats"], env=env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        try:
            current = Path(env["RAY_TMPDIR"]) / "ray" / "ray_current_cluster"
            deadline = time.time() + 180
            while not current.is_file() and head.poll() is None and time.time() < deadline:
                time.sleep(0.25)
            if not current.is_file():
                _unavailable(f"ray start failed: {log.read_text()[-300:]}")
            yield env, current.read_text().strip(), ray
        finally:
            os.killpg(head.pid, signal.SIGINT)
            try:
                head.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(head.pid, signal.SIGKILL)
                head.wait(timeout=60)


def test_ray_sweep_against_a_running_head_loses_no_run(ray_head, tmp_path):
    """The head with a token is given by its address (a ray.init given one sends no token
    unless told to), the open one by `auto`."""
    env, address, ray = ray_head
    token = (Path(env["HOME"]) / ".ray" / "auth_token").is_file()
    sweep_dir = tmp_path / "sweep"
    given = address if token else "auto"
    done = _sweep(["hydra/launcher=ray", f"hydra.launcher.ray.init.address={given}",
                   "seed=0,1,2,3", *QUICK, f"hydra.sweep.dir={sweep_dir}",
                   f"logger.log_dir={tmp_path / 'swanlog'}"], env, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = _rows(sweep_dir)
    assert sorted(r["seed"] for r in rows) == ["0", "1", "2", "3"]
    assert {r["status"] for r in rows} == {"completed"}
    with dashboard(tmp_path / "swanlog") as board:
        assert len(board.experiments()) == 4
    # `ray status` given an address sends the token only when told to: the head with a
    # token answers only then, so the sweep above had to send it

    def ray_status(mode: str) -> subprocess.CompletedProcess:
        return subprocess.run([ray, "status", f"--address={address}"],
                              env={**env, "RAY_AUTH_MODE": mode}, capture_output=True,
                              text=True, timeout=60)

    assert "CPU" in ray_status("token" if token else "disabled").stdout
    if token:
        assert ray_status("disabled").returncode != 0


def test_ray_sweep_on_a_ray_started_for_it(tmp_path):
    """The default, address null: the sweep starts a Ray of its own, runs every job on it
    and stops it (its token goes to the home Ray writes it to)."""
    _need_ray()
    sweep_dir = tmp_path / "sweep"
    with _ray_env() as env:
        done = _sweep(["hydra/launcher=ray", "seed=0,1", *QUICK, f"hydra.sweep.dir={sweep_dir}",
                       f"logger.log_dir={tmp_path / 'swanlog'}"], env, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Started a local Ray instance" in done.stderr
    assert [(r["seed"], r["status"]) for r in _rows(sweep_dir)] == [("0", "completed"),
                                                                     ("1", "completed")]


def test_ray_address_that_does_not_answer_is_one_line(tmp_path):
    _need_ray()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = _sweep(["hydra/launcher=ray", f"hydra.launcher.ray.init.address=127.0.0.1:{port}",
                   "seed=0,1", f"hydra.sweep.dir={tmp_path / 'sweep'}"], dict(os.environ),
                  tmp_path, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"Config error: hydra.launcher.ray.init.address='127.0.0.1:{port}' does not answer "
        "(Connection refused)"]


def test_ray_auto_with_no_cluster_here_is_one_line(tmp_path):
    _need_ray()
    env = {**os.environ, "RAY_TMPDIR": str(tmp_path)}  # where `ray start` would write
    done = _sweep(["hydra/launcher=ray", "hydra.launcher.ray.init.address=auto", "seed=0,1",
                   f"hydra.sweep.dir={tmp_path / 'sweep'}"], env, tmp_path, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "Config error: hydra.launcher.ray.init.address='auto': no Ray cluster is running on "
        "this machine (start one with `ray start --head`, or give its address)"]
    assert not (tmp_path / "sweep").exists()
