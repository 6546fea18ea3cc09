"""The README's reference blocks, generated from the code: the config groups, the top-level
settings and the module map, each between `<!-- BEGIN generated: NAME -->` and
`<!-- END generated: NAME -->`.

    python scripts/readme_tables.py            # rewrite README.md in place
    python scripts/readme_tables.py --check    # exit 1 with a diff if README.md is stale
"""

from __future__ import annotations

import ast
import difflib
import inspect
import io
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
from dqn.config import GROUPS, Config  # noqa: E402
from dqn.options import Option, options  # noqa: E402

README = REPO / "README.md"
PRESETS = {  # the meaning of each preset group (a group of conf/ that has no schema)
    "experiment": "presets that set many groups at once (see below)",
    "rainbow": "Rainbow's components switched on (or off) on top of the preset (see below)",
    "sweep": "presets that make the command a sweep (see below)",
}
CONF_LINE = "one folder per config group, one YAML per option (see Config groups)"
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


def yaml_comments(path: Path) -> dict[str, str]:
    """The trailing comment of each `key: value  # comment` line of a YAML file, by dotted key."""
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


def group_table() -> str:
    """The config-group table: one row per group of conf/, schema groups first."""
    rows = ["| group | options | keys |", "| --- | --- | --- |"]
    rows += [f"| `{group}` | {options_cell(group)} | {keys_cell(group)} |" for group in GROUPS]
    for group in (g for g in HELP_GROUPS if g not in GROUPS):
        names = ", ".join(f"`{stem}`" for stem in yaml_options(group))
        rows.append(f"| `{group}` | {names} | {PRESETS.get(group, 'presets')} |")
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
    nested = [f for f in fields(Config) if is_dataclass(hints[f.name])]
    keys = [(f.name, f, Config) for f in fields(Config) if f.name not in GROUPS and f not in nested]
    keys += [(f"{part.name}.{f.name}", f, hints[part.name]) for part in nested
             for f in fields(hints[part.name])]
    rows = ["| key | default | meaning |", "| --- | --- | --- |"]
    for key, item, cls in keys:
        value = OmegaConf.select(conf, key, default=default(item))
        text = comment(cls, item.name) or said.get(key, "")
        rows.append(f"| `{key}` | {escape(show(value))} | {escape(text)} |")
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


BLOCKS: dict[str, Callable[[], str]] = {
    "config-groups": group_table,
    "top-level-settings": settings_table,
    "architecture": architecture,
}


def render(text: str) -> str:
    """`text` (the README) with every generated block replaced by what the code gives."""
    for name, make in BLOCKS.items():
        begin, end = (f"<!-- {edge} generated: {name} -->" for edge in ("BEGIN", "END"))
        pattern = re.compile(f"{re.escape(begin)}\n.*?{re.escape(end)}", re.DOTALL)
        text, count = pattern.subn(lambda _: f"{begin}\n\n{make()}\n\n{end}", text)
        if count != 1:
            raise SystemExit(f"README.md must hold {begin} ... {end} once (found {count})")
    return text


def check(readme: Path = README) -> str:
    """A unified diff from `readme` to what the code gives; empty when they agree."""
    current = readme.read_text()
    return "".join(difflib.unified_diff(current.splitlines(True),
                                        render(current).splitlines(True),
                                        "README.md", "README.md (generated)"))


def main() -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="print a diff and exit 1 if README.md differs from the code")
    if parser.parse_args().check:
        diff = check()
        print(diff, end="")
        return 1 if diff else 0
    README.write_text(render(README.read_text()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
