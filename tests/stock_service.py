"""A small stock service for the wine shop's HTTP action (config.toml `[actions.check_stock]`), as a shop's own
system would answer: `GET /stock/{sku}` with a bearer key gives `{"sku": ..., "available": n}`. Tests start it on
loopback and can make it fail (`failures` 503 answers first) or slow (`delay_seconds`); it keeps every request it
got (headers too), so a test can see what otnflow sent.

    python -m tests.stock_service 8090   # by hand, next to `otnflow serve --local` (STOCK_API_URL=http://127.0.0.1:8090)
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

KEY = "stock-key-for-tests"
STOCK = {"SAUV24": 0, "RIOJA19": 12, "ALBA23": 3}


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class StockService:
    stock: dict[str, int] = field(default_factory=lambda: dict(STOCK))
    key: str = KEY
    failures: int = 0  # answer 503 to this many requests first
    delay_seconds: float = 0.0  # wait this long before each answer
    set_cookie: str = ""  # a Set-Cookie header on every answer, as a web shop's session would
    received: list[Received] = field(default_factory=list)
    url: str = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/stock/{sku}", self.count)
        return app

    async def count(self, request: web.Request) -> web.Response:
        self.received.append(Received(request.method, request.path, dict(request.headers)))
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        if request.headers.get("Authorization") != f"Bearer {self.key}":
            return web.json_response({"error": "bad key"}, status=401)
        if self.failures > 0:
            self.failures -= 1
            return web.json_response({"error": "try again"}, status=503)
        sku = request.match_info["sku"]
        if sku not in self.stock:
            return web.json_response({"error": f"no such wine {sku}"}, status=404)
        answer = web.json_response({"sku": sku, "available": self.stock[sku]})
        if self.set_cookie:
            answer.headers["Set-Cookie"] = self.set_cookie
        return answer

    @classmethod
    @asynccontextmanager
    async def running(cls, **options: Any) -> AsyncIterator[StockService]:
        """The service on 127.0.0.1 at a free port (`url`), stopped on the way out."""
        service = cls(**options)
        runner = web.AppRunner(service.app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        service.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        try:
            yield service
        finally:
            await runner.cleanup()


if __name__ == "__main__":  # pragma: no cover - by hand only
    web.run_app(StockService().app(), host="127.0.0.1", port=int(sys.argv[1]) if len(sys.argv) > 1 else 8090)
