"""`python -m dqn.train [group=option ...] [key=value ...]`: see dqn/cli/train.py."""

import sys

from dqn.cli.train import cli, main  # noqa: F401 - main: the Hydra task, for callers

if __name__ == "__main__":
    cli(sys.argv[1:])
