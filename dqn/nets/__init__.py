"""Q-networks: an encoder (observation -> features) and a head (features -> Q-values, or
a distribution over returns), each chosen by config."""

from dqn.nets.qnet import NetworkConfig, QNetwork, build_q_network, greedy_actions

__all__ = ["NetworkConfig", "QNetwork", "build_q_network", "greedy_actions"]
