"""Code a project plugs in by name: `name=module:function` references from config.toml, and the entry points an
installed package declares (group `otnflow.template_filters`, `otnflow.template_globals`). A reference that cannot
be loaded is an ExtensionError naming it and why; config turns it into one ConfigError line."""

from __future__ import annotations

import functools
import importlib
import sys
from importlib.metadata import EntryPoint, entry_points
from typing import Any

#: Entry point groups an installed package can register template filters and globals in (pyproject.toml:
#: `[project.entry-points."otnflow.template_filters"] money = "shop.templating:money"`).
FILTER_GROUP = "otnflow.template_filters"
GLOBAL_GROUP = "otnflow.template_globals"


class ExtensionError(ValueError):
    """A reference that is malformed or cannot be imported; the message names it."""


def installed_entry_points(group: str) -> tuple[EntryPoint, ...]:
    """The entry points installed packages declare in `group`. Looked up once per `sys.path`: the scan reads every
    installed package's metadata (~25 ms; each flow-test bot start paid it twice); a package installed while the
    process runs is seen by the next process."""
    return _scan_entry_points(group, tuple(sys.path))


@functools.lru_cache(maxsize=64)
def _scan_entry_points(group: str, path: tuple[str, ...]) -> tuple[EntryPoint, ...]:
    return tuple(entry_points(group=group))


def load_reference(reference: str) -> Any:
    """`package.module:attribute` (dots after the colon reach into objects) imported, or ExtensionError."""
    module_name, colon, attribute = reference.strip().partition(":")
    if not colon or not module_name or not attribute:
        raise ExtensionError(f"'{reference}' must be module:function (e.g. shop.templating:money)")
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ExtensionError(f"'{reference}': cannot import {module_name}: {err}") from None
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise ExtensionError(f"'{reference}': {module_name} has no {attribute}")
        found = getattr(found, part)
    return found


def parse_named(listing: str) -> dict[str, str]:
    """`money=shop.templating:money, today=shop.templating:today` as {name: reference}; ExtensionError when an
    item has no name."""
    named: dict[str, str] = {}
    for item in (part.strip() for part in listing.split(",")):
        if not item:
            continue
        name, equals, reference = item.partition("=")
        if not equals or not name.strip().isidentifier():
            raise ExtensionError(f"'{item}' must be name=module:function, the name a template uses")
        named[name.strip()] = reference.strip()
    return named


def load_named(listing: str, group: str, *, callables: bool = True) -> dict[str, Any]:
    """Every extension of `group`: the installed packages' entry points first, then the listing's (which win on a
    shared name). With `callables`, each must be callable (a filter must be)."""
    loaded: dict[str, Any] = {}
    for point in installed_entry_points(group):
        try:
            loaded[point.name] = point.load()
        except Exception as err:  # a broken package must say which entry point, not crash the start
            raise ExtensionError(f"entry point '{point.name}' ({point.value}) of {group}: {err}") from None
    for name, reference in parse_named(listing).items():
        loaded[name] = load_reference(reference)
    for name, value in loaded.items():
        if callables and not callable(value):
            raise ExtensionError(f"'{name}' is not a function: {type(value).__name__}")
    return loaded
