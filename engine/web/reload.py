"""Local mode: reload the flows when their files change, once they pass the checker; keep the old ones otherwise."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from ..runtime.flows import FlowSet, check_configured_flows
from .keys import FLOWS, SETTINGS

log = logging.getLogger("otnflow.reload")
INTERVAL_SECONDS = 1.0


def fingerprint(folders: list[Path]) -> tuple[tuple[str, int, int], ...]:
    """Every file's path, mtime and size: any edit, addition or removal changes it."""
    found = []
    for folder in folders:
        for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
            if path.is_file():
                stat = path.stat()
                found.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(found)


@dataclass(frozen=True)
class Reloaded:
    """What a reload did: one line, and every located error when the change was refused."""

    message: str
    errors: tuple[str, ...] = ()


def reload_flows(app: web.Application) -> Reloaded:
    """Check the flow files; swap a new set of flows in when they are clean, keep the running ones otherwise."""
    settings = app[SETTINGS]
    flows, diagnostics = check_configured_flows(settings)
    errors = [d for d in diagnostics if d.is_error]
    listed = tuple(str(d) for d in errors)
    if errors:
        errors_text = f"{len(errors)} error(s), first: {errors[0]}"
    elif not flows:
        listed = ("no flow files left",)
        errors_text = listed[0]
    else:
        try:
            fresh = FlowSet.configured(settings, flows)
        except ValueError as err:  # flows.default names a flow that is gone
            listed = (str(err),)
            errors_text = listed[0]
        else:
            app[FLOWS].replace(fresh)  # whole: a step under way keeps the set it started with
            message = f"flows reloaded: {', '.join(sorted(flows))}"
            log.info(message)
            return Reloaded(message)
    message = f"flow change NOT loaded, keeping the previous flows: {errors_text}"
    log.warning(message)
    return Reloaded(message, listed)


async def _watch(app: web.Application) -> None:
    settings = app[SETTINGS]
    folders = [settings.path(settings.flows.dir), settings.path(settings.flows.templates)]
    seen = fingerprint(folders)
    while True:
        await asyncio.sleep(INTERVAL_SECONDS)
        now = fingerprint(folders)
        if now != seen:
            seen = now
            reloaded = reload_flows(app)
            from .playground import PLAYGROUND  # the playground shows the status when it is there

            if PLAYGROUND in app:
                app[PLAYGROUND].reloaded(reloaded)


async def watch_ctx(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_watch(app), name="flow reload")
    yield
    task.cancel()
