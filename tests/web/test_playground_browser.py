"""The playground in real headless Chromium (Debian's `chromium`, driven by Playwright): chat through the wine shop,
tap a quick reply, opt in through Notify Me, move the clock past 24 hours, send the notification, and check the
thread, the tags panel and the window indicator. A screenshot is saved under the test's temporary folder.
A brand-new user on a phone-sized screen; a notification sent through the API shows at once; a broken flow edit
shows a banner until it is fixed. And another web site open in the same browser cannot drive it.

Every test fails on any error the page throws or logs (`chromium()` watches every page it opens). One Chromium
serves the module (its start costs more than a test), each page in a fresh browser context: nothing carries over
from one test to the next. The module's tests share one event loop and one xdist worker for that."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from engine.config import load_settings
from engine.web import create_app
from tests.conftest import Loopback, serve_on_loopback

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

pytestmark = [
    pytest.mark.skipif(
        not Path(CHROMIUM).exists() and not __import__("os").environ.get("CI"),
        reason="Debian's chromium is not installed (the README's test command installs it; CI requires it)",
    ),
    pytest.mark.asyncio(loop_scope="module"),  # the browser's loop
    pytest.mark.xdist_group("chromium"),  # one worker starts it (`--dist loadgroup`)
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_chromium() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-background-networking",
                "--disable-gpu",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest_asyncio.fixture(loop_scope="module")
async def playground(tmp_path: Path) -> AsyncIterator[Loopback]:
    """The playground over a copy of the example flows (a test may break them)."""
    shutil.copytree(ROOT / "flows", tmp_path / "flows", ignore=shutil.ignore_patterns("tests"))
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    settings = load_settings(
        ROOT / "config.toml",
        {
            "OTNFLOW_STORE_URL": f"sqlite:///{tmp_path / 'pg.sqlite3'}",
            "OTNFLOW_LOG_LEVEL": "WARNING",
            "OTNFLOW_FLOWS_DIR": str(tmp_path / "flows"),
            "OTNFLOW_FLOWS_TEMPLATES": str(tmp_path / "templates"),
        },
    )
    assert settings.local_mode
    served = await serve_on_loopback(create_app(settings))
    yield served
    await served.runner.cleanup()


class Watched:
    """A browser whose pages report every uncaught error and every console error; `chromium()` fails the test on
    any (but those `expected` matches)."""

    def __init__(self, browser: Any) -> None:
        self.browser = browser
        self.errors: list[str] = []
        self.pages: list[Any] = []

    async def new_page(self, **options: Any) -> Any:
        """A page in a browser context of its own (Playwright's `new_page`), closed with it at the test's end."""
        page = await self.browser.new_page(**options)
        self.pages.append(page)
        page.on("pageerror", lambda error: self.errors.append(f"page error on {page.url}: {error}"))
        page.on(
            "console",
            lambda message: (
                message.type == "error" and self.errors.append(f"console error on {page.url}: {message.text}")
            ),
        )
        return page

    def expect_error(self, pattern: str) -> None:
        """This test causes exactly this error on purpose: take it off the list (it must be there)."""
        found = next((e for e in self.errors if re.search(pattern, e)), None)
        assert found is not None, f"expected an error matching {pattern!r}; got {self.errors}"
        self.errors.remove(found)


@asynccontextmanager
async def chromium(browser: Any, expected: re.Pattern[str] | None = None) -> AsyncIterator[Watched]:
    """The module's browser, watched: its pages are closed (their contexts with them) when the test is done."""
    watched = Watched(browser)
    try:
        yield watched
    finally:
        for page in watched.pages:
            await page.close()
    unexpected = [e for e in watched.errors if not (expected and expected.search(e))]
    assert not unexpected, "the page logged or threw errors:\n" + "\n".join(unexpected)


async def test_playground_drives_the_wine_shop_through_the_otn_loop(
    shared_chromium: Any, playground: Loopback, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    async with chromium(shared_chromium) as browser:
        page = await browser.new_page(viewport={"width": 1400, "height": 900})
        await page.goto(f"{playground.url}/playground")
        untokened = "fetch('/playground/api/state?user=alice').then((r) => r.status)"
        assert await page.evaluate(untokened) == 403  # the page works because of its token
        browser.expect_error(r"status of 403")
        await page.fill("#user", "alice")
        await page.dispatch_event("#user", "change")

        await page.fill("#text", "hi")
        await page.click("#composer button")
        await expect(page.locator("#thread .bot").last).to_have_text(
            "Hi Alice! Welcome to the cellar. Red or white tonight?RESPONSE"
        )
        await expect(page.locator("#window")).to_have_text("open, closes in 23 h 59 min")
        await expect(page.locator("#thread-owner")).to_have_text("the bot")  # no person has the thread

        await page.click("#quick button:text-is('White')")  # a quick reply, rendered as such
        await expect(page.locator("#tags .tag")).to_have_text(["likes_white"])
        await expect(page.locator("#state")).to_have_text("sold_out")
        request = page.locator("#thread .otn-request").last
        await expect(request.locator(".title")).to_have_text("Tell me when the Sauvignon 2024 is back")

        await request.locator("button.notify-me").click()  # opts in: the token arrives through the webhook
        await expect(page.locator("#tokens td").first).to_have_text("restock (product=Sauvignon 2024)")
        await expect(page.locator("#thread .bot").last).to_contain_text("Done: you will get one message")

        await page.click("[data-advance-hours='25']")  # past the 24h window
        await expect(page.locator("#window")).to_have_text("closed")

        await page.select_option("#topic", "restock")
        await page.fill("#vars", "product=Sauvignon 2024")
        await expect(page.locator("#audience")).to_have_text(  # before sending: who each variant would reach
            "would reach 1 user (likes_white and not likes_red: 1 · likes_red and not likes_white: 0 · default: 0)"
        )
        await page.fill("#vars", "product=Rioja Gran Reserva 2015")
        await expect(page.locator("#audience")).to_contain_text("cannot send: topic 'restock': nobody holds")
        await page.fill("#vars", "product=Sauvignon 2024")
        await page.click("#notify")
        notification = page.locator("#thread .bot.notification").last
        await expect(notification).to_contain_text("The Sauvignon 2024 is back, Alice!")
        await expect(notification.locator(".via")).to_have_text("OTN token")
        await expect(page.locator("#decisions")).to_contain_text("sent as OTN token")

        await page.click("#quick button:text-is('Show me')")  # engaging reopens the window: the loop asks again
        await expect(page.locator("#window")).to_contain_text("open")
        await expect(page.locator("#thread .otn-request")).to_have_count(2)
        await expect(page.locator("#diagram svg")).to_be_visible()
        await expect(page.locator("#diagram g.state[data-state='back_in_stock'] rect")).to_have_attribute(
            "fill", "#2563eb"
        )  # the user's current state is highlighted
        await expect(page.locator("#diagram g.edge text", has_text="Show me (restock notification)")).to_have_count(1)
        current = await page.locator("#diagram g.state.current rect").bounding_box()
        panel = await page.locator("#diagram").bounding_box()
        assert current and panel  # the diagram is scrolled to the current state, far right in the wine shop
        assert panel["x"] <= current["x"] and current["x"] + current["width"] <= panel["x"] + panel["width"]
        await page.screenshot(path=str(tmp_path / "playground.png"), full_page=True)
        await page.fill("#text", "talk to a person")  # the wine shop's hand-over: the Page Inbox takes the thread
        await page.click("#composer button")
        await expect(page.locator("#thread-owner")).to_have_text(
            "a person (Page Inbox), the bot is silent; resumes at welcome_back"
        )
    assert (tmp_path / "playground.png").stat().st_size > 10_000


EVIL_PAGE = """<!doctype html><body><form id="f" method="post" enctype="text/plain" action="TARGET/playground/api/say">
<input name='{"user": "alice", "text": "hi", "x": "' value='"}'></form><script>
const body = JSON.stringify({user: "alice", text: "hi"});
Promise.allSettled([
  fetch("TARGET/playground/api/say", {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body}),
  fetch("TARGET/playground/api/reset", {method: "POST", mode: "no-cors", body: "{}"}),
  fetch("TARGET/playground/api/say", {method: "POST", headers: {"Content-Type": "application/json"}, body}),
]).then(() => { document.title = "sent"; });
</script></body>"""


async def test_another_web_site_cannot_drive_the_playground(shared_chromium: Any, playground: Loopback) -> None:
    """A page from another origin (another loopback port) fires the requests a hostile site could: a text/plain
    form post, no-cors fetches, a JSON fetch. None of them reaches the flow."""
    import aiohttp

    async def evil(request: web.Request) -> web.Response:
        return web.Response(text=EVIL_PAGE.replace("TARGET", playground.url), content_type="text/html")

    other = web.Application()
    other.router.add_get("/", evil)
    site = await serve_on_loopback(other)
    refused = re.compile(r"^console error on .*(Failed to load resource|CORS policy|Failed to fetch)")
    try:
        async with chromium(
            shared_chromium, expected=refused
        ) as browser:  # the attack page's refused requests are the point
            page = await browser.new_page()
            await page.goto(site.url)
            await page.wait_for_function("document.title === 'sent'")
            async with page.expect_navigation():
                await page.evaluate("document.getElementById('f').submit()")
            assert "answers only its own page" in await page.content()  # the form post landed on a 403
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{playground.url}/playground") as r:
                token = (await r.text()).split('name="playground-token" content="')[-1].split('"')[0]
            url = f"{playground.url}/playground/api/state?user=alice"
            async with session.get(url, headers={"X-Playground-Token": token}) as r:
                state = await r.json()
        assert state["transcript"] == [] and state["state"] is None  # alice never wrote anything
    finally:
        await site.runner.cleanup()


async def test_a_brand_new_user_on_a_phone_sees_an_api_notification_at_once(
    shared_chromium: Any, playground: Loopback
) -> None:
    """No tokens yet (the page once threw on that), a 390 px wide screen, and a notification sent through
    POST /api/notify (not the page) shows in the thread without the user doing anything."""
    import aiohttp
    from playwright.async_api import expect

    async with chromium(shared_chromium) as browser:
        page = await browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
        await page.goto(f"{playground.url}/playground")
        await page.fill("#user", "newbie")
        await page.dispatch_event("#user", "change")
        await expect(page.locator("#state")).to_have_text("(new user)")
        await expect(page.locator("#tokens td")).to_have_text(["none"])
        await expect(page.locator("#flow option")).to_have_text(["sneaker_drop", "wine_shop"])
        await expect(page.locator("#flow")).to_have_value("wine_shop")
        overflow = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        assert await page.evaluate(overflow) <= 0, "the page is wider than the phone"
        header = await page.locator("header").bounding_box()
        assert header is not None and header["width"] <= 390

        await page.fill("#text", "hi")
        await page.click("#composer button")
        await expect(page.locator("#thread .bot").last).to_contain_text("Hi Newbie! Welcome to the cellar.")
        await page.click("#quick button:text-is('White')")
        await page.locator("#thread .otn-request button.notify-me").last.click()
        await expect(page.locator("#tokens td").first).to_contain_text("restock")

        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{playground.url}/api/notify",
                json={"topic": "restock", "vars": {"product": "Sauvignon 2024"}},
                headers={"Authorization": "Bearer otnflow-local"},
            ) as response,
        ):
            assert response.status == 202, await response.text()
        notification = page.locator("#thread .bot.notification")
        await expect(notification).to_contain_text("The Sauvignon 2024 is back, Newbie!", timeout=2500)

        await page.fill("#text", "menu")
        await page.click("#composer button")
        await page.click("#quick button:text-is('Red')")
        await page.click("#quick button:text-is('Buy a bottle')")  # the stock check: no STOCK_API_URL here, it fails
        await expect(page.locator("#thread .action.failure")).to_contain_text(
            'action check_stock(sku="RIOJA19") failure in'
        )
        await expect(page.locator("#thread .bot").last).to_contain_text("I cannot reach our cellar's stock list")


async def test_a_broken_flow_edit_shows_a_banner_with_the_located_errors_until_fixed(
    shared_chromium: Any, playground: Loopback, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    wine = tmp_path / "flows" / "wine_shop.toml"
    good = wine.read_text()
    async with chromium(shared_chromium) as browser:
        page = await browser.new_page()
        await page.goto(f"{playground.url}/playground")
        await expect(page.locator("#flow option")).to_have_count(2)
        assert await page.locator("#banner").is_hidden()

        wine.write_text(good.replace('goto = "red"', 'goto = "rde"', 1))
        banner = page.locator("#banner")
        await expect(banner).to_be_visible(timeout=8000)
        line = next(n for n, text in enumerate(wine.read_text().splitlines(), 1) if 'goto = "rde"' in text)
        await expect(banner).to_contain_text(f"wine_shop.toml:{line}: error: unknown state 'rde'; did you mean 'red'?")
        await expect(banner).to_contain_text("NOT loaded")

        wine.write_text(good)
        await expect(banner).to_be_hidden(timeout=8000)
        await expect(page.locator("#reload")).to_contain_text("flows reloaded")
