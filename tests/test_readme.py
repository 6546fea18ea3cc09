"""README.md's reference blocks agree with the code (scripts/readme_tables.py makes them)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

from dqn.options import groups

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "readme_tables.py"


def load_script() -> ModuleType:
    """scripts/readme_tables.py as a module (scripts/ is no package)."""
    spec = importlib.util.spec_from_file_location("readme_tables", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_matches_the_code() -> None:
    diff = load_script().check()
    assert not diff, ("README.md's generated blocks are stale; run "
                      f"`python scripts/readme_tables.py` to update them:\n{diff}")


def test_group_table_names_every_registered_option() -> None:
    table = load_script().group_table()
    for group, entries in groups().items():
        row = re.search(rf"^\| `{group}` \|(.*)$", table, re.MULTILINE)
        assert row is not None, f"no row for the group {group}"
        for name in entries:
            assert re.search(rf"\b{re.escape(name)}\b", row.group(1)), \
                f"{group}={name} is registered but missing from its row"
