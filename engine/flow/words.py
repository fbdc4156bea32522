"""How typed text matches keywords: the whole message (the default), or words anywhere in it.

match = "message"   "Menu" matches "menu" (case-insensitive; the whole message, nothing else)
match = "word"      "croissant" matches "Croissants? no: Croissant please!" only as a whole word; case, accents
                    and punctuation are ignored ("Crème brûlée" matches "creme brulee!"); a keyword of
                    several words matches them side by side ("start over" in "can we start over?")
"""

from __future__ import annotations

import re
import unicodedata
from enum import StrEnum

_WORD = re.compile(r"\w+")


class Match(StrEnum):
    MESSAGE = "message"
    WORD = "word"


def normalised_words(text: str) -> tuple[str, ...]:
    """'Crème Brûlée, please!' -> ('creme', 'brulee', 'please'): case folded, accents and punctuation dropped."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    bare = "".join(char for char in decomposed if not unicodedata.combining(char))
    return tuple(_WORD.findall(bare))


def contains_phrase(words: tuple[str, ...], phrase: tuple[str, ...]) -> bool:
    """Whether `phrase` occurs in `words` as consecutive whole words."""
    size = len(phrase)
    return size > 0 and any(words[i : i + size] == phrase for i in range(len(words) - size + 1))


class Typed:
    """One typed message, normalised at most once however many keywords look at it."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.folded = text.strip().casefold()
        self._words: tuple[str, ...] | None = None

    @property
    def words(self) -> tuple[str, ...]:
        if self._words is None:
            self._words = normalised_words(self.text)
        return self._words

    def matches(self, keywords: tuple[str, ...], phrases: tuple[tuple[str, ...], ...], match: Match) -> bool:
        """`keywords` casefolded as written (for `message`), `phrases` their normalised words (for `word`)."""
        if match is Match.WORD:
            return any(contains_phrase(self.words, phrase) for phrase in phrases)
        return self.folded in keywords
