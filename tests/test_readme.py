"""The README and docs/: their generated blocks agree with the code (scripts/readme_tables.py
makes them)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from dqn.options import groups

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "readme_tables.py"


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
