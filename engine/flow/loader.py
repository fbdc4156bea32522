"""Read one flow file into a typed FlowSpec, collecting every problem instead of stopping at the first."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import tomli

from .diagnostics import Diagnostic, KeyPath, Reporter
from .locate import Locator
from .segments import ALWAYS, Segment, SegmentError, parse_segment
from .shapes import check_shape
from .spec import (
    PAGE_INBOX,
    Action,
    Choice,
    Effects,
    EntryPoint,
    Fallback,
    FlowSpec,
    HumanHandover,
    Keyword,
    Message,
    OtnAsk,
    ResultRule,
    Rule,
    Source,
    State,
    Topic,
    Variant,
)
from .words import Match


def default_payload(title: str) -> str:
    """'Red wine' -> 'RED_WINE': readable in logs and stable across edits of other choices."""
    return re.sub(r"[^0-9A-Za-z]+", "_", title).strip("_").upper() or "CHOICE"


def parse_toml(text: str, report: Reporter) -> dict[str, Any] | None:
    try:
        return tomli.loads(text)
    except tomli.TOMLDecodeError as err:
        report.diagnostics.append(
            Diagnostic(file=report.file, line=err.lineno, message=f"TOML syntax error: {err.msg} (column {err.colno})")
        )
        return None


def read_source(path: Path, report: Reporter, what: str) -> str | None:
    """The file's text, or None with the reason reported at line 1 (unreadable, not UTF-8)."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        report.diagnostics.append(Diagnostic(file=report.file, line=1, message=f"cannot read {what}: {err}"))
        return None


def read_flow(path: Path, display: str | None = None) -> tuple[FlowSpec | None, Reporter]:
    """Parse and shape-check a flow file, and build its spec. The spec is None when the file cannot be used."""
    name = display or str(path)
    report = Reporter(name, None)
    text = read_source(path, report, "flow file")
    if text is None:
        return None, report
    return build_spec(text, name)


def build_spec(text: str, name: str) -> tuple[FlowSpec | None, Reporter]:
    report = Reporter(name, None)
    document = parse_toml(text, report)
    if document is None:
        return None, report
    report.locator = Locator(text)
    # Keep going where the shape allows, so one run lists as many problems as possible.
    shape_ok = check_shape(document, "file", (), report.error)
    unusable = not isinstance(document.get("flow"), dict) or not isinstance(document.get("states"), dict)
    if not shape_ok and unusable:
        return None, report
    return _Builder(report).flow(document, name), report


class _Builder:
    """Turns shape-checked TOML into spec objects; value-level problems (regex, segments) are reported here."""

    def __init__(self, report: Reporter) -> None:
        self.report = report

    def flow(self, doc: dict[str, Any], path: str) -> FlowSpec:
        meta = doc["flow"]
        states = {
            name: self.state(name, raw, ("states", name))
            for name, raw in doc["states"].items()
            if isinstance(raw, dict)
        }
        topics = {
            name: self.topic(name, raw, ("topics", name))
            for name, raw in _table(doc.get("topics")).items()
            if isinstance(raw, dict)
        }
        keywords = tuple(
            Keyword(
                tuple(w.strip().casefold() for w in _words(raw.get("words"))),
                str(raw.get("goto", "")),
                self.effects(raw, ("keywords", i)),
                _match(raw),
            )
            for i, raw in enumerate(_tables(doc.get("keywords")))
        )
        fallback = None
        if isinstance(doc.get("fallback"), dict):
            raw = doc["fallback"]
            message = self.message(raw, ("fallback",))
            if message is None:
                self.report.error(("fallback",), "the fallback must have 'say' or 'template'")
                message = Message(text="")
            fallback = Fallback(message, _opt_str(raw.get("goto")))
        referrals = tuple(self.entry(raw, ("referrals", i)) for i, raw in enumerate(_tables(doc.get("referrals"))))
        return FlowSpec(
            name=str(meta.get("name", "")),
            start=str(meta.get("start", "")),
            path=path,
            states=states,
            topics=topics,
            keywords=keywords,
            fallback=fallback,
            description=str(meta.get("description", "")),
            referrals=referrals,
        )

    def entry(self, raw: dict[str, Any], path: KeyPath) -> EntryPoint:
        source = raw.get("source")
        return EntryPoint(
            ref=_opt_str(raw.get("ref")),
            ref_matches=self.regex(raw, "ref_matches", path),
            source=Source(source) if isinstance(source, str) and source in set(Source) else None,  # else: reported
            goto=_opt_str(raw.get("goto")),
            effects=self.effects(raw),
        )

    def regex(self, raw: dict[str, Any], key: str, path: KeyPath) -> re.Pattern[str] | None:
        if not isinstance(raw.get(key), str):
            return None
        try:
            return re.compile(raw[key])
        except re.error as err:
            self.report.error((*path, key), f"invalid regex {raw[key]!r}: {err}")
            return None

    def state(self, name: str, raw: dict[str, Any], path: KeyPath) -> State:
        otn = None
        if isinstance(raw.get("otn"), dict):
            otn = OtnAsk(str(raw["otn"].get("topic", "")), _scalars(raw["otn"].get("vars")))
        return State(
            name=name,
            say=self.message(raw, path),
            quick_replies=self.choices(raw.get("quick_replies"), (*path, "quick_replies")),
            buttons=self.choices(raw.get("buttons"), (*path, "buttons")),
            rules=tuple(self.rule(r, (*path, "on", i)) for i, r in enumerate(_tables(raw.get("on")))),
            then=_opt_str(raw.get("then")),
            effects=self.effects(raw, path),
            otn=otn,
            end=raw.get("end") is True,
            message_tag=_opt_str(raw.get("message_tag")),
            promotional=raw["promotional"] if isinstance(raw.get("promotional"), bool) else None,
            action=self.action(raw["action"], (*path, "action")) if isinstance(raw.get("action"), dict) else None,
            handover=self.handover(raw["handover"], (*path, "handover"))
            if isinstance(raw.get("handover"), dict)
            else None,
        )

    def handover(self, raw: dict[str, Any], path: KeyPath) -> HumanHandover:
        to = str(raw.get("to", ""))
        if to != PAGE_INBOX and not (to.isascii() and to.isdigit()):
            self.report.error((*path, "to"), f'handover.to must be "{PAGE_INBOX}" or an app id (digits), got {to!r}')
        note = _opt_str(raw.get("note"))
        words = raw.get("take_back", ())
        return HumanHandover(
            to=to,
            resume=str(raw.get("resume", "")),
            note=Message(text=note) if note else None,
            take_back=(words,) if isinstance(words, str) else tuple(w for w in words if isinstance(w, str)),
        )

    def action(self, raw: dict[str, Any], path: KeyPath) -> Action:
        timeout = raw.get("timeout_seconds", 2.0)
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
            self.report.error((*path, "timeout_seconds"), f"timeout_seconds must be a positive number, got {timeout!r}")
            timeout = 2.0
        return Action(
            name=str(raw.get("name", "")),
            args=_scalars(raw.get("args")),
            timeout_seconds=float(timeout),
            save_as=_opt_str(raw.get("save_as")),
            on_result=tuple(
                ResultRule(
                    self.segment(r.get("when"), (*path, "on_result", i, "when")),
                    str(r.get("when", "")),
                    str(r.get("goto", "")),
                )
                for i, r in enumerate(_tables(raw.get("on_result")))
            ),
            on_success=_opt_str(raw.get("on_success")),
            on_failure=_opt_str(raw.get("on_failure")),
            on_timeout=_opt_str(raw.get("on_timeout")),
        )

    def message(self, raw: dict[str, Any], path: KeyPath) -> Message | None:
        say, template = _opt_str(raw.get("say")), _opt_str(raw.get("template"))
        if say is not None and template is not None:
            self.report.error((*path, "template"), "use either 'say' or 'template', not both")
        if say is None and template is None:
            return None
        return Message(text=say, template=None if say is not None else template)

    def choices(self, raw: Any, path: KeyPath) -> tuple[Choice, ...]:
        out: list[Choice] = []
        for raw_choice in _tables(raw):
            title = str(raw_choice.get("title", ""))
            url = _opt_str(raw_choice.get("url"))
            goto = _opt_str(raw_choice.get("goto"))
            index = len(out)
            if url is not None and goto is not None:
                self.report.error((*path, index, "url"), "a button has either 'url' or 'goto', not both")
            if url is None and goto is None and path[-1] == "buttons":
                self.report.error((*path, index), "a button needs 'goto' (a postback) or 'url' (a web page)")
            payload = _opt_str(raw_choice.get("payload")) or default_payload(title)
            out.append(Choice(title=title, payload=payload, goto=goto, effects=self.effects(raw_choice), url=url))
        return tuple(out)

    def rule(self, raw: dict[str, Any], path: KeyPath) -> Rule:
        regex = self.regex(raw, "regex", path)
        payload = _opt_str(raw.get("payload"))
        words = _words(raw.get("keyword"))
        if payload is None and not words and "regex" not in raw:
            self.report.error(path, "a rule needs 'payload', 'keyword' or 'regex' to say what input it matches")
        when_source = str(raw.get("when", ""))
        return Rule(
            goto=str(raw.get("goto", "")),
            payload=payload,
            keywords=tuple(w.casefold() for w in words),
            regex=regex,
            when=self.segment(raw.get("when"), (*path, "when")),
            when_source=when_source,
            capture=_opt_str(raw.get("capture")),
            effects=self.effects(raw),
            match=_match(raw),
        )

    def topic(self, name: str, raw: dict[str, Any], path: KeyPath) -> Topic:
        variants = []
        for i, raw_variant in enumerate(_tables(raw.get("variants"))):
            message = self.message(raw_variant, (*path, "variants", i))
            if message is None:
                self.report.error((*path, "variants", i), "a variant must have 'say' or 'template'")
                message = Message(text="")
            variants.append(
                Variant(
                    self.segment(raw_variant.get("when"), (*path, "variants", i, "when")),
                    str(raw_variant.get("when", "")),
                    message,
                )
            )
        return Topic(
            name=name,
            title=str(raw.get("title", "")),
            params=tuple(_strs(raw.get("params"))),
            variants=tuple(variants),
            quick_replies=self.choices(raw.get("quick_replies"), (*path, "quick_replies")),
            on_optin=_opt_str(raw.get("on_optin")),
            next=_opt_str(raw.get("next")),
        )

    def segment(self, source: Any, path: KeyPath) -> Segment:
        if not isinstance(source, str):
            return ALWAYS
        try:
            return parse_segment(source)
        except SegmentError as err:
            self.report.error(path, f"invalid segment expression {source!r}: {err}")
            return ALWAYS

    def effects(self, raw: dict[str, Any], path: KeyPath | None = None) -> Effects:
        if path is not None and raw.get("unsubscribe") is True and raw.get("subscribe") is True:
            self.report.error((*path, "subscribe"), "a step cannot both unsubscribe and subscribe the user")
        consent = None
        if raw.get("unsubscribe") is True:
            consent = False
        elif raw.get("subscribe") is True:
            consent = True
        return Effects(tuple(_strs(raw.get("tag"))), tuple(_strs(raw.get("untag"))), _scalars(raw.get("set")), consent)


def _table(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _tables(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _strs(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _words(value: Any) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(_strs(value))


def _match(raw: dict[str, Any]) -> Match:
    """The shape check has reported any other value."""
    return Match.WORD if raw.get("match") == Match.WORD.value else Match.MESSAGE


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _scalars(value: Any) -> tuple[tuple[str, Any], ...]:
    return tuple(value.items()) if isinstance(value, dict) else ()
