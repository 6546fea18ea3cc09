"""Checkpoints: self-describing, written atomically, loaded without unpickling code."""

from __future__ import annotations

import errno
import os
import random
import secrets
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "dqn-checkpoint/1"


class CheckpointError(RuntimeError):
    """A file that cannot be used as a checkpoint; the message names the file."""


class DiskFullError(OSError):
    """A write failed for want of space; the message says what is kept and what to do."""


def disk_full(error: BaseException, folder: Path) -> bool:
    """Whether `error`, raised while writing into `folder`, is a full disk (or quota):
    an ENOSPC anywhere in its chain (torch.save reports one as a RuntimeError), or a short
    write (np.save's OSError without an errno) with no space left. Check before removing
    what the failed write left."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen = seen.__cause__ or seen.__context__
    if not isinstance(error, OSError):
        return False
    try:
        stats = os.statvfs(folder)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < 1 << 20


def _as_disk_full(error: BaseException, path: Path) -> BaseException:
    """An OSError(ENOSPC) naming `path` for a full disk, else `error` itself."""
    if disk_full(error, path.parent):
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return error


def save_checkpoint(path: Path, model_state: dict[str, torch.Tensor],
                    config: dict[str, Any], **info: Any) -> None:
    """Write the weights, the resolved config and `info` (env step, scores...) to
    `path` via a temporary file in the same folder and an atomic rename, so a reader
    never sees a half-written checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "model": {k: v.detach().cpu() for k, v in model_state.items()},
               "config": config, **info}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        reported = _as_disk_full(error, path)
        Path(tmp).unlink(missing_ok=True)
        if reported is not error:
            raise reported from None
        raise


LARGE = 64 << 20  # bytes of arrays in a training state above which they go beside last.pt
ARRAY_FILE = "__npy__"  # how a state names an array written beside its checkpoint


def save_training_state(path: Path, model_state: dict[str, torch.Tensor],
                        config: dict[str, Any], state: dict[str, Any], **info: Any) -> None:
    """`save_checkpoint` with a training state that holds NumPy arrays (the replay memory,
    as views of its own arrays). Up to LARGE bytes they travel inside the checkpoint; above,
    each array of a megabyte or more is written beside it, streamed from its own memory (no
    second copy of a 7 GB frame ring), into a folder PATH-STEM.TOKEN.arrays that the
    checkpoint names. The folder is complete before the checkpoint names it and older ones
    are removed after, so a kill at any point leaves a checkpoint with all its arrays."""
    arrays: list[np.ndarray] = []
    _walk(state, lambda a: arrays.append(a) or a)
    folder = None
    if sum(a.nbytes for a in arrays) > LARGE:
        folder = path.with_name(f"{path.stem}.{secrets.token_hex(4)}.arrays")
        temporary = path.with_name(f".{folder.name}.tmp")
        temporary.mkdir(parents=True)
        written: list[str] = []

        def write(array: np.ndarray) -> Any:
            if array.nbytes < 1 << 20:
                return torch.from_numpy(np.array(array))
            name = f"{len(written)}.npy"
            with open(temporary / name, "wb") as file:
                np.save(file, array)
                file.flush()
                os.fsync(file.fileno())
            written.append(name)
            return {ARRAY_FILE: name}

        try:
            state = _walk(state, write)
            os.replace(temporary, folder)
        except BaseException as error:
            reported = _as_disk_full(error, folder)
            shutil.rmtree(temporary, ignore_errors=True)
            if reported is not error:
                raise reported from None
            raise
    else:
        state = _walk(state, lambda a: torch.from_numpy(np.array(a)))
    save_checkpoint(path, model_state, config, state=state,
                    arrays=None if folder is None else folder.name, **info)
    for old in path.parent.glob(f"{path.stem}.*.arrays"):
        if folder is None or old != folder:
            shutil.rmtree(old, ignore_errors=True)


def _walk(node: Any, change) -> Any:
    """`node` with every NumPy array in it replaced by change(array)."""
    if isinstance(node, np.ndarray):
        return change(node)
    if isinstance(node, dict):
        return {key: _walk(value, change) for key, value in node.items()}
    if isinstance(node, (list, tuple)):
        return type(node)(_walk(value, change) for value in node)
    return node


def _attach_arrays(node: Any, folder: Path) -> Any:
    """`node` with every array reference replaced by its .npy file, memory-mapped."""
    if isinstance(node, dict) and set(node) == {ARRAY_FILE}:
        return np.load(folder / node[ARRAY_FILE], mmap_mode="r", allow_pickle=False)
    if isinstance(node, dict):
        return {key: _attach_arrays(value, folder) for key, value in node.items()}
    if isinstance(node, (list, tuple)):
        return type(node)(_attach_arrays(value, folder) for value in node)
    return node


def capture_rngs() -> dict[str, Any]:
    """Python's, NumPy's global and torch's RNG states, as plain data that loads with
    weights_only (the run's own generators travel in its state)."""
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"] = {"key": numpy_state["state"]["key"].tolist(),
                            "pos": numpy_state["state"]["pos"]}
    return {"python": random.getstate(), "numpy": numpy_state,
            "torch": torch.get_rng_state()}


def restore_rngs(state: dict[str, Any]) -> None:
    """Put back what `capture_rngs` captured."""
    random.setstate(state["python"])
    numpy_state = dict(state["numpy"])
    numpy_state["state"] = {"key": np.array(numpy_state["state"]["key"], dtype=np.uint32),
                            "pos": numpy_state["state"]["pos"]}
    np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"])


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint` (weights_only: no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        raise CheckpointError(f"{path}: not a readable dqn checkpoint (not a torch.save "
                              "archive: truncated, or another kind of file)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - on a foreign file torch.load raises anything
        raise CheckpointError(f"{path}: not a readable dqn checkpoint "
                              f"({_reason(error)})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a dqn checkpoint (expected format {FORMAT})")
    if payload.get("arrays"):  # a training state whose large arrays are beside the file
        folder = path.parent / payload["arrays"]
        if not folder.is_dir():
            raise CheckpointError(f"{path}: the arrays it names ({folder.name}) are missing")
        payload["state"] = _attach_arrays(payload["state"], folder)
    return payload


def weights_misfit(weights: Any, expected: dict[str, tuple[int, ...]]) -> str | None:
    """Where `weights` (a state dict) do not fit a network whose state dict has the shapes
    `expected`: the first key missing, extra or of another shape, with both shapes
    ('encoder.layers.2.weight: (16, 16) in the checkpoint, (32, 32) in the network');
    None where they fit."""
    if not isinstance(weights, dict):
        return "it holds no network weights"
    for key in [*expected, *sorted(set(weights) - set(expected))]:
        have = getattr(weights.get(key), "shape", None)
        want = expected.get(key)
        if (None if have is None else tuple(have)) != want:
            return f"{key}: {_shape(have)} in the checkpoint, {_shape(want)} in the network"
    return None


def _shape(shape: Any) -> str:
    return "missing" if shape is None else str(tuple(shape))


def _reason(error: Exception) -> str:
    """The first sentence of what torch.load said, without its advice to load with
    weights_only=False, which would run whatever code the file holds."""
    text = str(error).split("WeightsUnpickler error:")[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0].split(". ")[0].rstrip(".") if lines else type(error).__name__
