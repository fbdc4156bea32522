"""What the loader and checker report: one finding, with the file, line and key it is about."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

KeyPath = tuple[str | int, ...]


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, order=True)
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


class FlowError(Exception):
    """Raised when a flow cannot be used; carries every diagnostic of the file."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = sorted(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))
