"""Evaluate a checkpoint: `python -m dqn.evaluate checkpoint=PATH [key=value ...]`.

PATH is a checkpoint file or a run directory (its checkpoints/best.pt). The network is
rebuilt from the config stored in the checkpoint; greedy episodes are played on the env it
was trained on, with any `env.*` overrides; the scores are printed and written to
eval.json beside the checkpoint.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from dqn.checkpoint import CheckpointError
from dqn.config import ConfigError
from dqn.evaluation import Evaluator
from dqn.policy import TrainedPolicy

USAGE = ("usage: python -m dqn.evaluate checkpoint=PATH [episodes=100] [seed=0] "
         "[env.max_episode_steps=N|null] [env.id=ID]")
HELP = f"""{USAGE}

Plays greedy episodes with a trained agent and reports their return.

  checkpoint             a checkpoint file (.pt) or a run directory (its checkpoints/best.pt)
  episodes               episodes to play (default 100)
  seed                   seeds the episodes' start states (default 0)
  env.max_episode_steps  time limit; null: the env's registered one (default: as trained)
  env.id                 another env with the same spaces (default: as trained)

Prints mean ± std, min and max, and writes eval.json beside the checkpoint."""


@dataclass
class Arguments:
    checkpoint: Path | None = None
    episodes: int = 100
    seed: int = 0
    env: dict[str, Any] = field(default_factory=dict)  # overrides of the stored env config


def _integer(minimum: int, nullable: bool = False) -> Callable[[str, str], int | None]:
    def parse(key: str, text: str) -> int | None:
        if nullable and text == "null":
            return None
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            allowed = f"an integer >= {minimum}" + (" or null" if nullable else "")
            raise ConfigError(f"{key}={text!r} is not valid: must be {allowed}")
        return value
    return parse


def _text(key: str, text: str) -> str:
    if not text:
        raise ConfigError(f"{key} is empty: give it a value ({key}=VALUE)")
    return text


KEYS: dict[str, Callable[[str, str], Any]] = {
    "checkpoint": _text,
    "episodes": _integer(1),
    "seed": _integer(0),
    "env.id": _text,
    "env.max_episode_steps": _integer(1, nullable=True),
}


def parse_arguments(argv: list[str]) -> Arguments:
    """`key=value` arguments into Arguments; ConfigError names any mistake in one line."""
    args = Arguments()
    for arg in argv:
        key, equals, text = arg.partition("=")
        if not equals:
            raise ConfigError(f"{arg!r} is not key=value; {USAGE}")
        if key not in KEYS:
            raise ConfigError(f"unknown key {key!r}; allowed keys: {', '.join(KEYS)}")
        value = KEYS[key](key, text)
        section, _, name = key.partition(".")
        if section == "env":
            args.env[name] = value
        else:
            setattr(args, key, Path(value) if key == "checkpoint" else value)
    if args.checkpoint is None:
        raise ConfigError("checkpoint is required: checkpoint=PATH, a checkpoint file or a "
                          "run directory")
    return args


def checkpoint_file(path: Path) -> Path:
    """`path` itself, or the best checkpoint of the run directory `path`."""
    if path.is_dir():
        best = path / "checkpoints" / "best.pt"
        if not best.is_file():
            raise CheckpointError(f"checkpoint={path} is a directory without "
                                  "checkpoints/best.pt: pass a checkpoint file or a run directory")
        return best
    if not path.exists():
        raise CheckpointError(f"checkpoint={path}: no such file or directory; pass a "
                              "checkpoint file or a run directory")
    return path


def evaluate(args: Arguments) -> dict[str, Any]:
    """Play `args.episodes` greedy episodes; returns the report written to eval.json."""
    path = checkpoint_file(args.checkpoint)
    policy = TrainedPolicy(path)
    env_cfg = policy.env_config(**args.env)
    evaluator = Evaluator(env_cfg, args.seed)
    try:
        result = evaluator.run(policy, args.episodes)
    finally:
        evaluator.close()
    report = {
        "checkpoint": str(path.resolve()), "env_step": policy.checkpoint.get("env_step"),
        "env": asdict(env_cfg), "episodes": args.episodes, "seed": args.seed,
        "mean": result.mean, "std": result.std, "min": float(result.returns.min()),
        "max": float(result.returns.max()), "returns": result.returns.tolist(),
        "lengths": result.lengths.tolist()}
    (path.parent / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if {"-h", "--help"} & set(argv):
        print(HELP)
        return 0
    torch.set_num_threads(1)  # small networks run fastest on one thread
    try:
        report = evaluate(parse_arguments(argv))
    except (ConfigError, CheckpointError) as error:
        print(f"Error: {error}", file=sys.stderr)
        return 2
    path = Path(report["checkpoint"])
    print(f"{path.name} (env step {report['env_step']}) on {report['env']['id']}: "
          f"{report['mean']:.1f} ± {report['std']:.1f} over {report['episodes']} episodes "
          f"(min {report['min']:.1f}, max {report['max']:.1f}; seed {report['seed']})")
    print(f"wrote {path.parent / 'eval.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
