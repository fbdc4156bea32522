"""Property: whatever a conversation test file holds (random TOML, a real one with values swapped for any TOML
value, keys dropped or added, lines shuffled, bytes that are not UTF-8), loading it returns the tests or raises
FlowError whose diagnostics name the file and a line in it; nothing else. Bounds and the long profile:
tests/fuzzing.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given

from engine.flow import FlowError
from engine.testing.conversations import load_conversations
from tests.fuzzing import FUZZ, assert_located, toml_files

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("conversations")


def example() -> str:
    """The sneaker drop's tests, with every [conversation] key set (absolute paths: the copy lives elsewhere)."""
    text = (ROOT / "flows" / "tests" / "test_sneaker_drop.toml").read_text()
    return text.replace(
        "[conversation]\n",
        f'[conversation]\nflows = "{ROOT / "flows"}"\ntemplates = "{ROOT / "templates"}"\n'
        f'config = "{ROOT / "config.toml"}"\nsettings = {{ policy_page_in_eu = false }}\n',
    )


def test_any_conversation_file_loads_or_gets_located_diagnostics(folder: Path) -> None:
    @FUZZ
    @given(contents=toml_files(example()))
    def load(contents: bytes) -> None:
        path = folder / "test_fuzzed.toml"
        path.write_bytes(contents)
        try:
            loaded = load_conversations(path)
        except FlowError as err:
            assert err.diagnostics
            assert_located(err.diagnostics, str(path), contents)
        else:
            assert loaded.path == path

    load()
