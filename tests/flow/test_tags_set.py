"""Tags a guard or a variant tests but no flow ever sets (issue 15: `when = "sweet_toth and not churned"`): a
warning at the expression's line with the closest tag that is set; tags set by another flow or by the
configuration (the EU tag) count as set."""

from __future__ import annotations

from pathlib import Path

from engine.config import load_settings
from engine.flow import FlowOptions, check_paths
from engine.flow.templates import USER_FIELDS
from engine.messenger.client import PROFILE_FIELDS

BAKERY = """[flow]
name = "bakery"
start = "welcome"

[topics.back]
title = "Tell me when it is back"

[[topics.back.variants]]
when = "sweet_toth and not churned"
say = "Warm and sweet: it is back."

[[topics.back.variants]]
when = "eu or loyal"
say = "It is back."

[[topics.back.variants]]
say = "It is back."

[states.welcome]
say = "Bread or sweet?"
otn = { topic = "back" }
quick_replies = [{ title = "Sweet", goto = "sweet", tag = ["sweet_tooth"] }]

[states.sweet]
say = "Croissants!"
end = true

[[states.sweet.on]]
keyword = "more"
when = "sweet_tooth"
goto = "welcome"
"""

LOYALTY = """[flow]
name = "loyalty"
start = "card"

[states.card]
say = "Welcome back."
tag = ["loyal"]
end = true
"""


SET = "eu, loyal, sweet_tooth"


def test_a_tested_tag_no_flow_sets_is_a_warning_with_the_closest_set_tag(tmp_path: Path) -> None:
    (tmp_path / "bakery.toml").write_text(BAKERY)
    (tmp_path / "loyalty.toml").write_text(LOYALTY)
    options = load_settings(None, {}).flow_options()
    flows, diagnostics = check_paths([tmp_path], options)
    assert sorted(flows) == ["bakery", "loyalty"]  # warnings only
    found = [(Path(d.file).name, d.line, d.severity.value, d.message) for d in diagnostics]
    assert found == [
        (
            "bakery.toml",
            9,
            "warning",
            "tag 'churned' is never set by any flow; tags that are set: eu, loyal, sweet_tooth",
        ),
        ("bakery.toml", 9, "warning", "tag 'sweet_toth' is never set by any flow; did you mean 'sweet_tooth'?"),
    ]  # 'loyal' is set by the other flow, 'eu' by the configuration (policy.eu_user_tag)


def test_alone_the_other_flows_tag_is_unset(tmp_path: Path) -> None:
    (tmp_path / "bakery.toml").write_text(BAKERY)
    _, diagnostics = check_paths([tmp_path / "bakery.toml"], FlowOptions())
    assert any("tag 'loyal' is never set" in d.message and d.line == 13 for d in diagnostics)
    assert any("tag 'eu' is never set" in d.message for d in diagnostics)  # no configuration given


def test_the_checker_knows_the_profile_fields_the_client_asks_for() -> None:
    assert set(PROFILE_FIELDS) | {"tags"} == USER_FIELDS
