"""`python -m dqn.evaluate checkpoint=PATH [key=value ...]`: see dqn/cli/evaluate.py."""

from dqn.cli.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
