"""The text of `python -m dqn.train --help`: each key's meaning, the launchers, the exit codes.

It fills conf/config.yaml's hydra.help template: the config groups and their options, the
config that the command's overrides compose, each key with its value and meaning, the
sweep launchers and presets. Meanings are read from source text, never by importing the
options (which imports torch): the inline comments of the schema dataclasses (dqn/**/*.py,
parsed with `ast`; an option's schema is the one its `@option(group, name, Schema)` names,
base classes included), else those of conf/'s YAML files. A schema's comment says what a
key means for any value, a YAML's may describe the value that file sets: the schema's
comes first.
"""

from __future__ import annotations

import ast
import importlib.util
import io
import re
import shutil
import string
import textwrap
import tokenize
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Mapping

import yaml
from omegaconf import DictConfig, OmegaConf, open_dict

from dqn.cli.conf import CONF_DIR, HELP_GROUPS, register_placeholders
from dqn.cli.overrides import EXTRAS, check_overrides
from dqn.config import GROUPS

PACKAGE_DIR = Path(__file__).resolve().parents[1]
ROOT_SCHEMA = "Config"  # dqn/config.py's top-level schema: the keys outside the groups
MAX_WIDTH = 100


@dataclass(frozen=True)
class Launcher:
    name: str
    purpose: str
    modules: tuple[str, ...] = ()  # what must be importable for Hydra to find it
    extra: str | None = None  # our package's extra that installs it


_RAY_MODULES = tuple(EXTRAS[("hydra/launcher", "ray")][:-1])
LAUNCHERS = (
    Launcher("basic", "Hydra's default: one job after another, in this process"),
    Launcher("joblib", "jobs in parallel on this machine (hydra.launcher.n_jobs=N)",
             ("hydra_plugins.hydra_joblib_launcher",)),
    Launcher("cluster", "", ("hydra_plugins.hydra_submitit_launcher",)),
    Launcher("ray", "", _RAY_MODULES, "ray"),
)


# --- reading meanings from source text ---------------------------------------------------
@dataclass(frozen=True)
class Schema:
    """A class of the package as its source declares it: its bases and, for each field,
    the class its annotation names and the field's inline comment."""

    bases: tuple[str, ...]
    fields: dict[str, tuple[str | None, str]]


@cache
def _source_index() -> tuple[dict[str, Schema], dict[tuple[str, str], str]]:
    """Every class of dqn/ by name, and each option's schema class by (group, option)."""
    classes: dict[str, Schema] = {}
    schemas: dict[tuple[str, str], str] = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        source = path.read_text()
        comments = _line_comments(source)
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef):
                classes.setdefault(node.name, _schema(node, comments))
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
                for decorator in node.decorator_list:
                    schemas.update(_option_schema(decorator))
    return classes, schemas


def _line_comments(source: str) -> dict[int, str]:
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return {t.start[0]: t.string.lstrip("#").strip() for t in tokens
            if t.type == tokenize.COMMENT}


def _schema(node: ast.ClassDef, comments: dict[int, str]) -> Schema:
    fields = {}
    for item in node.body:
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            annotation = item.annotation.id if isinstance(item.annotation, ast.Name) else None
            fields[item.target.id] = (annotation, comments.get(item.end_lineno or 0, ""))
    bases = tuple(base.id for base in node.bases if isinstance(base, ast.Name))
    return Schema(bases, fields)


def _option_schema(decorator: ast.expr) -> dict[tuple[str, str], str]:
    """{(group, name): schema class name} for an `@option("group", "name", Schema)`."""
    if not (isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Name)
            and decorator.func.id == "option" and len(decorator.args) == 3):
        return {}
    group, name, schema = decorator.args
    if not (isinstance(group, ast.Constant) and isinstance(name, ast.Constant)
            and isinstance(schema, ast.Name)):
        return {}
    return {(group.value, name.value): schema.id}


def _field(class_name: str | None, key: str) -> tuple[str | None, str] | None:
    """The class that the annotation of `key` names and its comment, in `class_name` or its
    bases (from the first that comments it); None if none of them declares `key`."""
    classes = _source_index()[0]
    pending, found = [class_name], None
    while pending:
        schema = classes.get(pending.pop(0) or "")
        if schema is None:
            continue
        if key in schema.fields:
            annotation, comment = schema.fields[key]
            found = (found[0] if found else None) or annotation, comment
            if comment:
                return found
        pending += schema.bases
    return found


@cache
def yaml_comments(path: Path) -> dict[str, str]:
    """The inline comment of each `key: value  # comment` line of a YAML file, by dotted key."""
    found: dict[str, str] = {}
    stack: list[tuple[int, str]] = []  # the enclosing keys and their indents
    for line in path.read_text().splitlines():
        match = re.match(r"( *)(\w+):(.*?)(?:\s+#\s*(.*))?$", line)
        if match is None:
            continue
        indent, key, _, text = match.groups()
        while stack and stack[-1][0] >= len(indent):
            stack.pop()
        stack.append((len(indent), key))
        if text:
            found[".".join(name for _, name in stack)] = text
    return found


@cache
def purpose(path: Path) -> str:
    """The first sentence of a YAML file's opening comment."""
    lines = []
    for line in path.read_text().splitlines():
        text = line.lstrip("#").strip()
        if not line.startswith("#") or (lines and (not text or line.startswith("#  "))):
            break  # the paragraph ends at a blank or an indented (example) line
        if text and not text.startswith("@package"):
            lines.append(text)
    paragraph = " ".join(lines)
    return re.split(r"(?<=[.!?])\s+(?=[A-Z`(])", paragraph)[0].rstrip(".")


@cache
def group_meanings() -> dict[str, str]:
    """The comment of each group in conf/config.yaml's defaults list."""
    text = (CONF_DIR / "config.yaml").read_text()
    return dict(re.findall(r"^\s*- (\w+): \S+\s+#\s*(.*)$", text, flags=re.MULTILINE))


def schema_option(group: str, choice: str) -> str | None:
    """The registered option that conf/<group>/<choice>.yaml extends."""
    for default in OmegaConf.load(CONF_DIR / group / f"{choice}.yaml").get("defaults", []):
        if str(default).startswith(f"/schema/{group}/"):
            return str(default).removeprefix(f"/schema/{group}/").split("@")[0]
    return None


def meaning(path: tuple[str, ...], choices: Mapping[str, Any]) -> str | None:
    """What the config key at `path` means for the options chosen for its groups: "" if
    nothing says, None if neither a schema nor a YAML declares the key."""
    group = path[0]
    if group in GROUPS:
        choice = str(choices.get(group))
        if len(path) == 1:
            return f"{group_meanings().get(group, '')} ({group}={choice})".lstrip()
        schema = _source_index()[1].get((group, schema_option(group, choice) or ""))
        declared = _field(schema, path[1]) if len(path) == 2 else None
        said = yaml_comments(CONF_DIR / group / f"{choice}.yaml").get(".".join(path[1:]))
    else:
        declared = (ROOT_SCHEMA, "")
        for key in path:
            declared = _field(declared[0], key) if declared else None
        said = yaml_comments(CONF_DIR / "config.yaml").get(".".join(path))
    if declared is None and said is None:
        return None
    return (declared[1] if declared else "") or said or ""


# --- laying the text out ------------------------------------------------------------------
def width() -> int:
    """The terminal's width, at most MAX_WIDTH columns (MAX_WIDTH when not a terminal)."""
    return min(shutil.get_terminal_size((MAX_WIDTH, 24)).columns, MAX_WIDTH)


def shown(value: Any) -> str:
    """A value as YAML writes it, on one line."""
    text = yaml.safe_dump(value, default_flow_style=True, width=float("inf"))
    return text.split("\n...")[0].strip()


def commented(rows: list[tuple[str, str]], columns: int) -> list[str]:
    """`left  # meaning` lines, the comments aligned, long ones wrapped under themselves."""
    column = min(max(len(left) for left, _ in rows) + 2, columns - 32)
    lines = []
    for left, text in rows:
        if not text:
            lines.append(left)
            continue
        start = max(column, len(left) + 2)
        wrapped = textwrap.wrap(text, max(columns - start - 2, 24), break_on_hyphens=False)
        lines.append(f"{left.ljust(start)}# {wrapped[0]}")
        lines += [f"{' ' * start}# {more}" for more in wrapped[1:]]
    return lines


def fit(text: str, room: int) -> str:
    """`text` on one line of at most `room` characters: the part before its first colon
    if that says enough, else as many of its words as fit."""
    if len(text) <= room:
        return text
    head = text.split(": ")[0]
    if 20 <= len(head) <= room and head.count("(") == head.count(")"):
        return head
    return textwrap.shorten(text, room, placeholder=" ...")


def listed(entries: list[tuple[str, str]], indent: str, columns: int) -> list[str]:
    """`name  purpose` lines, the purposes aligned and cut to one line each."""
    column = max(len(name) for name, _ in entries) + 2
    room = max(columns - len(indent) - column, 24)
    return [f"{indent}{name.ljust(column)}{fit(text, room)}".rstrip() for name, text in entries]


# --- the parts of the help ----------------------------------------------------------------
def groups_text(columns: int) -> str:
    """Each config group with its options and their purposes; * marks the default."""
    defaults = _default_choices()
    lines = []
    for group in HELP_GROUPS:
        if group == "sweep":  # listed with the sweeps
            continue
        said = group_meanings().get(group)
        lines.append(f"{group}" + (f": {said}" if said else ""))
        names = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        marked = [(("* " if defaults.get(group) == name else "  ") + name,
                   purpose(CONF_DIR / group / f"{name}.yaml")) for name in names]
        lines += listed(marked, "  ", columns)
    return "\n".join(lines)


def _default_choices() -> dict[str, str]:
    defaults = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "config.yaml").defaults)
    return {key: choice for entry in defaults if isinstance(entry, dict)
            for key, choice in entry.items()}


def config_text(cfg: DictConfig, choices: Mapping[str, Any], columns: int) -> str:
    """The composed config, each key with its value and meaning; one block per section."""
    data = OmegaConf.to_container(cfg, resolve=False)
    blocks, loose = [], []
    for key, value in data.items():
        if isinstance(value, dict):
            blocks.append(commented(_rows((key,), value, choices), columns))
        else:
            loose += _rows((key,), value, choices)
    if loose:
        blocks.append(commented(loose, columns))
    return "\n".join(line for block in blocks for line in block)


def _rows(path: tuple[str, ...], value: Any, choices: Mapping[str, Any]) -> list[tuple[str, str]]:
    indent = "  " * (len(path) - 1)
    said = meaning(path, choices)
    if said is None:
        said = "not a setting of this config: a run refuses it"
    if not isinstance(value, dict) or not value:
        return [(f"{indent}{path[-1]}: {shown(value)}", said)]
    rows = [(f"{indent}{path[-1]}:", said)]
    for key, item in value.items():
        rows += _rows((*path, key), item, choices)
    return rows


def launchers_text(chosen: str, found: list[str], columns: int) -> str:
    """Each launcher with its purpose, whether it is installed, and our YAML's keys; then
    the other launchers Hydra `found` (the plugins' own)."""
    entries, keys = [], {}
    for launcher in LAUNCHERS:
        ours = CONF_DIR / "hydra" / "launcher" / f"{launcher.name}.yaml"
        said = launcher.purpose or purpose(ours)
        if not _installed(launcher.modules):
            extra = f"[{launcher.extra}]" if launcher.extra else ""
            said = f"not installed: pip install -e \".{extra}\"; {said}"
        entries.append((("* " if launcher.name == chosen else "  ") + launcher.name, said))
        keys[launcher.name] = ([f"      conf/hydra/launcher/{ours.name}:",
                                *commented(_launcher_rows(ours), columns)]
                               if ours.is_file() else [])
    lines = []
    for launcher, line in zip(LAUNCHERS, listed(entries, "", columns)):
        lines += [line, *keys[launcher.name]]
    others = sorted(set(found) - {launcher.name for launcher in LAUNCHERS})
    if others:
        lines += textwrap.wrap(f"Also installed: {', '.join(others)} (the plugins' own "
                               "settings)", columns, subsequent_indent="  ")
    return "\n".join(lines)


def presets_text(columns: int) -> str:
    """The sweep presets (conf/sweep/) with their purposes."""
    presets = sorted((CONF_DIR / "sweep").glob("*.yaml"))
    return "\n".join(listed([(p.stem, purpose(p)) for p in presets], "  ", columns))


def _launcher_rows(path: Path) -> list[tuple[str, str]]:
    """Our launcher YAML's keys, dotted, with their values and comments."""
    node = OmegaConf.load(path)
    with open_dict(node):
        for key in ("defaults", "_target_"):
            node.pop(key, None)
    comments = yaml_comments(path)
    return [(f"        {key}: {shown(value)}", comments.get(key, ""))
            for key, value in _flat(OmegaConf.to_container(node)).items()]


def _flat(node: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in node.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _installed(modules: tuple[str, ...]) -> bool:
    try:
        return all(importlib.util.find_spec(module) is not None for module in modules)
    except ModuleNotFoundError:
        return False


def help_text(args: list[str]) -> str:
    """--help for the command line `args` (its overrides; flags are left out): conf/config.
    yaml's hydra.help template with the groups, the config those overrides compose, and
    the sweeps filled in. A mistake in the overrides raises ConfigError, or Hydra's or
    OmegaConf's own error."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    multirun = any(a in ("-m", "--multirun") for a in args)
    overrides = [a for a in args if not a.startswith("-")]
    check_overrides(overrides, CONF_DIR, multirun)
    parsed = OverridesParser.create().parse_overrides(overrides)
    single = [a for a, o in zip(overrides, parsed) if not o.is_sweep_override()]
    register_placeholders()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=single, return_hydra_config=True)
        found = GlobalHydra.instance().config_loader().get_group_options("hydra/launcher")
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    template = OmegaConf.to_container(cfg.hydra.help, resolve=True)["template"]
    with open_dict(cfg):
        cfg.pop("hydra")
    columns = width()
    config = config_text(cfg, choices, columns)
    swept = " ".join(a for a in overrides if a not in single)
    if swept:
        said = f"Swept (one job per value; the config above leaves them out): {swept}"
        config += "\n" + "\n".join(textwrap.wrap(said, columns))
    return string.Template(template).safe_substitute(
        GROUPS=groups_text(columns), CONFIG=config,
        LAUNCHERS=launchers_text(str(choices.get("hydra/launcher")), found, columns),
        SWEEP_PRESETS=presets_text(columns)).rstrip() + "\n"
