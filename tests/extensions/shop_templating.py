"""A shop's own template helpers, registered by name in the extension tests (config.toml or an entry point)."""

from __future__ import annotations

SHOP_NAME = "Cellar 42"


def money(cents: object) -> str:
    return f"{int(str(cents)) / 100:.2f} euros"


def shout(text: object) -> str:
    return f"{text}!".upper()


def greeting(name: str) -> str:
    return f"Bonjour {name}"
