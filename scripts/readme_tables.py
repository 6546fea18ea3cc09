"""The reference blocks of the README and docs/, generated from the code: the config groups,
the top-level settings, the groups' interfaces and the module map, each between
`<!-- BEGIN generated: NAME -->` and `<!-- END generated: NAME -->` in the file BLOCKS
names for it.

    python scripts/readme_tables.py            # rewrite those files in place
    python scripts/readme_tables.py --check    # exit 1 with a diff if any of them is stale
"""

from __future__ import annotations

import ast
import difflib
import inspect
import io
import os
import re
import sys
import textwrap
import tokenize
from dataclasses import MISSING, Field, fields, is_dataclass
from functools import cache
from pathlib import Path
from typing import Any, Callable, Optional, get_type_hints

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's dqn, not an installed one

from omegaconf import OmegaConf  # noqa: E402 - after pointing sys.path at the checkout

from dqn.cli.args import ArgumentParser  # noqa: E402
from dqn.cli.conf import CONF_DIR, HELP_GROUPS  # noqa: E402
from dqn.cli.help import yaml_comments  # noqa: E402
from dqn.config import GROUPS, Config  # noqa: E402
from dqn.interfaces import INTERFACES, Interface  # noqa: E402
from dqn.options import Option, options  # noqa: E402

README = REPO / "README.md"
CONFIG_PAGE = REPO / "docs" / "config.md"
ARCHITECTURE_PAGE = REPO / "docs" / "architecture.md"
PRESETS = {  # the meaning of each preset group (a group of conf/ that has no schema), its page
    "experiment": ("presets that set many groups at once", REPO / "docs" / "presets.md"),
    "rainbow": ("Rainbow's components switched on (or off) on top of the preset",
                REPO / "docs" / "family.md"),
    "sweep": ("presets that make the command a sweep", REPO / "docs" / "sweeps.md"),
}
CONF_LINE = "one folder per config group, one YAML per option (see docs/config.md)"
WIDTH = 100  # the longest line of the module map


@cache
def field_comments(cls: type) -> dict[str, Optional[str]]:
    """The fields that the body of dataclass `cls` declares, each with its trailing comment."""
    source = textwrap.dedent(inspect.getsource(cls))
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    comments = {t.start[0]: t.string.lstrip("#").strip() for t in tokens
                if t.type == tokenize.COMMENT}
    body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
    return {node.target.id: comments.get(node.end_lineno) for node in body
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)}


def comment(cls: type, key: str) -> Optional[str]:
    """The comment on `key` where `cls` or its nearest base class declares it."""
    for klass in cls.__mro__:
        if is_dataclass(klass) and key in field_comments(klass):
            return field_comments(klass)[key]
    return None


def escape(text: str) -> str:
    """`text` made safe for a markdown table cell."""
    return text.replace("|", "\\|")


def yaml_options(group: str) -> dict[str, str]:
    """The options of conf/<group>/, each with the registered option it extends."""
    found = {}
    for path in sorted((CONF_DIR / group).glob("*.yaml")):
        defaults = [str(d) for d in OmegaConf.load(path).get("defaults", [])]
        schemas = [d.split("/")[3].split("@")[0] for d in defaults
                   if d.startswith(f"/schema/{group}/")]
        found[path.stem] = schemas[0] if schemas else path.stem
    return found


def options_cell(group: str) -> str:
    """The YAML options of a group; those extending a differently named option after its name."""
    chosen = yaml_options(group)
    cells = []
    for name in sorted(set(options(group)) | set(chosen.values())):
        files = ", ".join(f"`{stem}`" for stem, option in chosen.items() if option == name)
        cells.append(f"`{name}` (no YAML)" if not files
                     else files if files == f"`{name}`" else f"{name}: {files}")
    return ("; " if any(":" in cell for cell in cells) else ", ").join(cells)


def meaning(key: str, having: list[Option]) -> str:
    """` (comment)` for `key`, naming the options when they comment it differently."""
    said = {entry.name: text for entry in having
            if entry.schema and (text := comment(entry.schema, key))}
    if not said:
        return ""
    texts = set(said.values())
    if len(texts) == 1 and len(said) == len(having):
        return f" ({escape(texts.pop())})"
    return f" ({escape('; '.join(f'{name}: {text}' for name, text in said.items()))})"


def keys_cell(group: str) -> str:
    """The keys of a group's options: those of every option first, then the others, each
    after the options that have it."""
    entries = sorted(options(group).values(), key=lambda entry: entry.name)
    owners: dict[str, list[Option]] = {}
    for entry in entries:
        for item in fields(entry.schema) if entry.schema else ():
            owners.setdefault(item.name, []).append(entry)
    by_owners: dict[tuple[str, ...], list[str]] = {}
    for key, having in owners.items():
        names = () if len(having) == len(entries) else tuple(e.name for e in having)
        by_owners.setdefault(names, []).append(f"`{key}`{meaning(key, having)}")
    ordered = sorted(by_owners.items(), key=lambda item: (-len(item[0] or entries), item[0]))
    return "; ".join((f"{', '.join(names)}: " if names else "") + ", ".join(keys)
                     for names, keys in ordered)


def preset_meaning(group: str, where: Path) -> str:
    """What a preset group does, with a link to its page relative to the file `where`."""
    if group not in PRESETS:
        return "presets"
    text, page = PRESETS[group]
    return f"{text} ([{page.name}]({os.path.relpath(page, where.parent)}))"


def presets(where: Path) -> list[tuple[str, str, str]]:
    """Each preset group of conf/: its name, its YAMLs and what they do (linked from `where`)."""
    return [(f"`{group}`", ", ".join(f"`{stem}`" for stem in yaml_options(group)),
             preset_meaning(group, where)) for group in HELP_GROUPS if group not in GROUPS]


def group_table() -> str:
    """The config-group table of docs/config.md: one row per group of conf/, schema groups
    first, with every key of their options."""
    rows = ["| group | options | keys |", "| --- | --- | --- |"]
    rows += [f"| `{group}` | {options_cell(group)} | {keys_cell(group)} |" for group in GROUPS]
    rows += [f"| {group} | {names} | {text} |" for group, names, text in presets(CONFIG_PAGE)]
    return "\n".join(rows)


def options_table() -> str:
    """The README's short config-group table: each group with its options, no keys."""
    rows = ["| group | options |", "| --- | --- |"]
    rows += [f"| `{group}` | {options_cell(group)} |" for group in GROUPS]
    rows += [f"| {group} | {names}: {text} |" for group, names, text in presets(README)]
    return "\n".join(rows)


def default(item: Field) -> Any:
    """The dataclass default of a field."""
    return item.default_factory() if item.default_factory is not MISSING else item.default


def show(value: Any) -> str:
    """A value as YAML spells it."""
    if isinstance(value, bool):
        return str(value).lower()
    return "null" if value is None else str(value)


def settings_table() -> str:
    """The top-level settings: Config's own keys, then those of its nested sections, with
    their defaults in conf/config.yaml."""
    conf = OmegaConf.load(CONF_DIR / "config.yaml")
    said = yaml_comments(CONF_DIR / "config.yaml")
    hints = get_type_hints(Config)
    nested = [f for f in fields(Config) if is_dataclass(hints[f.name]) and f.name not in GROUPS]
    keys = [(f.name, f, Config) for f in fields(Config) if f.name not in GROUPS and f not in nested]
    keys += [(f"{part.name}.{f.name}", f, hints[part.name]) for part in nested
             for f in fields(hints[part.name])]
    rows = ["| key | default | meaning |", "| --- | --- | --- |"]
    for key, item, cls in keys:
        value = OmegaConf.select(conf, key, default=default(item))
        text = comment(cls, item.name) or said.get(key, "")
        rows.append(f"| `{key}` | {escape(show(value))} | {escape(text)} |")
    return "\n".join(rows)


def interface_cell(interface: Interface) -> str:
    """What an option of the group implements: the interface's methods (the abstract ones,
    then those it may override), or for a function the type it returns."""
    behaviour = interface.behaviour_class()
    if not isinstance(interface.behaviour, type):
        return f"a function `{interface.built_as.removeprefix('function')}` returning " \
               f"`{interface.behaviour.replace(':', '.')}`"
    own = [name for name, value in vars(behaviour).items()
           if callable(value) or isinstance(value, classmethod)]
    required = [name for name in own if name in behaviour.__abstractmethods__]
    optional = [name for name in own if name not in required]
    attributes = [name for name, kind in vars(behaviour).get("__annotations__", {}).items()
                  if "ClassVar" not in str(kind)]
    cell = f"`{behaviour.__name__}`, built as `{interface.built_as}`: " + \
        ", ".join(f"`{name}`" for name in required + attributes)
    return cell + (f"; may override {', '.join(f'`{n}`' for n in optional)}" if optional else "")


def interfaces_table() -> str:
    """Each config group's two contracts (dqn/interfaces.py) and its options."""
    rows = ["| group | settings every option has | what an option implements | options |",
            "| --- | --- | --- | --- |"]
    for group, interface in INTERFACES.items():
        settings = ", ".join(f"`{f.name}`" for f in fields(interface.settings)) or "none"
        rows.append(f"| `{group}` | `{interface.settings.__name__}`: {settings} | "
                    f"{escape(interface_cell(interface))} | "
                    f"{', '.join(f'`{name}`' for name in sorted(options(group)))} |")
    return "\n".join(rows)


def first_sentence(path: Path) -> str:
    """The first sentence of a module's docstring, on one line."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    paragraph = " ".join(doc.split("\n\n")[0].split())
    return re.split(r"(?<=[.!?])\s+(?=[A-Z`])", paragraph)[0].rstrip(".")


def architecture() -> str:
    """The module map: conf/, then each module of dqn/ with its docstring's first sentence,
    subpackages after the top-level modules, an indented code block."""
    package = REPO / "dqn"
    rows = [("conf/", CONF_LINE), ("dqn/", first_sentence(package / "__init__.py"))]
    seen: set[Path] = set()
    modules = [p.relative_to(package) for p in package.rglob("*.py")
               if p.stem not in ("__init__", "__main__")]
    for module in sorted(modules, key=lambda m: (len(m.parts) > 1, m.parts)):
        for depth, folder in enumerate(reversed(module.parents[:-1]), start=1):
            if folder not in seen:
                seen.add(folder)
                rows.append(("  " * depth + f"{folder.name}/",
                             first_sentence(package / folder / "__init__.py")))
        rows.append(("  " * len(module.parts) + module.name, first_sentence(package / module)))
    column = 4 + max(len(name) for name, _ in rows) + 2
    return "\n".join(textwrap.fill(text, WIDTH, initial_indent=f"    {name}".ljust(column),
                                   subsequent_indent=" " * column) for name, text in rows)


BLOCKS: dict[str, tuple[Path, Callable[[], str]]] = {  # each block, the file it lives in
    "group-options": (README, options_table),
    "top-level-settings": (README, settings_table),
    "config-groups": (CONFIG_PAGE, group_table),
    "architecture": (ARCHITECTURE_PAGE, architecture),
    "interfaces": (README, interfaces_table),
}


def files() -> list[Path]:
    """The files that hold generated blocks, each once."""
    return list(dict.fromkeys(path for path, _ in BLOCKS.values()))


def render(path: Path, text: str) -> str:
    """`text` (the content of `path`) with each block that lives in `path` replaced by what
    the code gives."""
    for name, (where, make) in BLOCKS.items():
        if where != path:
            continue
        begin, end = (f"<!-- {edge} generated: {name} -->" for edge in ("BEGIN", "END"))
        pattern = re.compile(f"{re.escape(begin)}\n.*?{re.escape(end)}", re.DOTALL)
        text, count = pattern.subn(lambda _: f"{begin}\n\n{make()}\n\n{end}", text)
        if count != 1:
            raise SystemExit(f"{path.relative_to(REPO)} must hold {begin} ... {end} once "
                             f"(found {count})")
    return text


def check() -> str:
    """A unified diff from each file with generated blocks to what the code gives; empty
    when they agree."""
    diffs = []
    for path in files():
        current, name = path.read_text(), str(path.relative_to(REPO))
        diffs += difflib.unified_diff(current.splitlines(True),
                                      render(path, current).splitlines(True),
                                      name, f"{name} (generated)")
    return "".join(diffs)


def main() -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="print a diff and exit 1 if a generated block differs from the code")
    if parser.parse_args().check:
        diff = check()
        print(diff, end="")
        return 1 if diff else 0
    for path in files():
        path.write_text(render(path, path.read_text()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
