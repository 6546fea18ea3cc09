"""Environments: every env option (`conf/env/`) makes gymnasium envs that a DQN can drive:
a Box observation (kept in its own shape and dtype) and Discrete actions 0..n-1."""

from dqn.envs.make import (
    EnvMaker,
    check_spaces,
    env_maker,
    make_env,
    make_training_envs,
    make_vector_env,
)

__all__ = ["EnvMaker", "check_spaces", "env_maker", "make_env", "make_training_envs",
           "make_vector_env"]
