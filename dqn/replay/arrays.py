"""Arrays as checkpoints give them back."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def as_array(value: Any) -> np.ndarray:
    """A checkpoint's array as NumPy: tensors (small arrays travel inside last.pt) and
    memory-mapped .npy files (large ones travel beside it) alike."""
    return value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
