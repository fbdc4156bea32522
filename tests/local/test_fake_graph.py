"""The fake Graph API enforces what Meta enforces, with Meta's error codes."""

from __future__ import annotations

import aiohttp

from engine.local import FakeGraph
from tests.conftest import serve_on_loopback

WINDOW = 24 * 3_600_000


async def send(session: aiohttp.ClientSession, url: str, body: dict) -> tuple[int, dict]:  # type: ignore[type-arg]
    async with session.post(f"{url}/v21.0/me/messages", params={"access_token": "tok"}, json=body) as response:
        return response.status, await response.json()


def text_to(user: str, kind: str = "RESPONSE", tag: str | None = None) -> dict:  # type: ignore[type-arg]
    body = {"recipient": {"id": user}, "messaging_type": kind, "message": {"text": "hi"}}
    if tag:
        body["tag"] = tag
    return body


async def test_window_tags_tokens_and_rate_limit_are_enforced() -> None:
    now = [1_000_000_000]
    fake = FakeGraph(page_token="tok", clock=lambda: now[0], rate_limit_per_second=1000)
    served = await serve_on_loopback(fake.app())
    try:
        async with aiohttp.ClientSession() as session:
            fake.saw("u1", now[0])
            assert (await send(session, served.url, text_to("u1")))[0] == 200
            now[0] += WINDOW + 60_000
            status, body = await send(session, served.url, text_to("u1"))
            assert (status, body["error"]["code"], body["error"]["error_subcode"]) == (400, 10, 2018278)
            tagged = text_to("u1", "MESSAGE_TAG", "POST_PURCHASE_UPDATE")
            assert (await send(session, served.url, tagged))[0] == 200
            assert (await send(session, served.url, text_to("u1", "MESSAGE_TAG", "NOT_A_TAG")))[0] == 400

            token = fake.issue_token("u1", "otn:restock:s:x", now[0])
            with_token = {"recipient": {"one_time_notif_token": token}, "message": {"text": "back"}}
            assert (await send(session, served.url, with_token))[0] == 200
            status, body = await send(session, served.url, with_token)  # reused
            assert (status, body["error"]["code"]) == (400, 10) and "already used" in body["error"]["message"]
            unknown = {"recipient": {"one_time_notif_token": "made-up"}, "message": {"text": "x"}}
            assert "unknown" in (await send(session, served.url, unknown))[1]["error"]["message"]
            old = fake.issue_token("u1", "otn:restock:s:x", now[0])
            now[0] += 366 * 24 * 3_600_000
            expired = {"recipient": {"one_time_notif_token": old}, "message": {"text": "x"}}
            assert "expired" in (await send(session, served.url, expired))[1]["error"]["message"]
            assert fake.tokens_used() == [token]

            fake.rate_limit_per_second = 3
            fake.saw("u2", now[0])
            codes = [(await send(session, served.url, text_to("u2")))[1].get("error", {}).get("code") for _ in range(6)]
            assert 613 in codes  # past the rate limit within one second
    finally:
        await served.runner.cleanup()


async def test_shapes_and_limits_are_validated() -> None:
    fake = FakeGraph(page_token="tok")
    served = await serve_on_loopback(fake.app())
    try:
        async with aiohttp.ClientSession() as session:
            too_many = {
                "recipient": {"id": "u"},
                "messaging_type": "RESPONSE",
                "message": {
                    "text": "x",
                    "quick_replies": [{"content_type": "text", "title": f"q{i}", "payload": "P"} for i in range(14)],
                },
            }
            status, body = await send(session, served.url, too_many)
            assert (status, body["error"]["message"]) == (400, "(#100) quick_replies: at most 13")
            long_title = {
                "recipient": {"id": "u"},
                "messaging_type": "RESPONSE",
                "message": {
                    "attachment": {
                        "type": "template",
                        "payload": {"template_type": "one_time_notif_req", "title": "x" * 66, "payload": "p"},
                    }
                },
            }
            assert "title must be 1 to 65" in (await send(session, served.url, long_title))[1]["error"]["message"]
            async with session.post(
                f"{served.url}/v21.0/me/messages", params={"access_token": "other"}, json=text_to("u")
            ) as response:
                assert (await response.json())["error"]["code"] == 190
    finally:
        await served.runner.cleanup()


async def control(session: aiohttp.ClientSession, url: str, action: str, body: dict) -> tuple[int, dict]:  # type: ignore[type-arg]
    async with session.post(f"{url}/v21.0/me/{action}", params={"access_token": "tok"}, json=body) as response:
        return response.status, await response.json()


async def test_the_handover_protocol_moves_the_thread_and_records_each_call() -> None:
    fake = FakeGraph(page_token="tok", clock=lambda: 5)
    served = await serve_on_loopback(fake.app())
    inbox = 263902037430900
    try:
        async with aiohttp.ClientSession() as session:
            assert fake.channel("u1") == "messaging"
            passed = {"recipient": {"id": "u1"}, "target_app_id": inbox, "metadata": "wants a person"}
            assert await control(session, served.url, "pass_thread_control", passed) == (200, {"success": True})
            assert (fake.owner("u1"), fake.channel("u1"), fake.channel("u2")) == (str(inbox), "standby", "messaging")
            status, body = await control(session, served.url, "pass_thread_control", passed)  # not ours any more
            assert (status, body["error"]["code"]) == (400, 100)
            stranger = {"recipient": {"id": "u2"}, "target_app_id": 42}
            assert (await control(session, served.url, "pass_thread_control", stranger))[0] == 400
            assert (await control(session, served.url, "pass_thread_control", {"recipient": {}}))[0] == 400
            too_long = {"recipient": {"id": "u2"}, "target_app_id": inbox, "metadata": "x" * 1001}
            assert (await control(session, served.url, "pass_thread_control", too_long))[0] == 400
            assert await control(session, served.url, "take_thread_control", {"recipient": {"id": "u1"}}) == (
                200,
                {"success": True},
            )
            assert fake.channel("u1") == "messaging"
            async with session.post(
                f"{served.url}/v21.0/me/take_thread_control", params={"access_token": "bad"}, json={}
            ) as response:
                assert (await response.json())["error"]["code"] == 190
        assert [
            (c.action, c.user_id, c.target_app_id, c.metadata, c.owner_after, c.at_ms) for c in fake.thread_calls
        ] == [
            ("pass_thread_control", "u1", str(inbox), "wants a person", str(inbox), 5),
            ("take_thread_control", "u1", None, None, fake.app_id, 5),
        ]
        # what Meta sends the bot when an agent takes the thread, and when the agent marks it Done
        assert fake.take_by("u1", str(inbox)) == {
            "take_thread_control": {"previous_owner_app_id": fake.app_id, "new_owner_app_id": str(inbox)}
        }
        assert fake.channel("u1") == "standby"
        assert fake.give_back("u1") == {
            "pass_thread_control": {"new_owner_app_id": fake.app_id, "previous_owner_app_id": str(inbox)}
        }
        assert fake.channel("u1") == "messaging"
    finally:
        await served.runner.cleanup()


async def test_human_agent_is_refused_after_seven_days() -> None:
    now = [1_000_000_000]
    fake = FakeGraph(page_token="tok", clock=lambda: now[0])
    served = await serve_on_loopback(fake.app())
    try:
        async with aiohttp.ClientSession() as session:
            fake.saw("u1", now[0])
            now[0] += 7 * 24 * 3_600_000 - 1
            assert (await send(session, served.url, text_to("u1", "MESSAGE_TAG", "HUMAN_AGENT")))[0] == 200
            now[0] += 1
            assert (await send(session, served.url, text_to("u1", "MESSAGE_TAG", "HUMAN_AGENT")))[0] == 400
    finally:
        await served.runner.cleanup()


async def test_human_agent_counts_from_the_users_last_message_not_a_later_tap() -> None:
    """Meta's rule: HUMAN_AGENT up to 7 days after the user's last message; a postback tap since reopens the 24h
    window but does not move those 7 days."""
    day = 24 * 3_600_000
    now = [1_000_000_000]
    fake = FakeGraph(page_token="tok", clock=lambda: now[0])
    served = await serve_on_loopback(fake.app())
    try:
        async with aiohttp.ClientSession() as session:
            fake.saw("u1", now[0], message=True)
            now[0] += 6 * day
            fake.saw("u1", now[0], message=False)  # a button tapped (a postback) on day 6
            now[0] += 2 * day  # day 8: outside the window, 8 days after the message, 2 after the tap
            assert (await send(session, served.url, text_to("u1", "MESSAGE_TAG", "HUMAN_AGENT")))[0] == 400
    finally:
        await served.runner.cleanup()
