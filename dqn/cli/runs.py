"""Run folders: each run claims a folder of its own, holds it for its life, and is
continued (resume=DIR) only from a checkpoint of the run that folder records.

A fresh folder is claimed with an exclusive mkdir (`16-05-09`, then `16-05-09_2`, ... for
runs started in the same second); a run holds `.run.lock` in its folder (an flock, released
when its process ends), so that a second run or a resume of the same folder is refused
while the first lives.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, NamedTuple

from dqn.checks import ConfigError

log = logging.getLogger("dqn")
LOCK_FILE = ".run.lock"
_held: dict[Path, int] = {}  # folder -> descriptor of its lock file, for this process's life
_claiming = True  # False while the command line is checked: nothing is claimed then
_resumable: dict[Path, Resumable] = {}  # resume folder -> its checked last.pt and config


class FolderInUse(ConfigError):
    """The folder belongs to a run that is still going."""


@contextmanager
def planning() -> Iterator[None]:
    """Resolve run folders without claiming them (the pre-Hydra check composes the config
    too; only the run itself claims its folder)."""
    global _claiming
    _claiming = False
    try:
        yield
    finally:
        _claiming = True


def claim_fresh_dir(path: str) -> str:
    """`path`, or `path_2`, `path_3`... : the first that this call creates, so that runs
    started in the same second never share a folder; the folder is then held."""
    if not _claiming:
        return path
    base = Path(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    for number in range(1, 10_000):
        folder = base if number == 1 else base.with_name(f"{base.name}_{number}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        hold(folder)
        return str(folder)
    raise ConfigError(f"{base.parent}: no free folder name for {base.name}")


def hold(folder: Path) -> None:
    """Hold `folder`'s lock for the rest of this process (no-op if held already); a
    FolderInUse error if another live process holds it."""
    folder = Path(folder).resolve()
    if folder in _held:
        return
    descriptor = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    _lock(descriptor, folder)
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"{os.getpid()}\n".encode())
    _held[folder] = descriptor


def check_not_in_use(folder: Path) -> None:
    """A FolderInUse error if a live process holds `folder`; writes nothing."""
    folder = Path(folder).resolve()
    if folder in _held or not (folder / LOCK_FILE).is_file():
        return
    descriptor = os.open(folder / LOCK_FILE, os.O_RDONLY)
    _lock(descriptor, folder)
    os.close(descriptor)  # which releases the lock


def _lock(descriptor: int, folder: Path) -> None:
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.read(descriptor, 64).decode(errors="replace").strip() or "?"
        os.close(descriptor)
        raise FolderInUse(f"{folder} belongs to a run that is still going (process {owner}); "
                          "wait for it to end, or choose another folder") from None
    except OSError as error:  # a file system without locks: runs go on, unguarded
        log.warning("cannot lock %s (%s): nothing keeps a second run out of it", folder,
                    error.strerror)


def check_fresh_parent(path: Path, key: str) -> None:
    """A fresh folder will be claimed in `path`'s parent: fail now if it cannot be."""
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(prefix=".probe-", dir=parent))
    except OSError as error:
        raise ConfigError(f"{key}: cannot create run folders in {str(parent)!r}: "
                          f"{error.strerror}; choose a writable folder ({key}=DIR)") from None


def make_folders(path: Path) -> list[Path]:
    """Create `path` with its missing parents; returns the folders created, deepest first
    (what to remove when they were made only to find out whether they can be)."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    return missing


def check_own_dir(path: Path, key: str) -> None:
    """A folder named on the command line: it must be creatable and writable, and not in use
    by a live run (then it is held from here on). Folders this creates are removed again
    if it fails."""
    try:
        missing = make_folders(path)
    except OSError as error:
        raise ConfigError(f"{key}={str(path)!r} cannot be created: {error.strerror}; "
                          "choose a writable folder") from None
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".probe-", dir=path))
        hold(path)
    except OSError as error:
        for folder in missing:  # deepest first
            folder.rmdir()
        raise ConfigError(f"{key}={str(path)!r} cannot be written: {error.strerror}; "
                          "choose a writable folder") from None


def check_output_dir(hydra_cfg: Any, kind: str) -> None:
    """Before Hydra starts: the folder a run (kind="run") or a sweep (kind="sweep") writes
    to can be written, and no live run owns it; a folder named on the command line is held
    from here on, a fresh one is only claimed when the run starts."""
    from omegaconf import OmegaConf

    key = f"hydra.{kind}.dir"
    raw = str(OmegaConf.to_container(hydra_cfg[kind], resolve=False)["dir"])
    with planning():
        path = Path(str(hydra_cfg[kind].dir))
    if "${dqn_run_dir:" in raw or "${dqn_fresh_dir:" in raw:
        check_fresh_parent(path, key)
    else:
        check_own_dir(path, key)


# --- resume ------------------------------------------------------------------------------
class Resumable(NamedTuple):
    folder: Path
    checkpoint: dict[str, Any]  # its last.pt
    config: Any  # the validated Config last.pt carries


def checked_resume(value: Any, others: list[str] = ()) -> Resumable:
    """The folder `resume=` names, its last.pt and the Config it carries (validated), once
    they are known to continue the run the folder records: a ConfigError naming what is
    wrong otherwise (as for `others`, overrides given beside it). The folder is held from
    here on. Nothing in it changes."""
    from dqn.run.checkpoint import CheckpointError, load_checkpoint

    if value is None or not str(value).strip():
        raise ConfigError(f"resume={value!r}: empty; name the run folder to continue "
                          "(resume=outputs/runs/DATE/TIME)")
    if others:
        raise ConfigError(f"resume={value!r} continues a run with the config it was started "
                          f"with; drop the other overrides: {' '.join(others)}")
    folder = Path(str(value)).resolve()
    if folder in _resumable:
        return _resumable[folder]
    said = f"resume={str(value)!r}"
    if not folder.is_dir():
        raise ConfigError(f"{said}: no such run directory")
    check_not_in_use(folder)
    if summary_status(folder) == "completed":
        raise ConfigError(f"{said}: that run already completed (summary.json says so); "
                          "nothing to continue")
    if folder.name.startswith("seed_") and (folder.parent / "checkpoints" / "last.pt").is_file():
        raise ConfigError(f"{said}: this agent trains with the others of its num_seeds job; "
                          f"resume the job: resume={folder.parent}")
    last = folder / "checkpoints" / "last.pt"
    if not last.is_file():
        raise ConfigError(f"{said}: holds no checkpoints/last.pt; nothing to continue")
    try:
        checkpoint = load_checkpoint(last)
    except CheckpointError as error:
        raise ConfigError(f"{said}: {error}") from None
    state = checkpoint.get("state")
    if not isinstance(state, dict):
        raise ConfigError(f"{said}: {last} holds no training state to continue from")
    if state.get("finished"):
        raise ConfigError(f"{said}: that run already completed (last.pt says so); nothing "
                          "to continue")
    check_same_run(folder, state.get("run_id"), said)
    config = _checked_stored_config(checkpoint, last, said)
    check_weights_fit(checkpoint, config, last, said)
    for path in (folder, last.parent):  # found without writing: the folder stays as it is
        reason = not_writable(path)
        if reason:
            raise ConfigError(_refused_unwritable(said, path, reason))
    try:
        hold(folder)
    except OSError as error:  # what not_writable cannot see (a lock file made read-only)
        raise ConfigError(_refused_unwritable(said, folder, error.strerror or str(error))) \
            from None
    reason = unwritable_checkpoints(folder)
    if reason:
        raise ConfigError(f"{said}: cannot write checkpoints to {folder / 'checkpoints'}: "
                          f"{reason}")
    _resumable[folder] = Resumable(folder, checkpoint, config)
    return _resumable[folder]


def _checked_stored_config(checkpoint: dict[str, Any], last: Path, said: str) -> Any:
    """The Config last.pt carries, which must still make a valid run (a checkpoint from
    before a check was added, or from before options were named, may not)."""
    from omegaconf.errors import OmegaConfBaseException

    from dqn.config import config_from_dict

    try:
        return config_from_dict(checkpoint.get("config") or {})
    except ConfigError as error:
        raise ConfigError(f"{said}: the config in {last} is refused today: {error}") from None
    except (KeyError, TypeError, AttributeError, OmegaConfBaseException) as error:
        text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
        reason = (text.strip().splitlines() or [type(error).__name__])[0]
        raise ConfigError(f"{said}: {last} carries no usable config ({reason})") from None


def check_weights_fit(checkpoint: dict[str, Any], config: Any, last: Path, said: str) -> None:
    """The weights last.pt holds (the online networks', and the target's where there is
    one) must have the shapes of the networks its config describes, which are built for
    this on torch's meta device (no memory, no arithmetic): a config edited after the
    weights were saved is refused here, naming the first key that differs and both shapes,
    not by torch's size mismatch once the run's files are open."""
    from dqn.run.checkpoint import weights_misfit

    expected = expected_weight_shapes(config)
    agents = checkpoint["state"].get("agents")
    target = agents.get("target") if isinstance(agents, dict) else None
    for what, weights in (("weights", checkpoint.get("model")), ("target weights", target)):
        if what == "target weights" and target is None:
            continue  # target=none: the online weights are the target
        misfit = weights_misfit(weights, expected)
        if misfit:
            raise ConfigError(f"{said}: the {what} in {last} do not fit the network its config "
                              f"describes ({describe_network(config)}): {misfit}; that "
                              "last.pt cannot be continued")


def expected_weight_shapes(config: Any) -> dict[str, tuple[int, ...]]:
    """The shape of each weight the online networks of a run with `config` hold (its
    num_seeds agents' as one, as the run saves them), from networks built on the meta
    device."""
    import torch

    from dqn.ensemble import Ensemble
    from dqn.envs import env_maker
    from dqn.nets.qnet import build_q_network

    env = env_maker(config.env).make()
    try:
        space, n_actions = env.observation_space, int(env.action_space.n)
    finally:
        env.close()
    with torch.device("meta"):
        networks = [build_q_network(config.network, space, n_actions, config.head)
                    for _ in range(config.num_seeds)]
        weights = Ensemble(networks).weights()
    return {key: tuple(value.shape) for key, value in weights.items()}


def describe_network(config: Any) -> str:
    """network=OPTION and head=OPTION, each with the settings in which it differs from the
    option's defaults (`network=mlp with hidden_sizes=[32, 32], head=q`)."""
    from dataclasses import asdict

    from dqn.options import option_of

    parts = []
    for group in ("network", "head"):
        settings = getattr(config, group)
        defaults = type(settings)()
        changed = [f"{name}={value!r}" for name, value in asdict(settings).items()
                   if value != getattr(defaults, name)]
        name = f"{group}={option_of(settings).name}"
        parts.append(f"{name} with {', '.join(changed)}" if changed else name)
    if config.num_seeds > 1:
        parts.append(f"num_seeds={config.num_seeds}")
    return ", ".join(parts)


def not_writable(path: Path) -> str | None:
    """Why nothing can be written into the folder `path`, found without writing there (a
    read-only file system, or no write permission), or None."""
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return os.strerror(errno.EROFS)
    except OSError:
        pass
    return None if os.access(path, os.W_OK) else os.strerror(errno.EACCES)


def _refused_unwritable(said: str, path: Path, reason: str) -> str:
    return (f"{said}: {path} is not writable ({reason}), and a resumed run writes its "
            "checkpoints, logs and lock there; make it writable, or copy the run folder "
            "somewhere writable and resume the copy")


def unwritable_checkpoints(run_dir: Path) -> str | None:
    """Why checkpoints cannot be written into `run_dir`/checkpoints (made if missing), or
    None: tried with a file written and removed again."""
    probe = run_dir / "checkpoints" / ".write-test"
    try:
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as error:
        return error.strerror or str(error)
    return None


def summary_status(folder: Path) -> str | None:
    """summary.json's status, or None where there is none or it cannot be read (last.pt
    then says whether the run finished, and the run writes summary.json anew)."""
    try:
        return json.loads((folder / "summary.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def completed_result(folder: Path) -> float | None:
    """The final evaluation mean of the completed run in `folder` (over its agents for a
    num_seeds job), which a sweep run again keeps as it is."""
    summary = json.loads((folder / "summary.json").read_text())
    means = [m for m in (summary.get("final_eval_means") or {}).values() if m is not None]
    final = (summary.get("final_eval") or {}).get("mean")
    log.info("%s: completed before; kept as it is", folder)
    return final if final is not None else (sum(means) / len(means) if means else None)


def check_same_run(folder: Path, checkpoint_id: str | None, said: str) -> None:
    """A ConfigError unless last.pt was saved by the run `folder` was born with."""
    from dqn.run.record import BIRTH_RECORD, read_birth_record

    folder_id = read_birth_record(folder).get("run_id")
    if folder_id is None and checkpoint_id is None:
        return  # a run from before runs recorded an id
    if folder_id == checkpoint_id:
        return
    if folder_id is None:
        raise ConfigError(f"{said}: the folder has no {BIRTH_RECORD} to say which run it "
                          f"holds, but its last.pt comes from run {checkpoint_id}; resume that "
                          "run's own folder")
    raise ConfigError(f"{said}: checkpoints/last.pt belongs to another run "
                      f"({checkpoint_id or 'no id'}; this folder's run is {folder_id}): "
                      "copied in from elsewhere? resume that run's own folder")


# --- the command that continues a stopped run ---------------------------------------------
def sweep_resume_command(sweep_dir: Path) -> str | None:
    """The command that continues a sweep: its own command line again with its folder named
    (its finished jobs are kept, the others continue or start); None where the sweep left
    no multirun.yaml to read it from."""
    from omegaconf import OmegaConf

    from dqn.run.record import override, shell_word

    try:
        overrides = OmegaConf.load(sweep_dir / "multirun.yaml").hydra.overrides
    except (OSError, ValueError, AttributeError):
        return None
    words = [o for o in overrides.hydra if not o.startswith(("hydra.sweep.dir=", "hydra.mode="))]
    words += list(overrides.task)
    return " ".join(["python -m dqn.train -m", *map(shell_word, words),
                     override("hydra.sweep.dir", str(sweep_dir.resolve()))])
