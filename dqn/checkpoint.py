"""Checkpoints: self-describing, written atomically, loaded without unpickling code."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT = "dqn-checkpoint/1"


class CheckpointError(RuntimeError):
    """A file that cannot be used as a checkpoint; the message names the file."""


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
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint` (weights_only: no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - on a foreign file torch.load raises anything
        raise CheckpointError(f"{path}: not a readable dqn checkpoint "
                              f"({_reason(error)})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a dqn checkpoint (expected format {FORMAT})")
    return payload


def _reason(error: Exception) -> str:
    """The first sentence of what torch.load said, without its advice to load with
    weights_only=False, which would run whatever code the file holds."""
    text = str(error).split("WeightsUnpickler error:")[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0].split(". ")[0].rstrip(".") if lines else type(error).__name__
