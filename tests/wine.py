"""Steps through the example wine shop that several runtime tests start from."""

from __future__ import annotations

from engine.testing.harness import Bot, BotUser, ReplyView


async def white_lover_with_token(bot: Bot, name: str = "alice") -> BotUser:
    """A user who said hi, tapped White (the sold-out Sauvignon's restock request) and tapped Notify Me."""
    user = bot.user(name, first_name=name.title())
    await user.says("hi")
    await user.taps("White")
    await user.opts_in("restock")
    return user


def requests_to(bot: Bot, user_id: str) -> list[str]:
    """The Notify Me requests the fake Graph API accepted for the user, by topic."""
    return [view.otn_topic for m in bot.fake.messages_to(user_id) if (view := ReplyView.of(m)).otn_topic]
