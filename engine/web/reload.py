"""Local mode: reload the flows when their files change, once they pass the checker; keep the old ones otherwise."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from ..flow import check_paths
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


def reload_flows(app: web.Application) -> str:
    """Check the flow files; swap them in when they are clean. Returns what happened, in one line."""
    settings = app[SETTINGS]
    flows, diagnostics = check_paths([settings.path("flows.dir")], settings.flow_options())
    errors = [d for d in diagnostics if d.is_error]
    default = str(settings["flows.default"])
    if not errors and default and default not in flows:
        errors_text = f"flows.default {default!r} is no longer a flow"
    elif errors:
        errors_text = f"{len(errors)} error(s), first: {errors[0]}"
    elif not flows:
        errors_text = "no flow files left"
    else:
        current = app[FLOWS]
        current.clear()
        current.update(flows)  # in place: the runtime holds this very mapping
        message = f"flows reloaded: {', '.join(sorted(flows))}"
        log.info(message)
        return message
    message = f"flow change NOT loaded, keeping the previous flows: {errors_text}"
    log.warning(message)
    return message


async def _watch(app: web.Application) -> None:
    settings = app[SETTINGS]
    folders = [settings.path("flows.dir"), settings.path("flows.templates")]
    seen = fingerprint(folders)
    while True:
        await asyncio.sleep(INTERVAL_SECONDS)
        now = fingerprint(folders)
        if now != seen:
            seen = now
            status = reload_flows(app)
            from .playground import PLAYGROUND  # the playground shows the status when it is there

            if PLAYGROUND in app:
                app[PLAYGROUND].reload_status = status


async def watch_ctx(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_watch(app), name="flow reload")
    yield
    task.cancel()
