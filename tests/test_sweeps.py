"""Sweeps: summary statistics, grids with the basic launcher, failures, parallel jobs in
one dashboard, the submitit launcher, and Optuna on SQLite."""

from __future__ import annotations

import colorsys
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from dqn.cli.sweeps import bootstrap_ci, find_jobs, iqm, summary_markdown
from tests.conftest import REPO, run_python
from tests.conftest import TINY_OVERRIDES as TINY
from tests.dashboard import dashboard
from tests.test_cli import CURVES, dqn_train


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as file:
        return list(csv.DictReader(file))


def sweep_dir(cwd: Path) -> Path:
    (found,) = (cwd / "sweep").glob("summary.csv")
    return found.parent


def test_iqm_and_bootstrap():
    assert iqm([1, 2, 3, 4, 100, -100, 5, 6]) == pytest.approx(3.5)  # middle four: 2..5
    values = np.arange(20.0)
    low, high = bootstrap_ci(values)
    assert low < iqm(values) < high
    assert (low, high) == bootstrap_ci(values)  # seeded
    outlier = np.append(values, 1e6)  # one wild seed moves the mean's CI, not the IQM's
    assert bootstrap_ci(outlier)[1] < 20 < bootstrap_ci(outlier, statistic="mean")[1]
    assert bootstrap_ci([7.0]) == (7.0, 7.0)


def fake_job(root: Path, name: str, overrides: list[str], final: float | None,
             evals: list[tuple[int, float]], status: str = "completed") -> None:
    path = root / name
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (path / ".hydra" / "config.yaml").write_text("env:\n  id: CartPole-v1\n")
    summary = {"status": status, "seed": int(overrides[0].split("=")[1]),
               "target_return": None, "solved_step": None}
    if final is not None:
        summary["final_eval"] = {"mean": final, "std": 0.0}
    (path / "summary.json").write_text(json.dumps(summary))
    rows = "".join(f"{s},0,{s / 1000},{r},0,{r},{r},{r},0.1\n" for s, r in evals)
    (path / "metrics.csv").write_text(
        "env_step,episodes,wall_seconds,eval_return_mean,eval_return_std,eval_return_min,"
        "eval_return_max,best_return,epsilon\n" + rows)


def test_summary_groups_by_configuration_and_aggregates(tmp_path):
    fake_job(tmp_path, "0_a", ["seed=0", "target=hard"], 500.0, [(1000, 100), (2000, 480)])
    fake_job(tmp_path, "1_b", ["seed=1", "target=hard"], 300.0, [(1000, 50), (2000, 300)])
    fake_job(tmp_path, "2_c", ["seed=0", "target=soft"], 490.0, [(1000, 490)])
    fake_job(tmp_path, "3_d", ["seed=1", "target=soft"], None, [], status="failed")
    jobs = find_jobs([tmp_path])
    assert [job.path.name for job in jobs] == ["0_a", "1_b", "2_c", "3_d"]
    table = summary_markdown(jobs)
    hard = next(line for line in table.splitlines() if line.startswith("| target=hard"))
    soft = next(line for line in table.splitlines() if line.startswith("| target=soft"))
    # seeds, failed, solved (threshold: CartPole-v1's 475), mean, IQM of the final eval
    assert hard.split(" | ")[1:6] == ["2", "0", "1/2", "400.0", "400.0"]
    assert soft.split(" | ")[1:6] == ["1", "1", "1/1", "490.0", "490.0"]
    # steps to solve: first evaluation >= 475, over the seeds that got there
    assert hard.split(" | ")[8] == "2000.0" and soft.split(" | ")[8] == "1000.0"


def test_runs_with_damaged_records_are_listed_not_fatal(tmp_path):
    fake_job(tmp_path, "0_a", ["seed=0", "target=hard"], 500.0, [(1000, 100), (2000, 480)])
    fake_job(tmp_path, "1_b", ["seed=1", "target=hard"], 300.0, [(1000, 50)])
    (tmp_path / "1_b" / "summary.json").write_text('{"status": "comp')  # killed mid-write
    with (tmp_path / "1_b" / "metrics.csv").open("a") as file:
        file.write("3000,0,3.0,,,,,,0.1\nnot,a,number\n")  # a row without an evaluation
    result = run_python(tmp_path, str(REPO / "scripts" / "compare.py"), str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "2 runs; wrote" in result.stdout
    jobs = find_jobs([tmp_path])
    assert jobs[1].summary == {} and [e["env_step"] for e in jobs[1].evaluations] == [1000]


def test_grid_with_the_basic_launcher(tmp_path):
    result = dqn_train(tmp_path, "-m", "seed=0,1", "target=hard,soft", "logger=none",
                       "hydra.sweep.dir=sweep", *TINY)
    assert result.returncode == 0, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("sweep: 4 succeeded, 0 failed")
    assert last.endswith("configurations in the board: python scripts/compare.py sweep --board")
    assert "`python scripts/compare.py sweep --board`" in (tmp_path / "sweep" /
                                                          "summary.md").read_text()
    rows = read_csv(tmp_path / "sweep" / "summary.csv")
    assert len(rows) == 4 and {r["status"] for r in rows} == {"completed"}
    assert sorted((r["seed"], "target=soft" in r["overrides"]) for r in rows) == \
        [("0", False), ("0", True), ("1", False), ("1", True)]
    for row in rows:
        job = json.loads((tmp_path / "sweep" / row["job"] / "summary.json").read_text())
        assert float(row["final_mean"]) == pytest.approx(job["final_eval"]["mean"])
    table = (tmp_path / "sweep" / "summary.md").read_text()
    assert "| target=hard | 2 | 0 |" in table and "| target=soft | 2 | 0 |" in table
    assert (tmp_path / "sweep" / "curves.png").stat().st_size > 10_000


def test_a_failing_job_is_recorded_and_the_sweep_goes_on(tmp_path):
    # lr=1e30 without clipping passes every check and diverges while training
    result = dqn_train(tmp_path, "-m", "optimizer.lr=1e+30,0.001",
                       "optimizer.clip_grad_norm=null", "logger=none", "hydra.sweep.dir=sweep",
                       *TINY)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("sweep: 1 succeeded, 1 failed")
    rows = {next(o for o in r["overrides"].split() if o.startswith("optimizer.lr")): r
            for r in read_csv(tmp_path / "sweep" / "summary.csv")}
    assert rows["optimizer.lr=1e+30"]["status"] == "failed"
    assert "became non-finite" in rows["optimizer.lr=1e+30"]["error"]
    assert rows["optimizer.lr=0.001"]["status"] == "completed"
    assert "| optimizer.lr=1e+30 | 0 | 1 |" in (tmp_path / "sweep" / "summary.md").read_text()


def test_a_sweep_with_a_wrong_value_is_refused_before_any_job(tmp_path):
    result = dqn_train(tmp_path, "-m", "train.gamma=1.5,0.99", "seed=0,1", "logger=none",
                       "hydra.sweep.dir=sweep", *TINY)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "train.gamma=1.5 is out of range" in lines[0]
    assert "(a job of the sweep: " in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_parallel_jobs_all_reach_the_dashboard(tmp_path):
    result = dqn_train(tmp_path, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4",
                       "seed=0,1,2,3", "hydra.sweep.dir=sweep", "logger.every_steps=100",
                       *TINY)
    assert result.returncode == 0, result.stderr
    with dashboard(tmp_path / "outputs" / "swanlog") as board:
        experiments = board.experiments()
        assert sorted(e["name"].split("seed=")[1][0] for e in experiments) == list("0123")
        for experiment in experiments:
            assert experiment["status"] == 1
            assert CURVES <= board.metric_keys(experiment["id"])
            assert len(board.series(experiment["id"], "train/epsilon")) == 6  # 600 / 100
            assert len(board.series(experiment["id"], "eval/return_mean")) == 2


def test_submitit_local_launcher(tmp_path):
    result = dqn_train(tmp_path, "-m", "hydra/launcher=submitit_local", "seed=0,1",
                       "logger=none", "hydra.sweep.dir=sweep", *TINY)
    assert result.returncode == 0, result.stderr
    rows = read_csv(tmp_path / "sweep" / "summary.csv")
    assert [r["status"] for r in rows] == ["completed", "completed"]


def test_optuna_study_on_sqlite_resumes_and_survives_failed_trials(tmp_path):
    optuna = pytest.importorskip("optuna")
    common = ["sweep=optuna", "logger=none", *TINY]
    first = dqn_train(tmp_path, "hydra.sweeper.n_trials=3", "hydra.sweep.dir=first", *common)
    assert first.returncode == 0, first.stderr
    study = optuna.load_study(study_name="dqn-CartPole-v1",
                              storage=f"sqlite:///{tmp_path / 'outputs' / 'optuna.db'}")
    assert len(study.trials) == 3
    # Resume the same study; these two trials fail (invalid gamma) without aborting it.
    second = dqn_train(tmp_path, "hydra.sweeper.n_trials=2", "hydra.sweep.dir=second",
                       "train.gamma=1.5", *common)
    assert second.returncode == 1
    assert second.stderr.strip().splitlines()[-1].startswith("sweep: 0 succeeded, 2 failed")
    study = optuna.load_study(study_name="dqn-CartPole-v1",
                              storage=f"sqlite:///{tmp_path / 'outputs' / 'optuna.db'}")
    states = [trial.state.name for trial in study.trials]
    assert states == ["COMPLETE"] * 3 + ["FAIL"] * 2


def test_dashboard_names_lead_with_what_differs_and_colour_by_configuration(tmp_path):
    """2 x 2 configurations x 2 seeds: names carry the swept overrides, seed last (not the
    constant ones), and the runs of one configuration share a hue."""
    result = dqn_train(tmp_path, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                       "seed=0,1", "target=hard,soft", "exploration=linear,exponential",
                       "hydra.sweep.dir=sweep", *TINY)
    assert result.returncode == 0, result.stderr
    with dashboard(tmp_path / "outputs" / "swanlog") as board:
        experiments = board.experiments()
    names = sorted(e["name"] for e in experiments)
    assert names == sorted(f"exploration={x} · target={t} · seed={s}" for x in
                           ("linear", "exponential") for t in ("hard", "soft") for s in (0, 1))
    hues: dict[str, set[float]] = {}
    for e in experiments:
        rgb = tuple(int(e["light"][i:i + 2], 16) / 255 for i in (1, 3, 5))
        configuration = e["name"].rsplit(" · seed=", 1)[0]
        hues.setdefault(configuration, set()).add(round(colorsys.rgb_to_hls(*rgb)[0], 2))
    assert all(len(h) == 1 for h in hues.values())  # one hue per configuration
    assert len({h for group in hues.values() for h in group}) == 4  # distinct hues


def test_unknown_launcher_key_is_one_line_before_any_job(tmp_path):
    result = dqn_train(tmp_path, "-m", "hydra/launcher=cluster", "hydra.launcher.partiton=gpu",
                       "seed=0,1", "hydra.sweep.dir=sweep")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "Config error: hydra.launcher.partiton: not a setting of hydra/launcher=cluster (its "
        "settings: conf/hydra/launcher/cluster.yaml and the plugin's documentation)"]
    assert not (tmp_path / "sweep").exists()


def test_launcher_key_added_with_plus_is_checked_too(tmp_path):
    result = dqn_train(tmp_path, "-m", "hydra/launcher=ray", "+hydra.launcher.ray.remote.cpus=1",
                       "seed=0,1", "hydra.sweep.dir=sweep")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Config error: hydra.launcher.ray.remote.cpus: not a setting of "
                           "ray.remote (allowed: ")
    assert not (tmp_path / "sweep").exists()
