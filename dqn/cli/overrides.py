"""Checks of the command line's overrides as written, before Hydra composes anything: the
mistakes Hydra would answer with a traceback, a dozen lines, or not at all."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dqn.checks import ConfigError
from dqn.cli.launchers import OPTUNA_PLUGIN, RAY_PLUGIN, refuse_missing_extra
from dqn.interfaces import HeadConfig

GRAMMAR_HINT = ("values are written key=value, a sweep key=a,b,c or key=range(0,3) with -m; "
                "quote a value that holds spaces, commas, brackets or '=' as key='...'")

# Sweep plugins that come with an extra of our package, by the group choice that uses them.
EXTRAS = {("hydra/launcher", "ray"): RAY_PLUGIN, ("hydra/sweeper", "optuna"): OPTUNA_PLUGIN,
          ("sweep", "optuna"): OPTUNA_PLUGIN}


def reorder_flags(args: list[str]) -> list[str]:
    """`-m`/`--multirun` moved before the overrides: Hydra's parser refuses it after them
    ("unrecognized arguments"), though users write it anywhere."""
    flags = [a for a in args if a in ("-m", "--multirun")]
    return flags + [a for a in args if a not in ("-m", "--multirun")]


# Keys of the network group that moved to the head group, and how they are written now.
MOVED_TO_HEAD = {
    "network.head": lambda v: f"head={v}" + (" (or head.dueling=true on any head)"
                                             if v == "dueling" else ""),
    "network.atoms": lambda v: f"head=c51 head.atoms={v}",
    "network.noisy": lambda v: f"head.noisy={v}",
    "network.noisy_sigma0": lambda v: f"head.noisy_sigma0={v}",
    "network.v_min": lambda v: f"head.v_min={v}",
    "network.v_max": lambda v: f"head.v_max={v}",
}


def check_overrides(args: list[str], conf_dir: Path, multirun: bool) -> None:
    """Refuse, in one line naming the override and what is allowed: a syntax error, a key
    swept and given again (a plain key given twice keeps the last, as in Hydra), a sweep
    without -m, a config group given a value that is not one of its options, a sweep
    plugin whose extra is not installed, and a key that moved (with its new spelling)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    seen: dict[str, tuple[str, bool]] = {}
    for arg in args:
        if arg.startswith("-"):
            continue
        try:
            override = parser.parse_overrides([arg])[0]
        except OverrideParseException as error:
            reason = str(error).splitlines()[0]
            raise ConfigError(f"cannot read the override {arg!r} ({reason}): "
                              f"{GRAMMAR_HINT}") from None
        key = override.key_or_group
        moved = MOVED_TO_HEAD.get(key.lstrip("+~"))
        if moved is not None:
            raise ConfigError(f"{key.lstrip('+~')} moved to the head group: use "
                              f"{moved(arg.partition('=')[2])}")
        if key in seen and (override.is_sweep_override() or seen[key][1]):
            raise ConfigError(f"{key} is given twice ({seen[key][0]} and {arg}): a sweep takes "
                              f"all its values in one override ({key}=a,b,c)")
        seen[key] = (arg, override.is_sweep_override())
        if override.is_sweep_override() and not multirun:
            raise ConfigError(f"{arg} is a sweep (one run per value): add -m, as in "
                              f"python -m dqn.train -m {arg}; a list value is written "
                              f"{key}=[a,b]")
        group = conf_dir / key
        if not override.is_delete() and group.is_dir() and "." not in key:
            value = override.value()
            values = value.list if isinstance(value, ChoiceSweep) else [value]
            for value in values:
                _check_group_value(key, value, group, conf_dir)
                _check_extra(key, value)
    chosen = {key: arg.partition("=")[2] for key, (arg, swept) in seen.items() if not swept}
    _check_rainbow_head(chosen.get("rainbow"), chosen.get("head"), conf_dir)


def _check_rainbow_head(rainbow: str | None, head: str | None, conf_dir: Path) -> None:
    """A rainbow= preset that picks a head and sets that head's own keys (rainbow=full:
    head=c51 with head.atoms) cannot take another head: say which preset does."""
    path = conf_dir / "rainbow" / f"{rainbow}.yaml"
    if not (rainbow and head and path.is_file()):
        return
    preset = OmegaConf.load(path)
    picks = next((entry["override /head"] for entry in preset.get("defaults", [])
                  if isinstance(entry, DictConfig) and "override /head" in entry), None)
    shared = {item.name for item in fields(HeadConfig)}
    own = sorted(set(preset.get("head", {})) - shared)
    if picks is None or picks == head or not own:
        return
    without = f"without_{picks}"
    instead = (f": for the other components with head={head} use rainbow={without} "
               f"head={head}" if (path.parent / f"{without}.yaml").is_file() else "")
    raise ConfigError(f"rainbow={rainbow} picks head={picks} and sets head.{own[0]}, which "
                      f"head={head} does not have{instead}")


def _check_group_value(group: str, value: Any, folder: Path, conf_dir: Path) -> None:
    if isinstance(value, str) and value:
        return  # Hydra names the options when the name is not one of them
    names = sorted(p.stem for p in folder.glob("*.yaml"))
    what = "an empty value" if value in ("", None) else f"the value {value!r}"
    instead = (f"leave {group} out to use none" if group in _optional_groups(conf_dir)
               else f"a setting inside it is changed with {group}.KEY=VALUE")
    raise ConfigError(f"{group}={_shown(value)}: {group} is a config group and takes the name "
                      f"of one of its options ({', '.join(names)}), not {what}; {instead}")


def _shown(value: Any) -> str:
    return "null" if value is None else str(value)


def _optional_groups(conf_dir: Path) -> set[str]:
    """The groups conf/config.yaml leaves unchosen by default (`experiment: null`)."""
    defaults = OmegaConf.to_container(OmegaConf.load(conf_dir / "config.yaml").defaults)
    return {key for entry in defaults if isinstance(entry, dict)
            for key, choice in entry.items() if choice is None}


def _check_extra(group: str, value: Any) -> None:
    needed = EXTRAS.get((group, value))
    if needed is not None:
        refuse_missing_extra(f"{group}={value}", needed)


def fixed_overrides(args: list[str]) -> list[str]:
    """The overrides of `args` that are not sweeps: those every job of the sweep shares."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([a for a in args if not a.startswith("-")])
    return [o.input_line for o in parsed if not o.is_sweep_override()]


def sweep_jobs(args: list[str], limit: int = 16) -> list[list[str]]:
    """The overrides of the jobs a command-line sweep launches (the grid of its `a,b,c` and
    `range()` values), or, past `limit` jobs, one job per swept value with every other key
    at its first value: enough to meet each value once."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    fixed, swept = [], []
    for override in OverridesParser.create().parse_overrides(
            [a for a in args if not a.startswith("-")]):
        if override.is_sweep_override():
            key = override.get_key_element()
            swept.append([f"{key}={v}" for v in override.sweep_string_iterator()])
        else:
            fixed.append(override.input_line)
    grid = [[]]
    for values in swept:
        grid = [job + [value] for job in grid for value in values]
        if len(grid) > limit:
            firsts = [values[0] for values in swept]
            grid = [firsts[:i] + [value] + firsts[i + 1:]
                    for i, values in enumerate(swept) for value in values]
            break
    return [fixed + job for job in grid]
