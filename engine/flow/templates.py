"""The jinja2 side of flows: one sandboxed environment per templates folder, and static checks of templates.

User text only ever enters a template as data (the `text` variable); it is never compiled.
"""

from __future__ import annotations

from pathlib import Path

from jinja2 import FileSystemLoader, StrictUndefined, TemplateNotFound, TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment

#: Names every conversation template may use.
CONVERSATION_NAMES = frozenset({"user", "vars", "text"})
#: Names every notification template may use, besides the topic's params.
NOTIFICATION_NAMES = frozenset({"user", "vars"})


def make_environment(templates_dir: Path | None) -> SandboxedEnvironment:
    """Messenger text is not HTML: no autoescape. Unknown names are caught by the checker, so at run time a
    missing profile field renders empty rather than failing a reply."""
    loader = FileSystemLoader(str(templates_dir)) if templates_dir else None
    return SandboxedEnvironment(loader=loader, autoescape=False, keep_trailing_newline=False)


def strict_environment(templates_dir: Path | None) -> SandboxedEnvironment:
    """For check-time rendering of static titles: an unknown name is an error there."""
    loader = FileSystemLoader(str(templates_dir)) if templates_dir else None
    return SandboxedEnvironment(loader=loader, autoescape=False, undefined=StrictUndefined)


class TemplateProblem(Exception):
    """A template that is missing or does not parse; `line` is the template's own line when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def template_source(env: SandboxedEnvironment, name: str) -> str:
    if env.loader is None:
        raise TemplateProblem(f"template file '{name}' cannot be used: no templates folder is configured")
    try:
        source, _, _ = env.loader.get_source(env, name)
    except TemplateNotFound:
        folder = getattr(env.loader, "searchpath", ["?"])[0]
        raise TemplateProblem(f"template file '{name}' not found in {folder}") from None
    return source


def undeclared_names(env: SandboxedEnvironment, source: str, name: str | None = None) -> set[str]:
    """Top-level names a template reads; raises TemplateProblem on a syntax error (with its line)."""
    try:
        ast = env.parse(source, name=name)
    except TemplateSyntaxError as err:
        raise TemplateProblem(err.message or "syntax error", err.lineno) from None
    return set(meta.find_undeclared_variables(ast))
