"""The server against a failing Graph API (the fake, on loopback): retries, unreachable users, a dead page token,
timeouts, profile failures. The server never crashes and never loses a reply it can still send."""

from __future__ import annotations

import json

from tests.conftest import Server, body_of, message_event, wait_until

USER = "7100000000000001"


def hello(mid: str, ts: int, text: str = "hi", user: str = USER) -> dict:  # type: ignore[type-arg]
    return body_of(message_event(user, mid, ts, text=text))


async def test_transient_errors_and_rate_limits_are_retried(server: Server) -> None:
    server.fake.fail("5xx", times=2)
    server.fake.fail("613", times=1)
    await server.post(hello("m1", 1))
    await server.idle()
    assert len(server.fake.sent) == 1
    assert len(server.fake.rejected) == 3
    _, metrics = await server.get("/metrics")
    assert 'otnflow_sends_total{outcome="sent"} 1.0' in metrics


async def test_retries_are_bounded(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = await server_factory(graph_max_attempts="3")
    server.fake.fail("5xx", times=10)
    await server.post(hello("m1", 1))
    await server.idle()
    assert server.fake.sent == []
    assert len(server.fake.rejected) == 3
    assert (await server.counts())["outbox_failed"] == 1
    await server.post(hello("m2", 2, "menu"))  # the server keeps working afterwards
    await server.idle()
    assert len(server.fake.rejected) == 6


async def test_timeouts_are_retried(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = await server_factory(graph_timeout_seconds="0.2")
    server.fake.timeout_delay = 1.0
    server.fake.fail("timeout", times=1)
    await server.post(hello("m1", 1))
    await server.idle()
    assert len(server.fake.sent) == 1


async def test_unreachable_user_is_marked_and_never_messaged_again(server: Server) -> None:
    server.fake.fail("551", times=1, user_id=USER)
    await server.post(hello("m1", 1))
    await server.idle()
    assert server.fake.sent == []
    await server.post(hello("m2", 2, "menu"))
    await server.post(hello("x1", 3, "hi", user="7100000000000002"))
    await server.idle()
    assert server.fake.messages_to(USER) == []
    assert len(server.fake.messages_to("7100000000000002")) == 1  # others are unaffected
    counts = await server.counts()
    # the policy gate refuses anything for an unreachable user before it reaches the outbox queue
    assert counts["outbox_refused"] == 1 and counts["outbox_failed"] == 1


async def test_invalid_page_token_stops_sending_loudly_and_keeps_replies(server: Server, caplog) -> None:  # type: ignore[no-untyped-def]
    server.fake.fail("190", times=1)
    await server.post(hello("m1", 1))
    await server.idle()
    await server.post(hello("m2", 2, "menu"))
    await server.idle()
    assert server.fake.sent == []
    assert len(server.fake.rejected) == 1  # no hammering with a dead token
    status, text = await server.get("/healthz")
    assert status == 503
    assert json.loads(text)["status"] == "sending stopped"
    assert (await server.counts())["outbox_pending"] == 2  # nothing lost
    assert any("SENDING STOPPED" in r.getMessage() for r in caplog.records)


async def test_profile_is_fetched_once_and_its_failure_never_blocks_a_reply(server: Server) -> None:
    server.fake.profiles["7100000000000003"] = {"first_name": "Alice"}
    server.fake.profiles["7100000000000004"] = {"fail": True}
    for i in range(3):
        await server.post(hello(f"ok{i}", i + 1, "menu", user="7100000000000003"))
        await server.idle()
    assert server.fake.profile_requests == 1
    assert server.texts_to("7100000000000003")[0] == "Hi Alice! Welcome to the cellar. Red or white tonight?"
    await server.post(hello("down1", 10, "hi", user="7100000000000004"))
    await server.idle()
    assert server.texts_to("7100000000000004") == ["Hi there! Welcome to the cellar. Red or white tonight?"]


async def test_replies_of_one_user_go_out_in_order(server: Server) -> None:
    await server.post(hello("m1", 1, "hi"))
    await server.post(body_of(message_event(USER, "m2", 2, text="White", payload="WHITE")))
    await wait_until(lambda: len(server.fake.sent) >= 4, what="four replies")
    kinds = [
        m.body["message"].get("attachment", {}).get("payload", {}).get("template_type", "text")
        for m in server.fake.sent
    ]
    assert kinds == ["text", "text", "text", "one_time_notif_req"]


async def test_unreachable_mid_queue_skips_the_users_next_events_too(server: Server) -> None:
    server.fake.fail("blocked", times=1, user_id=USER)
    batch = body_of(
        message_event(USER, "q1", 1, text="hi"),
        message_event(USER, "q2", 2, text="menu"),
        message_event(USER, "q3", 3, text="menu"),
    )
    await server.post(batch)
    await server.idle()
    assert server.fake.messages_to(USER) == []
    counts = await server.counts()
    assert counts["inbox_handled"] == 3
    assert counts["outbox_failed"] == 1 and counts["outbox_refused"] == 2
