"""The jinja2 side of flows: one sandboxed environment per templates folder, and static checks of templates.

User text only ever enters a template as data (the `text` variable); it is never compiled.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, TemplateNotFound, TemplateSyntaxError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment

#: Names every conversation template may use.
CONVERSATION_NAMES = frozenset({"user", "vars", "text"})
#: Names every notification template may use, besides the topic's params.
NOTIFICATION_NAMES = frozenset({"user", "vars"})
#: What `user` holds: the User Profile fields the Graph client asks for (messenger/client.py, PROFILE_FIELDS; a
#: test keeps the two equal) and the user's tags. A missing one renders empty, so a typo is caught here.
USER_FIELDS = frozenset({"first_name", "last_name", "profile_pic", "tags"})
_DICT_METHODS = frozenset(name for name in dir(dict) if not name.startswith("_"))


class FlowEnvironment(SandboxedEnvironment):
    """The sandbox, with each template's globals as one plain dict. jinja2 copies a template's globals into every
    render's context: from its default `ChainMap` that copy runs in Python (~5 µs a render, most of a short
    reply's cost), from a dict in C. The dict is taken when the template loads; the globals are all set before
    (`make_environment`), as jinja2 asks ("avoid modifying any globals after a template is loaded")."""

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        return {**self.globals, **(d or {})}


def make_environment(
    templates_dir: Path | None,
    filters: Mapping[str, Callable[..., Any]] | None = None,
    globals_: Mapping[str, Any] | None = None,
) -> SandboxedEnvironment:
    """Messenger text is not HTML: no autoescape. Unknown names are caught by the checker, so at run time a
    missing profile field renders empty rather than failing a reply. `filters` and `globals_` are the project's
    own (config.toml `templates.*`, packages' entry points): the checker and the runtime use this same one."""
    loader = FileSystemLoader(str(templates_dir)) if templates_dir else None
    env = FlowEnvironment(loader=loader, autoescape=False, keep_trailing_newline=False)
    env.filters.update(filters or {})
    env.globals.update(globals_ or {})
    return env


class TemplateProblem(Exception):
    """A template that is missing or does not parse; `line` is the template's own line when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def template_source(env: SandboxedEnvironment, name: str) -> tuple[str, str]:
    """The template's text and its file's path (for diagnostics an editor can jump to)."""
    if env.loader is None:
        raise TemplateProblem(f"template file '{name}' cannot be used: no templates folder is configured")
    try:
        source, filename, _ = env.loader.get_source(env, name)
    except TemplateNotFound:
        folder = getattr(env.loader, "searchpath", ["?"])[0]
        raise TemplateProblem(f"template file '{name}' not found in {folder}") from None
    return source, _shown(filename or name)


def _shown(file: str) -> str:
    """A path as an author types it: relative when under the working folder."""
    path = Path(file)
    return str(path.relative_to(Path.cwd())) if path.is_absolute() and path.is_relative_to(Path.cwd()) else file


@dataclass(frozen=True)
class TemplateReads:
    """What a template reads, each with the first line (of the template) that reads it."""

    names: dict[str, int]  # top-level names it does not set itself
    user_fields: dict[str, int]  # attributes of `user` (user.first_name, user["tags"])


def template_reads(env: SandboxedEnvironment, source: str, name: str | None = None) -> TemplateReads:
    """Parse a template and list what it reads; TemplateProblem on a syntax error, an unknown filter or an unknown
    test (with its line)."""
    try:
        ast = env.parse(source, name=name)
        undeclared = meta.find_undeclared_variables(ast)  # compiles: an unknown filter or test is found here
    except TemplateSyntaxError as err:  # TemplateAssertionError (unknown filter or test) is one too
        raise TemplateProblem(err.message or "syntax error", err.lineno) from None
    for test in ast.find_all(nodes.Test):  # jinja2 finds an unknown test only when it runs: too late
        if test.name not in env.tests:
            raise TemplateProblem(f"No test named {test.name!r}.", test.lineno)
    names: dict[str, int] = {}
    for node in ast.find_all(nodes.Name):
        if node.name in undeclared and node.name not in env.globals:  # globals (range, the project's) are defined
            names.setdefault(node.name, node.lineno)
    fields = _attributes(ast, "user") if "user" in undeclared else {}
    return TemplateReads(names, fields)


def attribute_reads(env: SandboxedEnvironment, source: str, base: str) -> dict[str, int]:
    """The attributes of the name `base` a template reads (`args.sku`, `env["KEY"]`), each with its first line;
    TemplateProblem on a syntax error."""
    try:
        ast = env.parse(source)
    except TemplateSyntaxError as err:
        raise TemplateProblem(err.message or "syntax error", err.lineno) from None
    return _attributes(ast, base)


def _attributes(ast: nodes.Template, base: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for access in ast.find_all((nodes.Getattr, nodes.Getitem)):
        field = _field_of(access, base)
        if field is not None and field not in _DICT_METHODS:
            found.setdefault(field, access.lineno)
    return found


def _field_of(access: nodes.Node, base: str) -> str | None:
    """'first_name' for `user.first_name` or `user["first_name"]` (base "user"); None for anything else
    (user[expr] too)."""
    if isinstance(access, nodes.Getattr) and isinstance(access.node, nodes.Name) and access.node.name == base:
        return str(access.attr)
    if (
        isinstance(access, nodes.Getitem)
        and isinstance(access.node, nodes.Name)
        and access.node.name == base
        and isinstance(access.arg, nodes.Const)
        and isinstance(access.arg.value, str)
    ):
        return access.arg.value
    return None


def undeclared_names(env: SandboxedEnvironment, source: str, name: str | None = None) -> set[str]:
    """Top-level names a template reads; raises TemplateProblem on a syntax error (with its line)."""
    return set(template_reads(env, source, name).names)
