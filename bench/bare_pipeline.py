"""The ceiling for any aiohttp-based engine here: verify the signature, parse, post one fixed reply per event to
the Graph API, nothing else (no store, no flow). `python bench/bare_pipeline.py PORT GRAPH_URL SECRET`."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import sys

import aiohttp
from aiohttp import web


def main() -> None:
    port, graph_url, secret = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode()
    tasks: set[asyncio.Task[None]] = set()

    async def reply(session: aiohttp.ClientSession, user: str) -> None:
        body = {"recipient": {"id": user}, "messaging_type": "RESPONSE", "message": {"text": "ok"}}
        async with session.post(f"{graph_url}/v21.0/me/messages", params={"access_token": "t"}, json=body) as r:
            await r.read()

    async def webhook(request: web.Request) -> web.Response:
        raw = await request.read()
        expected = "sha256=" + hmac.new(secret, raw, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("X-Hub-Signature-256", "")):
            return web.Response(status=403)
        session = request.app["session"]
        for entry in json.loads(raw)["entry"]:
            for event in entry.get("messaging", []):
                task = asyncio.create_task(reply(session, event["sender"]["id"]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        return web.Response(text="EVENT_RECEIVED")

    async def session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        app["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
        yield
        await app["session"].close()

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/webhook", webhook)
    app.router.add_get("/healthz", lambda _: web.json_response({"status": "ok"}))  # type: ignore[arg-type,return-value]
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
