"""The command-line layer: the only modules that import Hydra."""
