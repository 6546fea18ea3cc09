"""Experience replay: every buffer option (`conf/buffer/`) stores transitions in the
observation's own shape and dtype and hands out batches with optional fields."""

from dqn.replay.buffer import Batch, ReplayBuffer, ReplayConfig, build_replay, check_memory

__all__ = ["Batch", "ReplayBuffer", "ReplayConfig", "build_replay", "check_memory"]
