"""Shared test helpers: compose the project's config the way `python -m dqn.train` does."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from dqn.config import CONF_DIR, register_schemas

REPO = Path(__file__).resolve().parent.parent


def compose_config(*overrides: str) -> DictConfig:
    """The composed (not yet validated) config for these command-line overrides."""
    register_schemas()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.fixture
def tiny_overrides() -> list[str]:
    """Overrides for a run that takes a second or two."""
    return ["train.total_steps=600", "buffer.learning_starts=100", "eval.every_steps=300",
            "eval.episodes=2", "eval.final_episodes=3", "network.hidden_sizes=[16,16]",
            "train.train_frequency=1", "train.gradient_steps=1"]
