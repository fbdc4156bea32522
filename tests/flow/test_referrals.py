"""Entry points: a referral (m.me link, ad, code, plugin, Discover) routes new and returning users alike, by `ref`
value or pattern and by source; the first and latest referral are kept among the user's variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.flow import Arrival, CompiledFlow, Snapshot, UserInput, load_flow

FLOW = """
[flow]
name = "entries"
start = "welcome"

[[referrals]]
ref = "vip-night"
goto = "vip"
set = { guest = "yes" }

[[referrals]]
ref_matches = "^summer-"
source = "link"
goto = "sale"

[[referrals]]
source = "code"
tag = ["in_store"]

[states.welcome]
say = "Hi{% if vars.ref %}, you came by {{ vars.ref_source }} '{{ vars.ref }}'{% endif %}"
quick_replies = [{ title = "Sale", goto = "sale" }]

[states.sale]
say = "Sale!"
quick_replies = [{ title = "Back", goto = "welcome" }]

[states.vip]
say = "Welcome, VIP (first came by {{ vars.first_ref_source }})"
end = true
"""


@pytest.fixture
def flow(tmp_path: Path) -> CompiledFlow:
    path = tmp_path / "entries.toml"
    path.write_text(FLOW)
    compiled, diagnostics = load_flow(path)
    assert compiled is not None and diagnostics == [], diagnostics
    return compiled


def arrive(
    flow: CompiledFlow, at: Snapshot, ref: str | None, source: str, payload: str | None = None
) -> tuple[Snapshot, list[str], str]:
    result = flow.step(at, UserInput(payload=payload, arrival=Arrival(ref, source)))
    return result.snapshot, [r.text for r in result.replies], result.matched


def test_the_first_matching_entry_routes_new_and_returning_users(flow: CompiledFlow) -> None:
    new, texts, matched = arrive(flow, Snapshot(), "summer-26", "SHORTLINK")
    assert (new.state, texts, matched) == ("sale", ["Sale!"], "referral")
    back, texts, _ = arrive(flow, Snapshot("welcome"), "summer-26", "SHORTLINK")
    assert (back.state, texts) == ("sale", ["Sale!"])


def test_source_and_pattern_must_both_hold(flow: CompiledFlow) -> None:
    at, texts, matched = arrive(flow, Snapshot("sale"), "summer-26", "ADS")  # the pattern holds, the source not
    assert (at.state, texts, matched) == ("sale", ["Sale!"], "resume")  # unrouted: the current state again
    at, texts, matched = arrive(flow, Snapshot(), "winter-26", "SHORTLINK")
    assert (at.state, texts, matched) == ("welcome", ["Hi, you came by link 'winter-26'"], "start")


def test_an_entry_without_goto_only_tags(flow: CompiledFlow) -> None:
    at, texts, _ = arrive(flow, Snapshot(), "table-4", "MESSENGER_CODE")
    assert at.state == "welcome" and "in_store" in at.tags and texts == ["Hi, you came by code 'table-4'"]


def test_first_referral_kept_latest_replaced(flow: CompiledFlow) -> None:
    first, _, _ = arrive(flow, Snapshot(), "summer-26", "SHORTLINK")
    result = flow.step(first, UserInput(arrival=Arrival("vip-night", "ADS", "6045")))
    assert result.snapshot.state == "vip" and [r.text for r in result.replies] == ["Welcome, VIP (first came by link)"]
    assert result.snapshot.variables == {
        "ref": "vip-night",
        "ref_source": "ad",
        "ref_ad_id": "6045",
        "first_ref": "summer-26",
        "first_ref_source": "link",
        "guest": "yes",
    }


def test_get_started_with_a_referral_routes_else_starts(flow: CompiledFlow) -> None:
    at, texts, _ = arrive(flow, Snapshot(), "vip-night", "SHORTLINK", payload="GET_STARTED")
    assert (at.state, texts) == ("vip", ["Welcome, VIP (first came by link)"])
    at, texts, matched = arrive(flow, Snapshot(), "unknown", "SHORTLINK", payload="GET_STARTED")
    assert (at.state, matched, texts) == ("welcome", "start", ["Hi, you came by link 'unknown'"])


def test_an_unknown_meta_source_is_kept_lower_cased(flow: CompiledFlow) -> None:
    at, _, _ = arrive(flow, Snapshot(), None, "SOME_NEW_SOURCE")
    assert at.variables == {"ref_source": "some_new_source", "first_ref_source": "some_new_source"}


@pytest.mark.parametrize("value", ["[]", "{ a = 1 }", "5"])
def test_a_source_of_the_wrong_type_is_a_located_error_not_an_exception(tmp_path: Path, value: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(FLOW.replace('source = "code"', f"source = {value}"))
    compiled, diagnostics = load_flow(path)
    assert compiled is None
    assert [(d.line, d.key) for d in diagnostics] == [(17, "referrals[2].source")], diagnostics
