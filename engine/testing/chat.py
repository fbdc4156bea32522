"""`otnflow chat FLOW`: the playground in a terminal. Type to talk; a number taps that quick reply or button;
`/help` lists the commands (HELP below).

It runs the real engine on the harness (engine/testing/harness.py): a fresh store, the fake Graph API, a clock you
move.
"""

from __future__ import annotations

import asyncio
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from .conversations import parse_duration
from .harness import Bot, BotUser, HarnessError, ReplyView

PROMPT = "you> "
HELP = """type to talk; a number taps that quick reply or button
  /tap TITLE                      tap a quick reply or button by its title
  /optin [TOPIC]                  tap Notify Me on the latest request (for TOPIC)
  /advance 25h                    move the clock (s, m, h, d)
  /notify TOPIC [key=value ...]   send a topic's notification to you; quote values with spaces:
                                  /notify back_in_stock item="almond croissant"
  /tags /state /vars /tokens      what the engine knows of you
  /help /quit"""


def show(replies: list[ReplyView], out: TextIO) -> list[str]:
    """Print the bot's messages; return the titles a number can tap."""
    choices: list[str] = []
    for reply in replies:
        if reply.is_otn_request:
            print(f"bot: [Notify Me] {reply.text}   (/optin {reply.otn_topic})", file=out)
            continue
        marker = " (notification)" if reply.is_notification else ""
        print(f"bot{marker}: {reply.text}", file=out)
        offered = [*reply.quick_replies, *reply.buttons]
        if offered:
            choices = offered
            print("     " + "  ".join(f"[{i}] {title}" for i, title in enumerate(offered, 1)), file=out)
    return choices


async def run(
    flow: str | None, config: Path | None, user_id: str, read: Callable[[], str | None], out: TextIO = sys.stdout
) -> int:
    async with Bot.start(config=config, flow=flow) as bot:
        user = bot.user(user_id, first_name=user_id.title())
        print(f"chatting with {flow or 'the default flow'} as {user_id}; /quit to leave", file=out)
        choices: list[str] = []
        while (line := await asyncio.get_running_loop().run_in_executor(None, read)) is not None:
            line = line.strip()
            if not line:
                continue
            if line in ("/quit", "/exit"):
                break
            try:
                replies, choices = await step(bot, user, line, choices, out)
            except (HarnessError, ValueError) as err:
                print(f"!! {err}", file=out)
                continue
            if replies is not None:
                choices = show(replies, out) or choices
    return 0


async def step(
    bot: Bot, user: BotUser, line: str, choices: list[str], out: TextIO
) -> tuple[list[ReplyView] | None, list[str]]:
    if line.isdigit() and 0 < int(line) <= len(choices):
        return await user.taps(choices[int(line) - 1]), choices
    if not line.startswith("/"):
        return await user.says(line), choices
    command, *args = shlex.split(line)
    if command == "/tap":
        return await user.taps(" ".join(args)), choices
    if command == "/optin":
        return await user.opts_in(args[0] if args else None), choices
    if command == "/advance":
        bot.clock.advance(**parse_duration(args[0] if args else "1h"))
        print(f"-- {args[0] if args else '1h'} later", file=out)
        return None, choices
    if command == "/notify":
        if not args:
            raise ValueError("/notify TOPIC [key=value ...]")
        variables = notify_vars(args[1:])
        before = len(user.replies)
        report = await bot.notify(args[0], **variables)
        print(f"-- notification {args[0]}: {report.counts or 'you hold no token'}", file=out)
        return user.replies[before:], choices
    views: dict[str, Callable[[], object]] = {
        "/tags": lambda: sorted(user.tags),
        "/state": lambda: user.state,
        "/vars": lambda: user.variables,
        "/tokens": lambda: [(t.topic, t.status) for t in user.tokens()],
    }
    if command in views:
        print(f"-- {command[1:]}: {views[command]()}", file=out)
        return None, choices
    if command == "/help":
        print(HELP, file=out)
        return None, choices
    raise ValueError(f"unknown command {command}; /help lists them")


def notify_vars(words: list[str]) -> dict[str, str]:
    """`key=value` words (already split like a shell: quotes keep spaces). A bare word is a value cut at a space:
    refuse it rather than send a notification with half a value."""
    variables: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if sep and key:
            variables[key] = value
            continue
        if variables:
            last, cut = next(reversed(variables.items()))
            raise ValueError(
                f"'{word}' is not key=value: was {last}={cut!r} cut at a space? quote it: {last}=\"{cut} {word}\""
            )
        raise ValueError(f"'{word}' is not key=value")
    return variables
