"""What a simulated user sees of the bot's messages: the harness makes each message's view once and keeps it, so
the views must always be those of what the fake Graph API holds for the user, in order, also after a reset."""

from __future__ import annotations

from engine.testing.harness import PAGE_ID, ReplyView
from tests.conftest import example_bot


async def test_replies_are_the_fakes_messages_to_the_user_and_start_over_when_it_is_reset() -> None:
    async with example_bot() as bot:
        alice, bob = bot.user("alice", first_name="Alice"), bot.user("bob", first_name="Bob")
        greeting = await alice.says("hi")
        await bob.says("hi")
        chosen = await alice.taps("Red")
        sent = bot.fake.messages_to("alice")
        assert alice.replies == [ReplyView.of(m) for m in sent] == [*greeting, *chosen]
        assert [view.raw for view in alice.replies] == [m.body for m in sent]

        bot.fake.reset()
        assert alice.replies == [] and bob.replies == []
        assert await alice.says("hi") == alice.replies == [ReplyView.of(m) for m in bot.fake.messages_to("alice")]

        # reset, and as many new messages as the user had come in before anyone looks: still the new ones
        kept = len(alice.replies)
        bot.fake.reset()
        now = bot.clock.advance(seconds=1)
        event = {"sender": {"id": "alice"}, "recipient": {"id": PAGE_ID}, "timestamp": now}
        message = {"mid": bot.mid(), "text": "hi"}
        await bot.post(
            {"object": "page", "entry": [{"id": PAGE_ID, "time": now, "messaging": [{**event, "message": message}]}]}
        )
        assert len(bot.fake.messages_to("alice")) == kept
        views, sent = alice.replies, bot.fake.messages_to("alice")
        assert all(view.raw is m.body for view, m in zip(views, sent, strict=True))  # not the views kept from before
