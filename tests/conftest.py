"""Shared test helpers: compose the project's config the way `python -m dqn.train` does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from dqn.cli.conf import CONF_DIR, register_schemas

REPO = Path(__file__).resolve().parent.parent


def run_python(cwd: Path, *args: str, env: dict[str, str] | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess:
    """`python ARGS` in `cwd`, importing this checkout's `dqn` (as a user's shell would)."""
    environment = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=timeout)


def refused_in_one_line(cwd: Path, *args: str) -> str:
    """Run `python -m dqn.train ARGS` in the empty folder `cwd`, check that it is refused
    as a user mistake (exit 2, one stderr line, no traceback, nothing written) and return
    that line."""
    result = run_python(cwd, "-m", "dqn.train", *args, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert list(cwd.iterdir()) == []  # nothing written
    return lines[0]


def compose_config(*overrides: str) -> DictConfig:
    """The composed (not yet validated) config for these command-line overrides."""
    register_schemas()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


# Overrides for a run that takes a second or two.
TINY_OVERRIDES = ("train.total_steps=600", "buffer.learning_starts=100", "eval.every_steps=300",
                  "eval.episodes=2", "eval.final_episodes=3", "network.hidden_sizes=[16,16]",
                  "train.train_frequency=1", "train.gradient_steps=1")


@pytest.fixture
def tiny_overrides() -> list[str]:
    """Overrides for a run that takes a second or two."""
    return list(TINY_OVERRIDES)
