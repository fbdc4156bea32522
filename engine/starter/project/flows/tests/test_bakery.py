"""A Python test with otnflow's `bot` fixture: the real engine, a fake Graph API, a clock that moves only when the
test moves it. Mark a test `@pytest.mark.otnflow(flow="...")` to start new users in another flow."""

from __future__ import annotations

from engine.testing.harness import Bot


async def test_bread_lovers_are_tagged_and_never_asked_about_pastries(bot: Bot) -> None:
    ann = bot.user("ann", first_name="Ann")
    await ann.says("hi")
    await ann.taps("Bread")
    assert ann.tags == {"bread_lover"}
    assert ann.state == "bread"
    assert not any(reply.is_otn_request for reply in ann.replies)
