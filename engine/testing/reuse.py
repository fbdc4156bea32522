"""What the flow-test harness makes once per process and reuses for every bot it starts: an empty SQLite store
(the schema, as the store itself creates it), compiled flows, and the choice of the folder its stores go in.

Each bot still gets its own copy of the store file, its own app, dispatcher, fake Graph API and clock: tests stay
as independent as before. They stop paying, each, for the same schema creation (a new SQLite file switched to WAL
and given its tables fsyncs several times: 30-50 ms on a disk, as much again to close) and the same flow
compilation (60-110 ms for the example flows).

A bot's store goes in a RAM-backed folder where the machine has one (/dev/shm on Linux, with room to spare): still
a real SQLite file through the same store code, but its syncs and its deletion cost nothing, where on a busy disk
a test spent more time waiting for them than running its steps.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tempfile
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any, cast

from ..config import Settings
from ..flow import CompiledFlow, FlowOptions, flow_files, load_flows
from ..store import open_store

#: Where a bot's store goes unless the test names a folder: RAM where there is room (else the system's temp folder).
RAM_FOLDER = Path("/dev/shm")
RAM_NEEDED_BYTES = 512 * 1024 * 1024  # a container's small /dev/shm (64 MB by default in Docker) is left alone


@functools.cache
def scratch_folder() -> str | None:
    """The folder for bots' temporary stores: RAM_FOLDER when it is a writable folder with room; None (the
    system's temp folder) otherwise."""
    try:
        room = os.statvfs(RAM_FOLDER)
    except OSError:
        return None
    if not os.access(RAM_FOLDER, os.W_OK | os.X_OK) or room.f_bavail * room.f_frsize < RAM_NEEDED_BYTES:
        return None
    return str(RAM_FOLDER)


class EmptyStore:
    """The bytes of a SQLite store with its schema and nothing else, made once by the store's own `open` and
    `close` (so it is always the schema the store code creates, WAL mode included)."""

    def __init__(self) -> None:
        self._image: bytes | None = None

    async def image(self) -> bytes:
        if self._image is None:
            with tempfile.TemporaryDirectory(prefix="otnflow-empty-store-") as tmp:
                made = Path(tmp) / "empty.sqlite3"
                store = open_store(f"sqlite:///{made}")
                await store.open()
                await store.close()  # the last connection checkpoints the WAL into the file and removes it
                self._image = made.read_bytes()
        return self._image

    async def put(self, path: Path) -> None:
        """An empty store at `path`, unless a file is already there (a `store_dir` a test starts a bot on twice)."""
        if path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(await self.image())


def _key_part(value: Any) -> Hashable:
    """A flow option as part of a cache key: a mapping (filters, globals, actions) as its sorted items, a value by
    itself when it hashes, else by identity (the cache entry keeps the options alive, so ids stay unique)."""
    if isinstance(value, Mapping):
        return tuple(sorted((name, _key_part(item)) for name, item in value.items()))
    try:
        hash(value)
    except TypeError:
        return id(value)
    return cast(Hashable, value)


#: More files than this under the templates folder (a folder that is not one): compile each time, walk no more.
MAX_FILES = 500


def _files(flows_dir: Path, templates_dir: Path | None) -> tuple[tuple[str, int, int], ...] | None:
    """Every file a compilation may read, with its modification time and size (an edited file compiles again);
    None when there are too many to look at each time."""
    paths = flow_files([flows_dir])
    if templates_dir is not None and templates_dir.is_dir():
        for path in templates_dir.rglob("*"):
            paths.append(path)
            if len(paths) > MAX_FILES:
                return None
    return tuple((str(p), (s := p.stat()).st_mtime_ns, s.st_size) for p in sorted(paths) if p.is_file())


class CompiledFlows:
    """Compiled flows by folder, flow options and the files' (mtime, size); the few most recent kept. Compiled
    flows are read-only once built (a user's state lives in the store, not in the machine), so bots share them,
    as `otnflow test` and the pytest plugin already did for conversation files."""

    def __init__(self, keep: int = 8) -> None:
        self.keep = keep
        self._cache: OrderedDict[Hashable, tuple[FlowOptions, dict[str, CompiledFlow]]] = OrderedDict()
        self.compiled = 0  # how many times flows were compiled (what a test of the cache looks at)

    def of(self, settings: Settings) -> dict[str, CompiledFlow]:
        """The flows `settings` configure (FlowError as `load_configured_flows` raises it)."""
        options = settings.flow_options()
        folder = settings.path(settings.flows.dir)
        files = _files(folder, options.templates_dir)
        if files is None:
            self.compiled += 1
            return load_flows([folder], options)
        # every option, so that one added to FlowOptions is part of the key without being named here
        key = (folder, *(_key_part(getattr(options, f.name)) for f in dataclasses.fields(options)), files)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key][1]
        flows = load_flows([folder], options)
        self.compiled += 1
        self._cache[key] = (options, flows)
        while len(self._cache) > self.keep:
            self._cache.popitem(last=False)
        return flows


#: One of each per process (a pytest-xdist worker is a process: nothing is shared between workers).
EMPTY_STORE = EmptyStore()
COMPILED_FLOWS = CompiledFlows()
