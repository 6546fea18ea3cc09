"""Hydra's side of the config: the schemas in its ConfigStore and the resolvers conf/ uses."""

from __future__ import annotations

import hashlib
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from dqn.cli.runs import claim_fresh_dir
from dqn.config import GROUPS, Config
from dqn.options import options

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
HELP_GROUPS = (*GROUPS, "experiment", "rainbow", "sweep")
_typed = False  # whether register_schemas() has run in this process


def sqlite_url(path: str) -> str:
    """`sqlite:///path`, creating the folder the database file goes in (for Optuna)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def short_dirname(name: str, limit: int = 120) -> str:
    """`name` if it fits in `limit` characters, else its start and a hash of the whole, so
    a sweep job's folder named after many overrides stays a valid (<= 255 byte) name."""
    name = name.replace("/", "_")
    if len(name) <= limit:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{name[:limit - 9]}-{digest}"


def run_dir_for(resume: str | None, fresh: str) -> str:
    """Hydra's run directory: the run to continue (resume=DIR), else a fresh folder that
    this run claims (`fresh`, or `fresh_2`... when runs start in the same second). A resume=
    that names no directory never gets this far (the command line is checked first)."""
    return resume if resume and Path(resume).is_dir() else claim_fresh_dir(fresh)


def register_schemas() -> None:
    """Store every option's schema in Hydra's ConfigStore, as `schema/<group>/<option>`
    (which each conf/<group>/*.yaml extends), and our resolvers (idempotent)."""
    global _typed
    _register_resolvers()
    store = ConfigStore.instance()
    store.store(name="base_config", node=Config)
    for group in GROUPS:
        for name, entry in options(group).items():
            store.store(group=f"schema/{group}", name=name, node=entry.schema, package=group)
    _typed = True


def register_placeholders() -> None:
    """Untyped stand-ins for the option schemas, read off conf/ without importing the
    options (and torch): enough to compose and print a config, nothing is checked. A
    no-op once the real schemas are registered."""
    _register_resolvers()
    if _typed:
        return
    store = ConfigStore.instance()
    base = OmegaConf.to_container(OmegaConf.structured(Config))  # untyped, groups open
    store.store(name="base_config", node={**base, **{group: {} for group in GROUPS}})
    for group in GROUPS:
        for path in (CONF_DIR / group).glob("*.yaml"):
            for default in OmegaConf.load(path).get("defaults", []):
                if str(default).startswith(f"/schema/{group}/"):
                    name = str(default).removeprefix(f"/schema/{group}/").split("@")[0]
                    store.store(group=f"schema/{group}", name=name, node={}, package=group)


def _register_resolvers() -> None:
    OmegaConf.register_new_resolver("dqn_sqlite", sqlite_url, replace=True)
    OmegaConf.register_new_resolver("dqn_dirname", short_dirname, replace=True)
    # cached: every read of a run's (or sweep's) folder in a config gives the one claimed
    OmegaConf.register_new_resolver("dqn_run_dir", run_dir_for, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("dqn_fresh_dir", claim_fresh_dir, replace=True,
                                    use_cache=True)
    OmegaConf.register_new_resolver(
        "dqn_hydra_subdir", lambda resume: ".hydra-resume" if resume else ".hydra",
        replace=True)
