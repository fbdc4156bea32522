"""Property: whatever a flow file holds (random TOML, a real flow with values swapped for any TOML value, keys
dropped or added, lines shuffled, bytes that are not UTF-8), loading it returns the flow or diagnostics that name
the file and a line in it, and raises nothing. Bounds and the long profile: tests/fuzzing.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given

from engine.flow import FlowOptions, load_flow
from tests.fuzzing import FUZZ, assert_located, toml_files

ROOT = Path(__file__).resolve().parents[2]
OPTIONS = FlowOptions(templates_dir=ROOT / "templates")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("flows")


@pytest.mark.parametrize("example", ["wine_shop.toml", "sneaker_drop.toml"])
def test_any_flow_file_loads_or_gets_located_diagnostics(folder: Path, example: str) -> None:
    @FUZZ
    @given(contents=toml_files((ROOT / "flows" / example).read_text()))
    def load(contents: bytes) -> None:
        path = folder / example
        path.write_bytes(contents)
        flow, diagnostics = load_flow(path, OPTIONS)
        assert flow is not None or any(d.is_error for d in diagnostics)
        assert_located(diagnostics, str(path), contents)

    load()
