"""The training process: its seeds, threads and allocator, and the signals that stop it."""

from __future__ import annotations

import ctypes
import random
import signal
import threading
from typing import Any

import numpy as np
import torch

from dqn.config import Config, resolve_device


def prepare_process(cfg: Config) -> torch.device:
    """Seed Python's, NumPy's and torch's global generators, set torch's threads and the
    allocator, and return the device to train on."""
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.torch_threads)
    keep_freed_memory()
    return resolve_device(cfg.device)


def keep_freed_memory() -> None:
    """Let glibc's malloc reuse freed blocks of up to 64 MB instead of returning them to
    the system: by default a tensor over 128 KB (a batch of 8 agents' hidden activations)
    gets fresh pages from the kernel on every allocation, and faulting them in cost as
    much as the arithmetic. No effect where the C library is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


class StoppedAtOnce(Exception):
    """A second stop signal ended training at once; the message says what last.pt holds."""


class StopSignals:
    """SIGINT/SIGTERM/SIGUSR2 (Ctrl-C, a cluster's preemption, Slurm's warning before the
    time limit) ask the loop to stop after the current vector step, where it saves last.pt;
    a second signal stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_number = 0
        self.name = ""
        self.previous: dict[int, Any] = {}

    def _handle(self, number: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested, self.signal_number = True, number
        self.name = signal.Signals(number).name

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2):
                self.previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)
