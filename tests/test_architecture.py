"""docs/architecture.md matches the code: every path it names exists, every part and module of engine/ has its row
and is named in it; and the "imports only" contract type behind `lint-imports` breaks when it should."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
ENGINE = ROOT / "engine"
#: Backticked words in a part's row that are not modules of it: a library, an aiohttp hook, the command's name.
NOT_MODULES = {"transitions", "cleanup_ctx", "otnflow"}


def _parts_rows() -> dict[str, str]:
    """The Parts table: each part (`flow/`, `config.py`) to its "its one job" cell."""
    text = DOC.read_text()
    table = text[text.index("## Parts") : text.index("Dependency direction")]
    rows: dict[str, str] = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if len(cells) == 3 and cells[0].startswith("`"):
            for part in re.findall(r"`([^`]+)`", cells[0]):
                rows[part] = cells[1]
    return rows


def test_every_path_the_architecture_names_exists() -> None:
    text = DOC.read_text()
    found = re.findall(r"(?<![\w./-])((?:\.\./)?[\w.-]+(?:/[\w.*-]+)+(?:\.(?:py|md|json|toml|html)|/))(?![\w.-])", text)
    named = {p for p in found if not p.startswith("../")}  # ../: outside the repository
    assert len(named) > 40  # the pattern still finds the paths
    missing = [path for path in sorted(named) if not any((base / path).exists() for base in (ROOT, ENGINE))]
    assert missing == [], f"docs/architecture.md names paths that do not exist: {missing}"


def test_every_part_and_module_of_the_engine_has_its_row() -> None:
    rows = _parts_rows()
    parts = sorted(
        p.name + ("/" if p.is_dir() else "")
        for p in ENGINE.iterdir()
        if not p.name.startswith("__") and (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))
    )
    assert [p for p in parts if p not in rows] == [], "give each part of engine/ a row in the Parts table"
    assert [p for p in rows if p not in parts] == [], "the Parts table has rows for parts that do not exist"
    unnamed = [
        f"{part}{module.stem}"
        for part in parts
        if part.endswith("/")
        for module in sorted((ENGINE / part).iterdir())
        if (module.suffix == ".py" or (module / "__init__.py").exists() or module.name == "project")
        and not module.name.startswith("__")
        and f"`{module.stem}`" not in rows[part]
        and f"`{module.stem}/`" not in rows[part]
    ]
    assert unnamed == [], "name each module in its part's row, in backticks, with its job"


def test_the_backticked_names_of_a_part_are_its_modules_or_its_names() -> None:
    strays = []
    for part, job in _parts_rows().items():
        if not part.endswith("/"):
            continue
        code = "\n".join(p.read_text() for p in (ENGINE / part).rglob("*.py"))
        for word in re.findall(r"`([a-z_]+)/?`", job):
            module = ENGINE / part / word
            defined = re.search(rf"^\s*(def|class|async def) {word}\b|^{word} = |[\"']{word}[\"']", code, re.M)
            known = module.with_suffix(".py").exists() or module.is_dir() or f"{word}/" in _parts_rows()
            if not (known or defined or word in NOT_MODULES):
                strays.append(f"{part}: {word}")
    assert strays == [], "the Parts table names modules that do not exist"


def test_the_only_imports_contract_breaks_on_an_unlisted_import(tmp_path: Path) -> None:
    package = tmp_path / "shop"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "pure.py").write_text("import json\nimport dataclasses\n")
    (package / "talks.py").write_text("import dataclasses\nimport socket\n")
    (tmp_path / ".importlinter").write_text(
        "[importlinter]\nroot_package = shop\ninclude_external_packages = True\n"
        "contract_types =\n    only_imports: tests.import_contracts.OnlyImportsContract\n\n"
        "[importlinter:contract:pure]\nname = shop is pure\ntype = only_imports\nsource_modules = shop\n"
        "standard_library = false\nallowed_modules =\n    json\n    dataclasses\n"
    )
    lint = Path(sys.executable).parent / "lint-imports"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([str(lint)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "shop.talks -> socket (l.2)" in done.stdout
    assert "shop.pure" not in done.stdout.split("BROKEN")[-1]

    (package / "talks.py").write_text("import dataclasses\n")
    done = subprocess.run([str(lint)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
