"""Every checker rule, asserted exactly: each broken file says, next to the offending line, what must be reported.

`# expect-error: MESSAGE` (or `expect-warning`) on a line expects that diagnostic on that line;
`# expect-error@N: MESSAGE` expects it on line N. Templates the flow names carry theirs in jinja comments,
`{# expect-error: MESSAGE #}`: a template's own mistakes are reported at its file and line too. The set of
diagnostics must match exactly: nothing missing, nothing extra.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.flow import FlowOptions, load_flow

BROKEN = Path(__file__).parent / "broken"
TEMPLATES = BROKEN / "templates"
EXPECT = re.compile(r"#\s*expect-(error|warning)(?:@(\d+))?:\s*(.+?)\s*(?:#\})?$")
TEMPLATE = re.compile(r'template = "([^"]+)"')


def expected(path: Path) -> list[tuple[str, int, str, str]]:
    found = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        match = EXPECT.search(line)
        if match:
            severity, at, message = match.groups()
            found.append((str(path), int(at) if at else number, severity, message))
    return sorted(found)


def relative(path: Path) -> Path:
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


@pytest.mark.parametrize("path", sorted(BROKEN.glob("*.toml")), ids=lambda p: p.stem)
def test_broken_flow_reports_exact_file_line_and_message(path: Path) -> None:
    path = relative(path)
    flow, diagnostics = load_flow(path, FlowOptions(templates_dir=relative(TEMPLATES)))
    used = {relative(TEMPLATES) / name for name in TEMPLATE.findall(path.read_text())}
    want = sorted(expected(path) + [e for template in sorted(used) if template.exists() for e in expected(template)])
    assert want, f"{path} declares no expectations"
    got = sorted((d.file, d.line, d.severity.value, d.message) for d in diagnostics)
    assert got == want
    assert flow is None  # every broken file has at least one error, so it must not compile


def test_three_different_errors_are_all_reported_in_one_run() -> None:
    _, diagnostics = load_flow(BROKEN / "three_errors.toml", FlowOptions(templates_dir=TEMPLATES))
    errors = [d for d in diagnostics if d.is_error]
    assert len(errors) == 3
    assert {d.key for d in errors} == {
        "states.welcome.quick_replies[0].title",
        "states.welcome.quick_replies[1].goto",
        "states.next.on[0].regex",
    }


def test_diagnostic_prints_compiler_style() -> None:
    _, diagnostics = load_flow(BROKEN / "three_errors.toml", FlowOptions(templates_dir=TEMPLATES))
    first = str(sorted(diagnostics)[0])
    assert re.match(
        r"^.*three_errors\.toml:13: error: quick-reply title .* \[states\.welcome\.quick_replies\[0\]\.title\]$", first
    ), first


def test_every_check_of_the_issue_is_covered_by_a_broken_file() -> None:
    """A guard against a check silently losing its test: each kind of finding appears in some broken file."""
    text = "\n".join(p.read_text() for p in BROKEN.glob("*.toml"))
    for needle in [
        "TOML syntax error",
        "unknown key",
        "did you mean",
        "unknown state",
        "is unreachable",
        "is a dead end",
        "unknown topic",
        "is never requested",
        "not found in",
        "Expected an expression",
        "undefined variable",
        "Messenger allows at most 65",
        "quick replies; Messenger allows at most 13",
        "allows at most 20",
        "buttons; Messenger allows",
        "allows at most 640",
        "duplicate payload",
        "invalid regex",
        "invalid segment expression",
        "no default variant",
    ]:
        assert needle in text, needle
