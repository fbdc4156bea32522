"""What the SQLite store last committed or read for a user's step: the user's stored JSON and their armed
re-requests, for the most recent users (LRU), so that most steps skip the reader thread's round trip (two SELECTs
queued to another thread and settled back on the event loop).

An entry is only ever what the store itself wrote or read, and every change to a user's row or armed requests
invalidates it: the store's own writes drop (or, for a step it committed, update) the entry when they settle, and a
commit by another connection to the file (`otnflow notify` beside `otnflow serve`) clears the whole cache before the
store's next write batch is settled (see `SqliteStore`). Everything here runs on the event loop's thread.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Sequence
from typing import NamedTuple

from .. import jsonio
from .base import UserRecord

#: Users kept: a user's JSON is a few hundred bytes, so a few MB at most.
CAPACITY = 4096

Armed = list[tuple[str, str]]


class _Entry(NamedTuple):
    data: str | None  # the `users` row's JSON as stored; None: no row
    armed: tuple[tuple[str, str], ...]  # (topic, source_state), in the store's order


class StepCache:
    """A bounded map of user id to what `load_for_step` would read. A hit is decoded afresh from the stored JSON,
    so that no two callers ever share a mutable record."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._reading: dict[str, object] = {}  # user -> the read in flight that may fill their entry

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, user_id: str) -> tuple[UserRecord | None, Armed] | None:
        """The user and their armed requests, or None when not kept."""
        entry = self._entries.get(user_id)
        if entry is None:
            return None
        self._entries.move_to_end(user_id)
        return _decoded(user_id, entry)

    def reading(self, user_id: str) -> object:
        """A read of the user is being queued: the ticket `read` needs to keep its result. Any change to the user
        (or a clear) before the read comes back voids the ticket: the read may predate that change."""
        ticket = object()
        self._reading[user_id] = ticket
        return ticket

    def read(
        self, user_id: str, ticket: object, data: str | None, armed: Sequence[tuple[str, str]]
    ) -> tuple[UserRecord | None, Armed]:
        """What a read returned, decoded; kept when nothing changed the user since its ticket was issued."""
        entry = _Entry(data, tuple(armed))
        if self._reading.get(user_id) is ticket:
            del self._reading[user_id]
            self._put(user_id, entry)
        return _decoded(user_id, entry)

    def abandon(self, user_id: str, ticket: object) -> None:
        """The read failed: its ticket is withdrawn (unless a newer read holds the user's ticket)."""
        if self._reading.get(user_id) is ticket:
            del self._reading[user_id]

    def committed(self, user_id: str, data: str, disarm: Collection[str], withdrawn: bool) -> None:
        """A step's write committed: the user's new JSON, their armed requests less those it disarmed (none left
        when they withdrew consent). Kept only when their armed requests were known; else the entry is dropped."""
        entry = self._entries.pop(user_id, None)
        self._reading.pop(user_id, None)
        if entry is None:
            return
        armed = entry.armed
        if withdrawn:
            armed = ()
        elif disarm:
            armed = tuple(a for a in armed if a[0] not in disarm)
        self._put(user_id, _Entry(data, armed))

    def drop(self, user_id: str) -> None:
        """The user's row or armed requests changed otherwise: read them again next time."""
        self._entries.pop(user_id, None)
        self._reading.pop(user_id, None)

    def clear(self) -> None:
        """Another connection committed (or a write could not be tied to one user): nothing kept is trusted."""
        self._entries.clear()
        self._reading.clear()

    def _put(self, user_id: str, entry: _Entry) -> None:
        self._entries[user_id] = entry
        self._entries.move_to_end(user_id)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)


def _decoded(user_id: str, entry: _Entry) -> tuple[UserRecord | None, Armed]:
    user = None if entry.data is None else UserRecord.from_data(user_id, jsonio.loads(entry.data))
    return user, list(entry.armed)
