"""The registry of swappable parts, and the checks their settings share.

Every option of a config group (`conf/<group>/<name>.yaml`) is one class registered here
with `@option(group, name, Schema)`, next to the dataclass that types its settings. The
class implements its group's interface and the schema extends its group's settings
(`dqn.interfaces`; checked on registration). The config layer reads the schemas from here
(Hydra checks every key against them while composing); the training code builds parts
with `build(cfg, ...)`, which finds the class from the type of `cfg`. Adding an option is
therefore one YAML file and one class, with nothing else to register.

A schema may define `check(self)`, raising ConfigError for values outside their range.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

from dqn.checks import ConfigError
from dqn.interfaces import INTERFACES

T = TypeVar("T")


@dataclass(frozen=True)
class Option:
    group: str
    name: str
    schema: Optional[type]  # the dataclass of its settings (None: settings live elsewhere)
    cls: Callable[..., Any]


_OPTIONS: dict[str, dict[str, Option]] = {}
_BY_SCHEMA: dict[type, Option] = {}


def option(group: str, name: str, schema: Optional[type] = None) -> Callable[[T], T]:
    """Register the decorated class (or function) as option `name` of `group`, built from
    settings typed by `schema`."""

    def register(cls: T) -> T:
        entry = Option(group, name, schema, cls)  # type: ignore[arg-type]
        check_implements(entry)
        _OPTIONS.setdefault(group, {})[name] = entry
        if schema is not None:
            _BY_SCHEMA[schema] = entry
        return cls

    return register


def check_implements(entry: Option) -> None:
    """ConfigError, in one line, when an option does not keep its group's interface
    (`dqn.interfaces.INTERFACES`): a schema that does not extend the group's settings, a
    class that does not subclass its behaviour or leaves one of its methods
    unimplemented, a function not annotated to return it. Checked as the option is
    registered, so the mistake shows on import, before any run."""
    interface = INTERFACES.get(entry.group)
    if interface is None:
        return
    where = f"{entry.group}={entry.name} ({entry.cls.__module__}.{entry.cls.__qualname__})"
    settings = interface.settings.__name__
    if entry.schema is not None and not issubclass(entry.schema, interface.settings):
        raise ConfigError(f"{where}: its schema {entry.schema.__name__} must extend "
                          f"{settings} (dqn/interfaces.py)")
    behaviour = interface.behaviour_class()
    missing: list[str] = []
    if inspect.isclass(entry.cls):
        built, relation = entry.cls, "subclass"
        missing = sorted(getattr(built, "__abstractmethods__", ()))
    else:
        try:
            built = typing.get_type_hints(entry.cls).get("return")
        except NameError as error:
            raise ConfigError(f"{where}: its return annotation cannot be read ({error})") from None
        relation = "be annotated to return"
    if not (inspect.isclass(built) and issubclass(built, behaviour)):
        raise ConfigError(f"{where} must {relation} {behaviour.__name__} (the {entry.group} "
                          "group's interface, dqn/interfaces.py)")
    if missing:
        raise ConfigError(f"{where} does not implement {behaviour.__name__}."
                          f"{', '.join(missing)} (dqn/interfaces.py says what each receives "
                          "and returns)")
    problem = getattr(built, "check_class", None)
    problem = problem() if problem is not None else None
    if problem:
        raise ConfigError(f"{where}: {problem} (dqn/interfaces.py)")


# Modules that hold no options (entry points, the command-line layer): never imported by
# discover(), which must not start Hydra or a training run.
_NOT_OPTIONS = ("dqn.cli", "dqn.train", "dqn.evaluate", "dqn.__main__")


def discover() -> None:
    """Import every module of the package so that all options are registered. The package
    is walked from this file's folder, not `dqn.__path__`: a folder named `dqn` in the
    working directory (a clone of the repo run from its parent) makes Python import that
    folder as the package's namespace, with none of our modules in it."""
    for module in pkgutil.walk_packages([str(Path(__file__).parent)], "dqn."):
        if not module.name.startswith(_NOT_OPTIONS):
            importlib.import_module(module.name)


def options(group: str) -> dict[str, Option]:
    """The registered options of `group`, by name."""
    discover()
    return dict(_OPTIONS.get(group, {}))


def groups() -> dict[str, dict[str, Option]]:
    """Every group with schemas (the config groups), by name."""
    discover()
    return {group: dict(entries) for group, entries in _OPTIONS.items()
            if any(entry.schema is not None for entry in entries.values())}


def lookup(group: str, name: str) -> Option:
    """The option `name` of `group`; ConfigError listing the choices if there is none."""
    entries = options(group)
    if name not in entries:
        raise ConfigError(f"{group}={name!r} is not an option: must be one of "
                          f"{', '.join(sorted(entries))}")
    return entries[name]


def option_of(cfg: Any) -> Option:
    """The option whose schema `cfg` is an instance of."""
    entry = _BY_SCHEMA.get(type(cfg))
    if entry is None:
        discover()
        entry = _BY_SCHEMA.get(type(cfg))
    if entry is None:
        raise TypeError(f"no option is registered for settings of type {type(cfg).__name__}")
    return entry


def build(cfg: Any, *args: Any, **kwargs: Any) -> Any:
    """The part that the settings `cfg` describe: its option's class called with them."""
    return option_of(cfg).cls(cfg, *args, **kwargs)
