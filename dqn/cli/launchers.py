"""Checks of a sweep's launcher settings (Slurm, Ray) before any job is submitted."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dqn.checks import ConfigError

SLURM = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
RAY = "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"
OPTUNA = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
# Sweep plugins that come with an extra of our package: the modules they need, the extra.
RAY_PLUGIN = ("hydra_plugins.hydra_ray_launcher", "ray", "ray")
OPTUNA_PLUGIN = ("hydra_plugins.hydra_optuna_sweeper", "optuna", "optuna")
PLUGINS = {RAY: RAY_PLUGIN, OPTUNA: OPTUNA_PLUGIN}  # by the _target_ of what they provide
# ray.remote's options for a task (Ray's documented keyword arguments, as of Ray 2.60)
RAY_REMOTE_KEYS = {"num_cpus", "num_gpus", "memory", "resources", "accelerator_type",
                   "max_calls", "max_retries", "retry_exceptions", "runtime_env",
                   "scheduling_strategy", "label_selector", "fallback_strategy", "name",
                   "num_returns", "object_store_memory", "enable_task_events",
                   "placement_group", "placement_group_bundle_index",
                   "placement_group_capture_child_tasks"}


def refuse_missing_extra(chosen: str, plugin: tuple[str, ...]) -> None:
    """ConfigError naming the extra that installs `plugin` (RAY_PLUGIN...) when one of its
    modules is missing; `chosen` says what asked for it (hydra/launcher=ray)."""
    *modules, extra = plugin
    for module in modules:
        try:
            present = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            present = False
        if not present:
            raise ConfigError(f"{chosen} needs the {extra} extra, which is not installed: "
                              f"pip install -e \".[{extra}]\"")


def check_plugins(hydra_cfg: DictConfig) -> None:
    """The launcher and sweeper of a composed config, however they were chosen (on the
    command line, by a sweep= or experiment= preset, in a config of one's own), must have
    their plugin installed: else one line naming its extra, not Hydra's `Unknown plugin
    class` traceback once the sweep starts."""
    for group in ("launcher", "sweeper"):
        target = hydra_cfg[group].get("_target_")
        plugin = PLUGINS.get(target)
        if plugin is not None:
            choice = hydra_cfg.runtime.choices.get(f"hydra/{group}")
            chosen = (f"hydra/{group}={choice}" if choice not in (None, "basic")
                      else f"hydra.{group}._target_={target}")  # Hydra's own, retargeted
            refuse_missing_extra(chosen, plugin)


def check_launcher(launcher: DictConfig) -> None:
    """Refuse, in one line, an unknown launcher key (one added with +: Hydra's schemas
    refuse the others; for any launcher typed by a dataclass), a Slurm that does not answer
    or lacks the partition asked for, or a Ray address that does not answer."""
    target = launcher.get("_target_")
    if target == SLURM:
        from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf

        allowed = {f.name for f in dataclasses.fields(SlurmQueueConf)}
        _refuse_unknown(launcher, allowed, "hydra.launcher", "hydra/launcher=cluster")
        _check_slurm(launcher)
    elif target == RAY:
        _refuse_unknown(launcher, {"_target_", "ray"}, "hydra.launcher", "hydra/launcher=ray")
        _refuse_unknown(launcher.ray, {"init", "remote"}, "hydra.launcher.ray",
                        "hydra/launcher=ray")
        _refuse_unknown(launcher.ray.remote, RAY_REMOTE_KEYS, "hydra.launcher.ray.remote",
                        "ray.remote")
        _check_ray_address(launcher.ray.init.get("address"))
    elif dataclasses.is_dataclass(OmegaConf.get_type(launcher)):  # basic, joblib, local
        schema = OmegaConf.get_type(launcher)
        allowed = {f.name for f in dataclasses.fields(schema)}
        _refuse_unknown(launcher, allowed, "hydra.launcher", f"the {schema.__name__}")


def _refuse_unknown(node: DictConfig, allowed: set[str], prefix: str, owner: str) -> None:
    unknown = sorted(set(node.keys()) - allowed)
    settings = ", ".join(sorted(allowed - {"_target_"}))
    if unknown:
        raise ConfigError(f"{prefix}.{unknown[0]}: not a setting of {owner} "
                          + (f"(allowed: {settings})" if settings else "(it has none)"))


def _check_slurm(launcher: DictConfig) -> None:
    if shutil.which("sbatch") is None:
        raise ConfigError("hydra/launcher=cluster submits with Slurm's sbatch, which is not "
                          "on PATH (a local Slurm for trying it: scripts/slurm_local.sh up)")
    partition = launcher.get("partition")
    try:  # --all: hidden partitions too
        listed = subprocess.run(["sinfo", "--all", "-h", "-o", "%R"], capture_output=True,
                                text=True, timeout=30)
    except subprocess.TimeoutExpired:
        raise ConfigError("hydra/launcher=cluster: Slurm does not answer (sinfo gave no "
                          "answer in 30 s)") from None
    if listed.returncode != 0:
        message = " ".join(listed.stderr.split()) or f"exit {listed.returncode}"
        raise ConfigError(f"hydra/launcher=cluster: Slurm does not answer (sinfo: {message})")
    partitions = sorted(set(listed.stdout.split()))
    unknown = [p for p in str(partition or "").split(",") if p and p not in partitions]
    if unknown:  # sbatch takes a list of partitions: the first one that can run the job
        what = "such partition" if unknown == [partition] else f"partition {unknown[0]!r}"
        raise ConfigError(f"hydra.launcher.partition={partition!r}: no {what} on this Slurm "
                          f"(it has: {', '.join(partitions)})")


def _check_ray_address(address: Any) -> None:
    if address in (None, "local"):
        return
    address = str(address)
    if address == "auto":
        # where `ray start` writes its address: Ray's temp folder, as Ray itself finds it
        temp = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
        current_cluster = Path(temp) / "ray" / "ray_current_cluster"
        if not current_cluster.is_file():
            raise ConfigError("hydra.launcher.ray.init.address='auto': no Ray cluster is "
                              "running on this machine (start one with `ray start --head`, "
                              "or give its address)")
        address = current_cluster.read_text().strip()
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"hydra.launcher.ray.init.address={address!r}: expected auto, "
                          "HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as error:
        raise ConfigError(f"hydra.launcher.ray.init.address={address!r} does not answer "
                          f"({error.strerror or error})") from None


def send_ray_token_if_present(launcher: DictConfig) -> None:
    """Let a Ray launcher's ray.init given HOST:PORT authenticate as one given `auto` does.
    Ray turns token authentication on for `ray start --head` when this machine has a token
    (Ray's own local ray.init() writes ~/.ray/auth_token), but a ray.init given an address
    sends none unless RAY_AUTH_MODE=token: set it then (an open cluster ignores it)."""
    address = launcher.ray.init.get("address") if launcher.get("_target_") == RAY else None
    if address in (None, "local", "auto") or "RAY_AUTH_MODE" in os.environ:
        return
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", "~/.ray/auth_token")).expanduser()
    if os.environ.get("RAY_AUTH_TOKEN") or token_file.is_file():
        os.environ["RAY_AUTH_MODE"] = "token"
