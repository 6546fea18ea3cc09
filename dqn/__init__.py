"""dqn: a Hydra-configured deep Q-learning experiment runner."""

__version__ = "0.1.0"
