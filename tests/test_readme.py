"""The README and docs/: their generated blocks agree with the code (scripts/readme_tables.py
makes them), and their relative links lead to a file and heading that exist."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from dqn.options import groups

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "readme_tables.py"
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def load_script() -> ModuleType:
    """scripts/readme_tables.py as a module (scripts/ is no package)."""
    spec = importlib.util.spec_from_file_location("readme_tables", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_matches_the_code() -> None:
    diff = load_script().check()
    assert not diff, ("generated blocks are stale; run "
                      f"`python scripts/readme_tables.py` to update them:\n{diff}")


@pytest.mark.parametrize("table", ["group_table", "options_table"])
def test_group_table_names_every_registered_option(table: str) -> None:
    table = getattr(load_script(), table)()
    for group, entries in groups().items():
        row = re.search(rf"^\| `{group}` \|(.*)$", table, re.MULTILINE)
        assert row is not None, f"no row for the group {group}"
        for name in entries:
            assert re.search(rf"\b{re.escape(name)}\b", row.group(1)), \
                f"{group}={name} is registered but missing from its row"


def prose(path: Path) -> list[str]:
    """The lines of a markdown file outside code blocks (indented or fenced), inline code
    removed."""
    lines, fenced = [], False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and not line.startswith("    "):
            lines.append(re.sub(r"`[^`]*`", "", line))
    return lines


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of a markdown file."""
    return {re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            for line in prose(path) if line.startswith("#")}


def test_relative_links_lead_to_a_file_and_heading() -> None:
    broken = []
    for page in PAGES:
        for line in prose(page):
            for target in LINK.findall(line):
                if re.match(r"\w+:", target):
                    continue
                file, _, anchor = target.partition("#")
                path = (page.parent / file).resolve() if file else page
                if not path.is_file() or (anchor and anchor not in anchors(path)):
                    broken.append(f"{page.relative_to(REPO)}: {target}")
    assert not broken, f"links to a missing file or heading: {broken}"
