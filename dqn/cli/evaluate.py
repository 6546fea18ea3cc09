"""Evaluate a checkpoint: `python -m dqn.evaluate checkpoint=PATH [key=value ...]`.

PATH is a checkpoint file or a run directory (its checkpoints/best.pt). The network is
rebuilt from the config stored in the checkpoint; greedy episodes are played on the env it
was trained on, with any `env.*` overrides; the score is printed, then written to eval.json
beside the checkpoint. `video.episodes=N` also records N greedy episodes to MP4 in the
run's videos/ folder (files only: the run's SwanLab experiment is closed).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from dqn.checks import ConfigError
from dqn.config import MAX_EVAL_EPISODES, VideoConfig
from dqn.run.checkpoint import CheckpointError
from dqn.run.evaluation import play
from dqn.run.policy import TrainedPolicy
from dqn.run.video import record_episodes

USAGE = ("usage: python -m dqn.evaluate checkpoint=PATH [episodes=100] [seed=0] "
         "[env.max_episode_steps=N|null] [env.id=ID] [video.episodes=0] "
         "[video.max_steps=N|null] [epsilon=E]")
HELP = f"""{USAGE}

Plays greedy episodes with a trained agent and reports their return.

  checkpoint             a checkpoint file (.pt) or a run directory (its checkpoints/best.pt)
  episodes               episodes to play (default 100)
  seed                   seeds the episodes' start states and a sampling head's draws (default 0)
  env.max_episode_steps  time limit; null: the env's registered one (default: as trained)
  env.id                 another env with the same spaces (default: as trained)
  video.episodes         greedy episodes recorded to MP4, plus a GIF of the first (default 0)
  video.max_steps        cut each recorded episode after this many steps (default null)
  epsilon                a random action with this probability (default: the run's
                         eval.epsilon, 0 unless set; Atari presets use 0.05)

Prints mean ± std, min and max, and writes eval.json beside the checkpoint. Videos go to
RUN/videos/ for a checkpoint in RUN/checkpoints/, else to videos/ beside the checkpoint.

Exit status: 0 done; 2 a mistake in the arguments or a checkpoint that cannot be used
(nothing is played or written); 1 eval.json or a video could not be written (the score is
printed all the same; one line on stderr says where and why); 130 Ctrl-C."""


@dataclass
class Arguments:
    checkpoint: Path | None = None
    episodes: int = 100
    seed: int = 0
    env: dict[str, Any] = field(default_factory=dict)  # overrides of the stored env config
    video: VideoConfig = field(default_factory=VideoConfig)
    epsilon: float | None = None  # None: the run's eval.epsilon


def _integer(minimum: int, nullable: bool = False, maximum: int | None = None,
             why: str = "") -> Callable[[str, str], int | None]:
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
        if maximum is not None and value > maximum:
            raise ConfigError(f"{key}={text!r} is not valid: must be <= {maximum:,} ({why})")
        return value
    return parse


def _probability(key: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise ConfigError(f"{key}={text!r} is not valid: must be a number in [0, 1]")
    return value


def _text(key: str, text: str) -> str:
    if not text:
        raise ConfigError(f"{key} is empty: give it a value ({key}=VALUE)")
    return text


KEYS: dict[str, Callable[[str, str], Any]] = {
    "checkpoint": _text,
    "episodes": _integer(1, maximum=MAX_EVAL_EPISODES, why="the bound of eval.final_episodes"),
    "seed": _integer(0),
    "env.id": _text,
    "env.max_episode_steps": _integer(1, nullable=True),
    "video.episodes": _integer(0),
    "video.max_steps": _integer(1, nullable=True),
    "epsilon": _probability,
}


def parse_arguments(argv: list[str]) -> Arguments:
    """`key=value` arguments into Arguments; ConfigError names any mistake in one line."""
    args = Arguments()
    given: dict[str, str] = {}
    for arg in argv:
        key, equals, text = arg.partition("=")
        if not equals:
            raise ConfigError(f"{arg!r} is not key=value; {USAGE}")
        if key not in KEYS:
            raise ConfigError(f"unknown key {key!r}; allowed keys: {', '.join(KEYS)}")
        if key in given:
            raise ConfigError(f"{key} is given twice ({given[key]} and {arg}): give it once")
        given[key] = arg
        value = KEYS[key](key, text)
        section, _, name = key.partition(".")
        if section == "env":
            args.env[name] = value
        elif section == "video":
            setattr(args.video, name, value)
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


def evaluate(policy: TrainedPolicy, env_cfg: Any, episodes: int, seed: int,
             epsilon: float = 0.0) -> dict[str, Any]:
    """Play `episodes` greedy episodes; returns the report that goes to eval.json."""
    result = play(policy, env_cfg, episodes, seed, epsilon)
    return {
        "checkpoint": str(policy.path.resolve()), "env_step": policy.checkpoint.get("env_step"),
        "env": asdict(env_cfg), "episodes": episodes, "seed": seed, "epsilon": epsilon,
        "mean": result.mean, "std": result.std, "min": float(result.returns.min()),
        "max": float(result.returns.max()), "returns": result.returns.tolist(),
        "lengths": result.lengths.tolist()}


def videos_dir(checkpoint: Path) -> Path:
    """RUN/videos for a checkpoint in RUN/checkpoints/, else videos/ beside it."""
    folder = checkpoint.resolve().parent
    return (folder.parent if folder.name == "checkpoints" else folder) / "videos"


def main(argv: list[str] | None = None) -> int:
    """Run the command on `argv`; returns its exit status: 0 done, 2 a usage or
    checkpoint mistake (nothing played or written), 1 a result that could not be written
    (the score is printed all the same), 130 interrupted by Ctrl-C."""
    argv = sys.argv[1:] if argv is None else argv
    if {"-h", "--help"} & set(argv):
        print(HELP)
        return 0
    torch.set_num_threads(1)  # small networks run fastest on one thread
    try:
        args = parse_arguments(argv)
        policy = TrainedPolicy(checkpoint_file(args.checkpoint), args.seed)
        env_cfg = policy.env_config(**args.env)
    except (ConfigError, CheckpointError) as error:
        title = "Config error" if isinstance(error, ConfigError) else "Checkpoint error"
        print(f"{title}: {error}", file=sys.stderr)
        return 2
    try:
        return _score(policy, env_cfg, args)
    except KeyboardInterrupt:
        print("Interrupted (Ctrl-C)", file=sys.stderr)
        return 130


def _score(policy: TrainedPolicy, env_cfg: Any, args: Arguments) -> int:
    """Play and print the score, then write eval.json and any videos; 1 if one of them
    could not be written (each such result is reported in one line), else 0."""
    epsilon = policy.eval_epsilon if args.epsilon is None else args.epsilon
    report = evaluate(policy, env_cfg, args.episodes, args.seed, epsilon)
    print(f"{policy.path.name} (env step {report['env_step']}) on {env_cfg.id}: "
          f"{report['mean']:.1f} ± {report['std']:.1f} over {args.episodes} episodes "
          f"(min {report['min']:.1f}, max {report['max']:.1f}; seed {args.seed})", flush=True)
    written = _write_report(policy.path.parent / "eval.json", report)
    if args.video.episodes:
        written = _record_videos(policy, env_cfg, args, epsilon) and written
    return 0 if written else 1


def _write_report(out: Path, report: dict[str, Any]) -> bool:
    try:
        out.write_text(json.dumps(report, indent=2) + "\n")
    except OSError as error:
        print(f"File error: cannot write {out}: {_reason(error)}; the score above is not "
              "saved", file=sys.stderr)
        return False
    print(f"wrote {out}")
    return True


def _record_videos(policy: TrainedPolicy, env_cfg: Any, args: Arguments,
                   epsilon: float) -> bool:
    folder = videos_dir(policy.path)
    reason = _unwritable(folder)
    if reason is None:
        try:
            recording = record_episodes(policy, env_cfg, folder, policy.path.stem,
                                        args.video.episodes, args.seed, args.video.max_steps,
                                        epsilon)
        except OSError as error:
            reason = _reason(error)
    if reason is not None:
        print(f"File error: cannot write videos to {folder}: {reason}", file=sys.stderr)
        return False
    print(f"recorded greedy episodes of {policy.path.name} (returns "
          f"{', '.join(f'{r:g}' for r in recording.returns)}) to {folder}")
    return True


def _unwritable(folder: Path) -> str | None:
    """Why files cannot be written into `folder` (created if missing), or None."""
    if folder.exists() and not folder.is_dir():
        return "it is a file"
    probe = folder / ".write-test"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        return _reason(error)
    return None


def _reason(error: OSError) -> str:
    """Why a write failed, in a few words (`Permission denied`)."""
    return (error.strerror or str(error) or type(error).__name__).splitlines()[0]


if __name__ == "__main__":
    raise SystemExit(main())
