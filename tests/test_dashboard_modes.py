"""What SwanLab keeps in each logger mode (docs/dashboard.md), read back with SwanLab's own
reader of run files (the one `swanlab sync` replays), and `logger.project`, which the local
dashboard shows only in a folder of its own. Nothing here may reach a server: the API and
web hosts point at a closed local port."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import pytest

from dqn.run.tracking import SwanLabConfig, hidden_project_warning
from tests.conftest import TINY_OVERRIDES, run_python

pytest.importorskip("swanboard")
from swanlab.proto.swanlab.record.v1.record_pb2 import Record  # noqa: E402
from swanlab.proto.swanlab.run.v1.run_pb2 import RunState  # noqa: E402
from swanlab.sdk.internal.core_python.store import DataStoreReader  # noqa: E402

NO_SERVER = {"SWANLAB_API_HOST": "http://127.0.0.1:9", "SWANLAB_WEB_HOST": "http://127.0.0.1:9"}
CREATE_BOARD = ("import os; from swanboard.db import connect; from swanboard.db.models import "
                "Project; os.mkdir('swanlog'); connect(autocreate=True, path='swanlog'); "
                "Project.init('dqn')")  # as SwanLab's local mode does on a first run


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """A log folder whose local dashboard holds project 'dqn' (as after any run of the
    default project), then one run of project 'other' logged offline and one logged
    locally into it."""
    cwd = tmp_path_factory.mktemp("modes")
    assert run_python(cwd, "-c", CREATE_BOARD).returncode == 0
    results = {}
    for mode in ("offline", "local"):
        env = {**NO_SERVER, **({"SWANLAB_MODE": "offline"} if mode == "offline" else {})}
        results[mode] = run_python(cwd, "-m", "dqn.train", *TINY_OVERRIDES,
                                   f"logger.mode={mode}", "logger.log_dir=swanlog",
                                   "logger.project=other", f"hydra.run.dir={mode}", env=env)
        assert results[mode].returncode == 0, results[mode].stderr
    return {"cwd": cwd, **results}


def records(run_dir: Path) -> list[Record]:
    """Every record of the run's one run-*.swanlab file, as `swanlab sync` reads them."""
    (path,) = run_dir.glob("run-*.swanlab")
    reader = DataStoreReader()
    reader.open(path)
    try:
        return [Record.FromString(data) for data in reader]
    finally:
        reader.close()


def swanlab_folder(cwd: Path, mode: str) -> Path:
    run_id = json.loads((cwd / mode / "summary.json").read_text())["swanlab_run_id"]
    (folder,) = (cwd / "swanlog").glob(f"run-*-{run_id}")
    return folder


def test_an_offline_run_folder_holds_the_whole_record_for_swanlab_sync(runs):
    cwd = runs["cwd"]
    folder = swanlab_folder(cwd, "offline")
    kept = records(folder)
    assert kept[0].WhichOneof("record_type") == "start"
    assert (kept[0].start.project, kept[0].start.id) == ("other", folder.name.split("-")[-1])
    assert kept[-1].finish.state == RunState.RUN_STATE_FINISHED
    scalars = {(r.scalar.key, r.scalar.step): r.scalar.value.number
               for r in kept if r.WhichOneof("record_type") == "scalar"}
    with (cwd / "offline" / "metrics.csv").open() as file:
        for row in csv.DictReader(file):
            assert scalars[("eval/return_mean", int(row["env_step"]))] == pytest.approx(
                float(row["eval_return_mean"]))
    assert (folder / "files" / "config.yaml").is_file()
    assert not (folder / "logs").exists()  # the local dashboard's copy: local mode only
    assert "logger.project" not in runs["offline"].stdout + runs["offline"].stderr


def test_a_project_the_local_dashboard_would_hide_is_named_at_start(runs):
    output = runs["local"].stdout + runs["local"].stderr
    assert ("logger.project='other' is not shown by the local dashboard: swanlog already "
            "holds project 'dqn' and this run is listed under it (one project per folder); "
            "to see 'other' apart, also set logger.log_dir=swanlog-other") in output
    with sqlite3.connect(runs["cwd"] / "swanlog" / "runs.swanlab") as board:
        projects = board.execute("SELECT name FROM project").fetchall()
        listed = board.execute("SELECT project_id FROM experiment").fetchall()
    assert projects == [("dqn",)] and listed == [(1,)]  # what the warning says


def test_a_local_run_keeps_the_same_record_as_an_offline_one(runs):
    kept = records(swanlab_folder(runs["cwd"], "local"))
    assert kept[0].start.project == "other"  # a later `swanlab sync` puts it there
    assert kept[-1].finish.state == RunState.RUN_STATE_FINISHED


@pytest.mark.parametrize("mode,project,board,warned", [
    ("local", "other", True, True), ("local", "dqn", True, False),
    ("local", "other", False, False), ("offline", "other", True, False)])
def test_only_a_local_run_into_another_projects_folder_is_warned(tmp_path, mode, project,
                                                                 board, warned):
    if board:
        assert run_python(tmp_path, "-c", CREATE_BOARD).returncode == 0
    cfg = SwanLabConfig(mode=mode, project=project, log_dir=str(tmp_path / "swanlog"))
    assert (hidden_project_warning(cfg) is not None) == warned
