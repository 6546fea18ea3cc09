"""Runs started together never share a folder, and no run writes into a folder that a
live run owns."""

from __future__ import annotations

import csv
import datetime
import json
import subprocess
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import TINY_OVERRIDES
from tests.test_resume import finish, start

TINY = [*TINY_OVERRIDES, "logger=none"]




def taken_folders(root: Path, seconds: int = 30) -> list[Path]:
    """Folders named as `${now:%Y-%m-%d}/${now:%H-%M-%S}` would name them over the next
    `seconds`, each holding another run's file: a run started now finds its second taken."""
    now = datetime.datetime.now()
    folders = []
    for offset in range(seconds):
        moment = now + datetime.timedelta(seconds=offset)
        folder = root / moment.strftime("%Y-%m-%d") / moment.strftime("%H-%M-%S")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "other-run.txt").write_text("another run's record\n")
        folders.append(folder)
    return folders


def assert_consistent(run_dir: Path, seed: int) -> None:
    """One run's records: its overrides, summary and metrics all say the same run."""
    overrides = list(OmegaConf.load(run_dir / ".hydra" / "overrides.yaml"))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert f"seed={seed}" in overrides and summary["seed"] == seed
    assert summary["status"] == "completed"
    with (run_dir / "metrics.csv").open() as file:
        assert [int(r["env_step"]) for r in csv.DictReader(file)] == [300, 600]
    with (run_dir / "episodes.csv").open() as file:
        episodes = [int(r["episode"]) for r in csv.DictReader(file)]
    assert episodes == list(range(1, summary["episodes"] + 1))


def test_a_fresh_folder_is_claimed_once(tmp_path):
    from dqn.cli.runs import claim_fresh_dir

    base = str(tmp_path / "runs" / "12-00-00")
    claimed = [claim_fresh_dir(base) for _ in range(3)]
    assert [Path(c).name for c in claimed] == ["12-00-00", "12-00-00_2", "12-00-00_3"]


def test_runs_started_at_once_get_a_folder_each(tmp_path):
    processes = [start(tmp_path, *TINY, f"seed={seed}") for seed in range(3)]
    results = [finish(p) for p in processes]
    assert all(code == 0 for code, _ in results), results
    folders = sorted((tmp_path / "outputs" / "runs").glob("*/*"))
    assert len(folders) == 3
    seeds = {}
    for folder in folders:
        seeds[json.loads((folder / "summary.json").read_text())["seed"]] = folder
    assert sorted(seeds) == [0, 1, 2]
    for seed, folder in seeds.items():
        assert_consistent(folder, seed)


def test_a_run_in_the_same_second_as_another_gets_its_own_folder(tmp_path):
    taken = taken_folders(tmp_path / "outputs" / "runs")
    code, output = finish(start(tmp_path, *TINY, "seed=4"))
    assert code == 0, output
    for folder in taken:
        assert sorted(p.name for p in folder.iterdir()) == ["other-run.txt"]
    (run_dir,) = [p for p in (tmp_path / "outputs" / "runs").glob("*/*") if p not in taken]
    assert run_dir.name.split("_")[0] in {p.name for p in taken}  # TIME_2: still readable
    assert_consistent(run_dir, 4)


def test_a_sweep_in_the_same_second_as_another_gets_its_own_folder(tmp_path):
    taken = taken_folders(tmp_path / "outputs" / "multirun")
    code, output = finish(start(tmp_path, "-m", *TINY, "seed=5"))
    assert code == 0, output
    for folder in taken:
        assert sorted(p.name for p in folder.iterdir()) == ["other-run.txt"]
    (sweep,) = [p for p in (tmp_path / "outputs" / "multirun").glob("*/*") if p not in taken]
    (job,) = sweep.glob("0_*")
    assert_consistent(job, 5)
    assert f"{sweep.name}/summary.md" in output


def test_a_folder_a_live_run_owns_is_refused(tmp_path):
    """A second run into the same folder, or a resume of it, is refused in one line while
    the first runs; the first run's records stay its own."""
    first = start(tmp_path, *TINY, "train.total_steps=50000", "hydra.run.dir=run")
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "run" / "metrics.csv").exists():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        overrides = (tmp_path / "run" / ".hydra" / "overrides.yaml").read_text()
        for args in (["hydra.run.dir=run", *TINY, "seed=9"], [f"resume={tmp_path / 'run'}"]):
            code, output = finish(start(tmp_path, *args))
            assert code == 2 and "Traceback" not in output, output
            (line,) = output.strip().splitlines()
            assert "belongs to a run that is still going" in line and str(first.pid) in line
        assert (tmp_path / "run" / ".hydra" / "overrides.yaml").read_text() == overrides
        assert not (tmp_path / "run" / ".hydra-resume").exists()
    finally:
        first.kill()
        first.wait()


@pytest.fixture
def read_only(tmp_path):
    """A read-only folder (a read-only tmpfs; skipped where mounting is not allowed)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs",
                              str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=True)


@pytest.mark.parametrize("where,args,words", [
    ("cwd", [], "hydra.run.dir: cannot create run folders in 'outputs/runs/"),
    ("cwd", ["-m", "seed=0,1"], "hydra.sweep.dir: cannot create run folders in "
                                "'outputs/multirun/"),
    ("tmp", ["-m", "seed=0,1", "hydra.sweep.dir=read-only/sweep"],
     "hydra.sweep.dir='read-only/sweep' cannot be created"),
    ("tmp", ["hydra.run.dir=read-only"], "hydra.run.dir='read-only' cannot be written"),
])
def test_a_read_only_output_folder_is_one_line_before_any_job(read_only, where, args, words):
    cwd = read_only if where == "cwd" else read_only.parent
    code, output = finish(start(cwd, *TINY, *args))
    assert code == 2 and "Traceback" not in output, output
    (line,) = output.strip().splitlines()
    assert line.startswith("Config error: ") and words in line
    assert "Read-only file system" in line
    assert list(read_only.iterdir()) == []
