"""`otnflow init DIR`: a new bot project that runs and passes its own tests with nothing but otnflow installed.

The project's files live beside this module (`project/`, shipped as package data) and are copied as they are,
with two exceptions: `gitignore` becomes `.gitignore` (a dotfile would be dropped by some packaging tools), and
`flow.schema.json` is written from the flow format itself, so a flow's `#:schema ../flow.schema.json` line always
names the schema of the otnflow that made the project.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from ..flow.shapes import schema_text

PROJECT = files(__package__) / "project"
RENAMED = {"gitignore": ".gitignore"}
SCHEMA_FILE = "flow.schema.json"


class InitError(ValueError):
    """The target cannot take a new project: says why (files that would be overwritten)."""


def _walk(folder: Traversable, prefix: Path = Path()) -> list[tuple[Path, Traversable]]:
    found: list[tuple[Path, Traversable]] = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name == "__pycache__":
            continue
        relative = prefix / RENAMED.get(entry.name, entry.name)
        found.extend(_walk(entry, relative) if entry.is_dir() else [(relative, entry)])
    return found


def project_files() -> list[Path]:
    """What `create_project` writes, relative to the project folder."""
    return sorted([path for path, _ in _walk(PROJECT)] + [Path(SCHEMA_FILE)])


def create_project(target: Path) -> list[Path]:
    """Write a new project into `target` (created if absent); refuse to overwrite anything. Returns the files."""
    clashes = [path for path in project_files() if (target / path).exists()]
    if clashes:
        listed = ", ".join(map(str, clashes))
        raise InitError(f"{target} already has {listed}: choose an empty or new folder")
    written: list[Path] = []
    for relative, source in _walk(PROJECT):
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(source.read_bytes())
        written.append(destination)
    write_schema(target / SCHEMA_FILE)
    return [*written, target / SCHEMA_FILE]


def write_schema(path: Path) -> None:
    path.write_text(schema_text(), encoding="utf-8")
