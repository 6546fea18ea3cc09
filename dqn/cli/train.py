"""Train a DQN agent: `python -m dqn.train [group=option ...] [key=value ...]`.

The entry point: Hydra composes conf/ into a config, `validate` checks it before anything
is built, and `dqn.loop.train` runs the training loop. torch and gymnasium are imported
only once training starts, so `--help` and mistakes answer at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import subprocess
import sys
import warnings
from pathlib import Path
from typing import NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from dqn.checks import ConfigError
from dqn.cli.conf import CONF_DIR, register_schemas
from dqn.cli.header import header
from dqn.cli.launchers import check_launcher, check_plugins, send_ray_token_if_present
from dqn.cli.overrides import check_overrides, fixed_overrides, reorder_flags, sweep_jobs
from dqn.cli.runs import (
    FolderInUse,
    check_output_dir,
    checked_resume,
    completed_result,
    hold,
    make_folders,
    summary_status,
    sweep_resume_command,
    unwritable_checkpoints,
)
from dqn.cli.sweeps import record_failure, refresh_sweep_summary
from dqn.config import Config, resolve_device, stored_config, validate

log = logging.getLogger("dqn")


def _run_name(cfg: Config | DictConfig) -> str:
    """logger.experiment_name, else, in a sweep, the overrides in which the sweep's jobs
    differ, then the seed (`target=hard · seed=0`), else the run's overrides."""
    explicit = getattr(cfg.logger, "experiment_name", None)
    hydra_cfg = HydraConfig.get()
    if explicit or hydra_cfg.mode != RunMode.MULTIRUN:
        return explicit or hydra_cfg.job.override_dirname or "default"
    swept = _swept_keys(Path(hydra_cfg.sweep.dir) / "multirun.yaml",
                        hydra_cfg.sweeper.get("params") or {})
    ours = [o for o in hydra_cfg.overrides.task if o.split("=")[0].lstrip("+~") in swept]
    ours.sort(key=lambda o: (o.startswith("seed="), o))
    if not any(o.startswith("seed=") for o in ours):  # seed last, swept or not
        ours.append(f"seed={cfg.seed}")
    return " · ".join(ours)


def _swept_keys(multirun_yaml: Path, sweeper_params: dict) -> set[str]:
    """The keys a sweep varies: those of its sweeper's params and of the command line's
    sweep overrides (a,b / range() / choice() / interval() / glob())."""
    keys = set(sweeper_params)
    if multirun_yaml.is_file():
        from hydra.core.override_parser.overrides_parser import OverridesParser

        task = OmegaConf.load(multirun_yaml).hydra.overrides.task
        for override in OverridesParser.create().parse_overrides(list(task)):
            if override.is_sweep_override():
                keys.add(override.get_key_element().lstrip("+~"))
    return keys


def main() -> float | None:
    """Run the Hydra task on sys.argv (after registering the schemas it composes with)."""
    register_schemas()
    return task()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def task(cfg: DictConfig) -> float | None:
    """Hydra task: validate, then train; returns the final evaluation mean (for sweepers).

    In a sweep (-m), a failing job is recorded as failed in its summary.json, returns
    None (a failed trial for Optuna) and the sweep goes on; each ending job refreshes the
    sweep's summary files. A sweep job whose folder holds an unfinished run (a requeued,
    preempted job, a sweep run again) continues it; a completed one is kept as it is.
    """
    from dqn.process import StoppedAtOnce
    from dqn.run.checkpoint import CheckpointError
    from dqn.run.record import NonFiniteError

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode != RunMode.MULTIRUN:
        try:
            return _run(cfg, run_dir)
        except StoppedAtOnce as error:
            print(f"Stopped: {error}", file=sys.stderr)
            raise SystemExit(130) from None
        except (ConfigError, CheckpointError, NonFiniteError, OSError) as error:
            print(f"{_error_title(error)}: {error}", file=sys.stderr)
            # 2: what was typed or pointed at is wrong; 1: a failure while running
            raise SystemExit(2 if isinstance(error, (ConfigError, CheckpointError)) else 1) \
                from None
    sweep_dir = Path(hydra_cfg.sweep.dir)
    stopped = None
    try:
        return _run(cfg, run_dir, continue_unfinished=True,
                    resume=sweep_resume_command(sweep_dir))
    except SystemExit as signalled:  # a signal stopped training after saving last.pt
        stopped = signalled
        raise
    except StoppedAtOnce as error:  # the sweep stops too
        print(f"Stopped: {error}", file=sys.stderr)
        stopped = SystemExit(130)
        raise stopped from None
    except FolderInUse as error:  # the folder and its record are another process's
        log.error("job skipped: %s", error)
        return None
    except Exception as error:  # noqa: BLE001 - one job's failure must not end the sweep
        log.error("job failed: %s: %s", type(error).__name__, error)
        record_failure(run_dir, cfg.get("seed"), error)
        return None
    finally:
        refresh_sweep_summary(sweep_dir)
        if stopped is not None:  # after the summary: Slurm ends a requeued job soon
            requeue_slurm_job(stopped)


_REQUEUE_SIGNALS = {128 + signal.SIGTERM, 128 + signal.SIGUSR2}


def requeue_slurm_job(stopped: SystemExit) -> None:
    """A submitit Slurm job that a signal stopped while Slurm still lists it as running
    (preemption notice, `scancel --signal=TERM`, the SIGUSR2 before its time limit) puts
    itself back in the queue; when it starts again, the sweep job finds its last.pt and
    continues. A job being cancelled (plain `scancel`) or requeued by Slurm itself
    (`scontrol requeue`, preemption with requeue) is no longer running then: left alone."""
    job_id = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job = f"{job_id[0]}_{job_id[1]}" if all(job_id) else os.environ.get("SLURM_JOB_ID")
    if not job or os.environ.get("SUBMITIT_EXECUTOR") != "slurm" \
            or stopped.code not in _REQUEUE_SIGNALS:
        return
    try:
        state = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True,
                               text=True, timeout=30).stdout.strip()
        if state != "RUNNING":
            log.warning("Slurm job %s is %s: not requeued", job, state or "gone")
            return
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        log.warning("Slurm job %s not requeued: %s", job, error)
        return
    if done.returncode == 0:
        log.warning("requeued Slurm job %s; it continues from last.pt when it starts again", job)
    else:
        log.warning("Slurm job %s not requeued by itself: %s", job,
                    one_line(done.stderr or done.stdout))


def _error_title(error: Exception) -> str:
    titles = {"ConfigError": "Config error", "CheckpointError": "Checkpoint error",
              "NonFiniteError": "Training stopped"}
    return titles.get(type(error).__name__, "File error")


def _run(cfg: DictConfig, run_dir: Path, continue_unfinished: bool = False,
         resume: str | None = None) -> float:
    """Validate and train, or continue the run that resume= (or a requeued job) names.
    `resume`: the command that continues this run if it is stopped (default: resume=DIR)."""
    if cfg.get("resume") is not None:
        others = [o for o in HydraConfig.get().overrides.task if not o.startswith("resume=")]
        return _continue(cfg.resume, others=others)
    hold(run_dir)  # held already where this process claimed or checked it
    last = run_dir / "checkpoints" / "last.pt"
    if continue_unfinished and last.exists():  # a sweep job run again
        if _finished(run_dir):
            return completed_result(run_dir)
        return _continue(run_dir, _run_name(cfg), resume)  # as it started
    config = validate(cfg)
    stored = stored_config(config, HydraConfig.get().runtime.choices)
    from dqn.loop import train
    from dqn.seed_run import seed_dir

    seeds = range(config.seed, config.seed + config.num_seeds)
    for folder in [run_dir] if config.num_seeds == 1 else [seed_dir(run_dir, s) for s in seeds]:
        _check_writable(folder)  # each agent of a num_seeds job writes to its own folder
    log.info(header(config, stored["choices"], run_dir, str(resolve_device(config.device))))
    return train(config, run_dir, _run_name(config), stored, resume=resume)


def _continue(folder: str | Path, name: str | None = None, resume: str | None = None,
              others: list[str] = ()) -> float:
    """Continue the run in `folder` from its last.pt, under the name it was born with."""
    from dqn.loop import train
    from dqn.run.record import read_birth_record

    run_dir, checkpoint, config = checked_resume(folder, others)
    name = (read_birth_record(run_dir).get("run_name") or name
            or getattr(config.logger, "experiment_name", None) or run_dir.name)
    log.info(header(config, checkpoint["config"].get("choices", {}), run_dir,
                    str(resolve_device(config.device))))
    return train(config, run_dir, name, checkpoint["config"], checkpoint, resume)


def _finished(run_dir: Path) -> bool:
    return summary_status(run_dir) == "completed"


def _check_writable(run_dir: Path) -> None:
    """Fail before training if checkpoints cannot be written where they must go."""
    reason = unwritable_checkpoints(run_dir)
    if reason:
        raise ConfigError(f"cannot write checkpoints to {run_dir / 'checkpoints'}: {reason}; "
                          "choose a writable hydra.run.dir")


# Hydra's own flags; with any of them Hydra answers by itself.
_HYDRA_FLAGS = ("-h", "--help", "--hydra-help", "-c", "--cfg", "-i", "--info", "-p",
                "--package", "--resolve", "-sc", "--shell-completion", "-m", "--multirun",
                "-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir",
                "--experimental-rerun", "--version")


def cli(args: list[str]) -> None:
    """`python -m dqn.train ARGS`: a mistake in the overrides is reported in one line
    before Hydra starts (Hydra's own report spans a dozen), then Hydra runs the task."""
    if "--help" in args or "-h" in args:
        print(_help([a for a in args if a not in ("--help", "-h")]))
        return
    if "--version" in args:
        print(f"dqn {_version()} (Hydra {hydra.__version__})")
        return
    args = reorder_flags(args)
    sys.argv[1:] = args  # what Hydra parses
    overrides = _hydra_arguments(args).overrides
    try:
        register_schemas()  # imports every option: one that breaks its interface stops here
    except ConfigError as error:
        print(f"{_error_title(error)}: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    # conf/hydra/launcher/ray.yaml shares its name with the plugin's schema, which Hydra
    # then checks it against (what we want) with a deprecation warning on every run
    warnings.filterwarnings("ignore", message="(?s).*validated against ConfigStore schema")
    # a sweep= preset sets hydra.mode to MULTIRUN: -m is implied
    multirun = any(a in ("-m", "--multirun") or a.startswith("sweep=") for a in args)
    other_flags = any(a.split("=")[0] in _HYDRA_FLAGS for a in args
                      if a not in ("-m", "--multirun"))
    if not any(a in ("-cn", "--config-name", "-cp", "--config-path", "-cd", "--config-dir")
               for a in args):  # another config than ours: Hydra alone can read it
        _check_before_hydra(overrides, multirun, whole=multirun or not other_flags)
    task()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dqn")
    except PackageNotFoundError:  # run from a checkout without installing it
        from dqn import __version__

        return __version__


def _hydra_arguments(args: list[str]) -> argparse.Namespace:
    """Hydra's own command-line parser, but a mistake in its flags is one line, not its
    usage text (exit 2, as argparse)."""
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()

    def one_line_error(message: str) -> NoReturn:
        print(f"Usage error: {message} (python -m dqn.train --help)", file=sys.stderr)
        raise SystemExit(2)

    parser.error = one_line_error  # type: ignore[method-assign]
    parsed = parser.parse_args(args)
    modes = [flag for flag, given in (("-m", parsed.multirun), ("--cfg", parsed.cfg),
             ("--info", parsed.info), ("--shell-completion", parsed.shell_completion)) if given]
    if len(modes) > 1:
        one_line_error(f"{' and '.join(modes)} cannot be given together: choose one")
    return parsed


def _check_before_hydra(args: list[str], multirun: bool, whole: bool = True) -> None:
    """Compose and check what can be checked before Hydra starts: a run's whole config, or,
    for a sweep, its launcher and its jobs' configs; with Hydra's own flags (`--cfg job`),
    only that the overrides compose (`whole=False`). A mistake ends the command with one
    line and exit 2."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    launcher_args = [a for a in args
                     if a.lstrip("+~").startswith(("hydra/launcher=", "hydra.launcher."))]
    try:
        check_overrides(args, CONF_DIR, multirun)
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            # a sweep: what its jobs share (a preset's launcher too); its swept values
            # do not compose
            cfg = compose("config", overrides=fixed_overrides(args) if multirun else args,
                          return_hydra_config=True)
        if not whole:
            return
        if multirun or cfg.hydra.mode == RunMode.MULTIRUN:
            check_plugins(cfg.hydra)
            check_launcher(cfg.hydra.launcher)
            send_ray_token_if_present(cfg.hydra.launcher)
            _check_sweep_jobs([a for a in args if not a.startswith("-")])
            check_output_dir(cfg.hydra, "sweep")
        else:
            with open_dict(cfg):
                hydra_cfg = cfg.pop("hydra")
            if cfg.resume is not None:  # every check of a resume, before Hydra writes
                checked_resume(cfg.resume, [a for a in args if not a.lstrip("+~").startswith(
                    ("resume=", "hydra.", "hydra/"))])
            else:
                # unresolved: resolving a fresh run dir claims the folder
                if not str(OmegaConf.to_container(hydra_cfg.run)["dir"]).strip():
                    raise ConfigError("hydra.run.dir='' would put the run's files in the "
                                      "working directory itself: give a folder, or leave it out")
                validate(cfg)
                _check_log_dir(cfg.logger)
                check_output_dir(hydra_cfg, "run")
    except (HydraException, OmegaConfBaseException, ConfigError) as error:
        cause = f"\n{error.__cause__}" if error.__cause__ else ""
        message = one_line(f"{error}{cause}")
        unknown = re.match(r"Could not override '(hydra\.launcher\.[^']+)'", message)
        if unknown:
            choice = next((a.split("=")[1] for a in launcher_args
                           if a.startswith("hydra/launcher=")), "basic")
            ours = (CONF_DIR / "hydra" / "launcher" / f"{choice}.yaml").is_file()
            where = f"conf/hydra/launcher/{choice}.yaml and " if ours else ""
            message = (f"{unknown[1]}: not a setting of hydra/launcher={choice} (its settings: "
                       f"{where}the plugin's documentation)")
        print(f"Config error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


def _check_sweep_jobs(args: list[str]) -> None:
    """Validate the config of each job a basic sweep launches, from the command line's
    sweeps and the sweeper's params (a sweep= preset's); past 16 jobs, each swept value
    once. A mistake is then one line before any job starts, not a sweep of failed jobs."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(args)
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        base = compose("config", overrides=fixed, return_hydra_config=True)
        if not base.hydra.sweeper._target_.endswith(".BasicSweeper"):
            return  # Optuna and others pick values as they go
        given = {o.key_or_group for o in parsed}
        params = [f"{key}={value}" for key, value in (base.hydra.sweeper.params or {}).items()
                  if key not in given]
        ours = [a for a in [*args, *params] if not a.lstrip("+~").startswith("hydra")]
        # where the presets of one's own are found, for every job
        searchpath = [a for a in args if a.lstrip("+~").startswith("hydra.searchpath=")]
        for job in sweep_jobs(ours):
            cfg = compose("config", overrides=[*searchpath, *job])
            if cfg.resume:
                continue
            try:
                validate(cfg)
            except ConfigError as error:
                raise ConfigError(f"{error} (a job of the sweep: {' '.join(job)})") from None


def _help(args: list[str]) -> str:
    """The text of --help for these overrides (dqn/cli/help.py), without Hydra's own
    --help, which lists every Hydra plugin group first and takes seconds. A mistake in the
    overrides ends the command with one line and exit 2, as it would without --help."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from dqn.cli.help import help_text

    try:
        return help_text(args)
    except (HydraException, OmegaConfBaseException, ConfigError) as error:
        cause = f"\n{error.__cause__}" if error.__cause__ else ""
        print(f"Config error: {one_line(f'{error}{cause}')}", file=sys.stderr)
        raise SystemExit(2) from None


def _check_log_dir(logger: DictConfig) -> None:
    """The dashboard's folder must be creatable (SwanLab would only warn, mid-run); the
    folders made to find out are removed again."""
    if logger.get("mode") not in ("local", "offline") or not logger.get("log_dir"):
        return
    try:
        missing = make_folders(Path(logger.log_dir))
    except OSError as error:
        raise ConfigError(f"logger.log_dir={logger.log_dir!r} cannot be created: "
                          f"{error.strerror}; choose a writable folder, or logger=none") from None
    for path in missing:  # deepest first
        path.rmdir()


def one_line(message: str) -> str:
    """Hydra's and OmegaConf's multi-line messages, condensed to what names the mistake."""
    noise = ("full_key:", "object_type=", "reference_type=", "Config search path",
             "provider=", "Set the environment variable", "To append to your config")
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    options = []
    if any(line.startswith("Available options") for line in lines):
        start = next(i for i, line in enumerate(lines) if line.startswith("Available options"))
        for line in lines[start + 1:]:
            if line.startswith(noise):
                break
            options.append(line)
    kept = [line for line in lines if not line.startswith(noise)
            and not line.startswith("Available options") and line not in options]
    text = " ".join(kept[:2]).replace(".. ", ". ")
    return f"{text} (options: {', '.join(options)})" if options else text


if __name__ == "__main__":
    cli(sys.argv[1:])
