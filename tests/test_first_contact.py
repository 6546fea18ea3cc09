"""What a new user meets first: overrides written the way a shell invites (a group given a
value, a key twice, a sweep without -m, -m at the end), a clone named `dqn` in the
working directory, a missing extra, and the line a run starts with."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from tests.conftest import (
    REPO,
    TINY_OVERRIDES,
    compose_config,
    refused_in_one_line,
    run_python,
)

CASES = [
    (["optimizer=0.001"], "optimizer=0.001: optimizer is a config group and takes the name of "
                          "one of its options (adam, adamw, radam, rmsprop)"),
    (["optimizer=null"], "optimizer=null: optimizer is a config group"),
    (["experiment=null"], "leave experiment out to use none"),
    (["-m", "target=hard,0.5"], "target=0.5: target is a config group"),
    (["seed=0,1"], "seed=0,1 is a sweep (one run per value): add -m"),
    (["-m", "seed=0,1", "seed=2,3"], "seed is given twice (seed=0,1 and seed=2,3): a sweep"),
    (["-m", "seed=0,1", "seed=2"], "seed is given twice (seed=0,1 and seed=2)"),
    (["-m", "seed=range(0,3"], "cannot read the override 'seed=range(0,3'"),
    (["train.gamma=[0.9"], "cannot read the override 'train.gamma=[0.9'"),
    (["hydra.run.dir="], "hydra.run.dir='' would put the run's files in the working directory"),
    (["logger.log_dir=/proc/no/such"], "logger.log_dir='/proc/no/such' cannot be created"),
    (["-m", "seed=0,1", "+hydra.launcher.foo=1"],
     "hydra.launcher.foo: not a setting of the BasicLauncherConf (it has none)"),
    (["logger.project=my/runs"], "logger.project='my/runs' is out of range: SwanLab takes"),
    (["--cfg", "job", "foo=1"], "Could not override 'foo'. Key 'foo' not in 'Config'"),
    (["--cfg", "job", "optimizer=0.001"], "optimizer=0.001: optimizer is a config group"),
    (["--cfg", "nonsense"], "Usage error: argument --cfg/-c: invalid choice: 'nonsense'"),
    (["--bogus"], "Usage error: unrecognized arguments: --bogus"),
    (["-m", "seed=0,1", "--cfg", "job"], "Usage error: -m and --cfg cannot be given together"),
    (["-m", "hydra/launcher=joblib", "seed=0,1", "+hydra.launcher.jobs=2"],
     "hydra.launcher.jobs: not a setting of the JobLibLauncherConf (allowed: backend"),
]


@pytest.mark.parametrize("args,words", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_override_mistake_is_one_line_before_anything_is_written(tmp_path, args, words):
    assert words in refused_in_one_line(tmp_path, *args)


BLOCK_EXTRA = """
import sys
class Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r} or name.startswith({PLUGINS!r}):
            raise ModuleNotFoundError(f"No module named {{name!r}}")
sys.meta_path.insert(0, Missing())
"""


@pytest.mark.parametrize("args,extra,blocked", [
    (["-m", "hydra/launcher=ray", "seed=0,1"], "ray", ("ray", "hydra_plugins.hydra_ray")),
    (["sweep=optuna"], "optuna", ("optuna", "hydra_plugins.hydra_optuna")),
])
def test_a_missing_extra_is_named(tmp_path, args, extra, blocked):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        BLOCK_EXTRA.format(BLOCKED={blocked[0]}, PLUGINS=blocked[1]))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    result = run_python(cwd, "-m", "dqn.train", *args,
                        env={"PYTHONPATH": f"{site}{os.pathsep}{REPO}"}, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f'needs the {extra} extra, which is not installed: pip install -e ".[{extra}]"' \
        in result.stderr.strip().splitlines()[-1]
    assert list(cwd.iterdir()) == []


# A preset of one's own (found through hydra.searchpath) that picks the Ray launcher: for a
# sweep given -m, and as a sweep by itself (hydra.mode: MULTIRUN).
RAY_PRESETS = {
    "on_ray": "# @package _global_\ndefaults:\n  - override /hydra/launcher: ray\n",
    "ray_sweep": "# @package _global_\ndefaults:\n  - override /hydra/launcher: ray\n"
                 "hydra:\n  mode: MULTIRUN\n  sweeper:\n    params:\n      seed: 0,1\n",
}
# Hydra finds its plugins by listing the hydra_plugins folders: the Ray plugin hidden there
# too, as where it was never installed (Hydra then knows no RayLauncher: "Unknown plugin
# class" once the sweep starts).
HIDE_FROM_HYDRA = """
import pkgutil
_iter_modules = pkgutil.iter_modules
pkgutil.iter_modules = lambda path=None, prefix="": (
    module for module in _iter_modules(path, prefix) if "hydra_ray" not in module.name)
"""


@pytest.mark.parametrize("args", [["-m", "experiment=on_ray", "seed=0,1"],
                                  ["experiment=ray_sweep"]])
def test_a_launcher_chosen_by_a_preset_names_its_missing_extra(tmp_path, args):
    presets = tmp_path / "presets" / "experiment"
    presets.mkdir(parents=True)
    for name, text in RAY_PRESETS.items():
        (presets / f"{name}.yaml").write_text(text)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        BLOCK_EXTRA.format(BLOCKED={"ray"}, PLUGINS="hydra_plugins.hydra_ray")
        + HIDE_FROM_HYDRA)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    result = run_python(cwd, "-m", "dqn.train", *args,
                        f"hydra.searchpath=[file://{tmp_path / 'presets'}]",
                        env={"PYTHONPATH": f"{site}{os.pathsep}{REPO}"}, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        'Config error: hydra/launcher=ray needs the ray extra, which is not installed: '
        'pip install -e ".[ray]"']
    assert list(cwd.iterdir()) == []


def test_a_sweep_over_presets_of_one_s_own_checks_each_job(tmp_path):
    """Its jobs are composed with the search path that finds the presets (it was left out,
    and every such sweep was refused as naming no preset)."""
    presets = tmp_path / "presets" / "experiment"
    presets.mkdir(parents=True)
    (presets / "fine.yaml").write_text("# @package _global_\nseed: 3\n")
    (presets / "bad.yaml").write_text("# @package _global_\ntrain:\n  gamma: 1.5\n")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    line = refused_in_one_line(cwd, "-m", "experiment=fine,bad",
                               f"hydra.searchpath=[file://{tmp_path / 'presets'}]")
    assert line == ("Config error: train.gamma=1.5 is out of range: must be in [0, 1] (a job of "
                    "the sweep: experiment=bad)")


@pytest.mark.parametrize("overrides,missing,words", [
    (["hydra/launcher=ray"], "ray", "hydra/launcher=ray needs the ray extra"),
    (["sweep=optuna"], "optuna", "hydra/sweeper=optuna needs the optuna extra"),
])
def test_the_plugins_a_composed_config_chose_must_be_installed(monkeypatch, overrides, missing,
                                                               words):
    import importlib.util

    from hydra import compose, initialize_config_dir

    from dqn.checks import ConfigError
    from dqn.cli import launchers
    from dqn.cli.conf import CONF_DIR, register_schemas

    register_schemas()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"), \
            warnings.catch_warnings():  # as the command line does (dqn/cli/train.py)
        warnings.filterwarnings("ignore", message="(?s).*validated against ConfigStore schema")
        hydra_cfg = compose("config", overrides=overrides, return_hydra_config=True).hydra
    launchers.check_plugins(hydra_cfg)  # installed here
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None
                        if name.split(".")[0] == missing else find_spec(name, *args))
    with pytest.raises(ConfigError, match=re.escape(words)):
        launchers.check_plugins(hydra_cfg)


def test_multirun_flag_after_the_overrides_runs_the_sweep(tmp_path):
    result = run_python(tmp_path, "-m", "dqn.train", "seed=0,1", *TINY_OVERRIDES,
                        "logger=none", "-m", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "sweep: 2 succeeded, 0 failed" in result.stdout + result.stderr


def _installed_from_this_checkout() -> bool:
    """Whether `import dqn` outside the repo finds this checkout (an editable install)."""
    probe = subprocess.run([sys.executable, "-c", "import dqn.options as o; print(o.__file__)"],
                           cwd="/", capture_output=True, text=True,
                           env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    return probe.returncode == 0 and Path(probe.stdout.strip()).parent == REPO / "dqn"


@pytest.mark.skipif(not _installed_from_this_checkout(),
                    reason="needs this checkout installed with pip install -e")
def test_a_folder_named_dqn_in_the_working_directory_does_not_hide_the_package(tmp_path):
    (tmp_path / "dqn").mkdir()  # e.g. the repo cloned as dqn, run from its parent
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-m", "dqn.train", *TINY_OVERRIDES, "logger=none"],
                            cwd=tmp_path, env=environment, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "final evaluation" in result.stdout + result.stderr


def test_a_run_starts_with_one_line_saying_what_runs_and_where(tmp_path):
    result = run_python(tmp_path, "-m", "dqn.train", *TINY_OVERRIDES, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    output = (result.stdout + result.stderr).splitlines()
    first = next(line for line in output if "[dqn]" in line)
    run_dir = next((tmp_path / "outputs" / "runs").glob("*/*"))
    for words in ("CartPole-v1", "preset default", "DQN + double", "600 env steps", "seed 0",
                  "cpu", f"run folder {run_dir.relative_to(tmp_path)}",
                  "dashboard: swanlab watch outputs/swanlog"):
        assert words in first, first


@pytest.mark.parametrize("overrides,words", [
    ((), "DQN + double"),
    (("rainbow=full", "experiment=acrobot"),
     "DQN + double, dueling, noisy, C51, 3-step, prioritized"),
    (("experiment=pqn_minatar",), "PQN"),
    (("target=none",), "DQN"),
])
def test_the_header_names_the_algorithm_the_options_add_up_to(overrides, words):
    from dqn.cli.header import algorithm
    from dqn.config import validate

    name = algorithm(validate(compose_config(*overrides)))
    assert name == words


def test_a_sweep_preset_implies_multirun_and_its_jobs_are_checked(tmp_path):
    line = refused_in_one_line(tmp_path, "sweep=seeds", "train.total_steps=0")
    assert "train.total_steps=0 is out of range" in line
    assert "(a job of the sweep: sweep=seeds train.total_steps=0 seed=0)" in line
