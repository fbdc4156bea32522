"""What the loader and checker report: one finding, with the file, line and key it is about, and the Reporter
that collects a file's findings."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .locate import Locator

KeyPath = tuple[str | int, ...]


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, order=True, kw_only=True)
class Diagnostic:
    """One finding. Sorted by file, then line, so a report reads top to bottom."""

    file: str
    line: int
    message: str
    key: str = ""
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        where = f" [{self.key}]" if self.key else ""
        return f"{self.file}:{self.line}: {self.severity.value}: {self.message}{where}"

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR


def dotted(path: KeyPath) -> str:
    """('states', 'welcome', 'quick_replies', 0, 'title') -> 'states.welcome.quick_replies[0].title'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


class Reporter:
    """Collects diagnostics for one file, turning key paths into lines."""

    def __init__(self, file: str, locator: Locator | None) -> None:
        self.file = file
        self.locator = locator
        self.diagnostics: list[Diagnostic] = []

    def line(self, path: KeyPath) -> int:
        return self.locator.line(path) if self.locator else 1

    def error(self, path: KeyPath, message: str) -> None:
        self.diagnostics.append(Diagnostic(file=self.file, line=self.line(path), message=message, key=dotted(path)))

    def warning(self, path: KeyPath, message: str) -> None:
        self.diagnostics.append(
            Diagnostic(
                file=self.file, line=self.line(path), message=message, key=dotted(path), severity=Severity.WARNING
            )
        )

    def elsewhere(self, file: str, line: int, message: str) -> None:
        """An error in another file this one uses (a template), once however many times it is used."""
        found = Diagnostic(file=file, line=line, message=message)
        if found not in self.diagnostics:
            self.diagnostics.append(found)


class FlowError(Exception):
    """Raised when a flow cannot be used; carries every diagnostic of the file."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = sorted(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))
