"""The playground shows who owns the thread (issue 14 §2): the bot, or a person in the Page Inbox since a given time,
with the state the flow resumes at; and the bot again once the user takes it back."""

from __future__ import annotations

from pathlib import Path

from engine.flow.spec import PAGE_INBOX_APP_ID
from tests.conftest import served_playground


async def test_the_playground_shows_who_owns_the_thread(tmp_path: Path) -> None:
    async with served_playground(tmp_path) as playground:
        state = await playground.done("say", user="ann", text="hi")
        assert state["thread"] == {"owner": "bot", "app_id": "", "since_ms": 0, "resume": ""}

        state = await playground.done("say", user="ann", text="talk to a person")
        thread = state["thread"]
        assert thread["owner"] == "page_inbox" and thread["app_id"] == PAGE_INBOX_APP_ID, thread
        assert thread["since_ms"] > 0 and thread["resume"] == "welcome_back"

        state = await playground.done("say", user="ann", text="bot")  # the flow's take_back word
        assert state["thread"]["owner"] == "bot" and state["state"] == "welcome_back"
