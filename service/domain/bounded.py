"""The one bounded map behind every memo and cache: no I/O, no lock of its own.

Memos of pure functions (plans, parsed grant sets, response templates, kept decisions) are read on
every Check by many threads. For them the map is emptied when full (`lru=False`): a hit is one dict
lookup with no lock and no reordering, racing threads store equal values, and a gateway's steady
state refills the map within a few calls, while a flood of distinct keys costs only the work it
would have cost anyway. The fact cache, whose misses read the store, keeps its most recently used
entries instead (`lru=True`) under its own lock, since a burst of new keys must not push out the
facts every other check reads.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, Protocol, TypeVar, cast

Key = TypeVar("Key", bound=Hashable)
Value = TypeVar("Value")


_KeyIn = TypeVar("_KeyIn", contravariant=True)


class _Get(Protocol[_KeyIn, Value]):
    def __call__(self, key: _KeyIn, default: Value | None = None, /) -> Value | None: ...


class BoundedMap(Generic[Key, Value]):
    __slots__ = ("_entries", "_ordered", "get", "max_entries")
    # The value kept for a key, else the default (None); with lru, a found entry becomes the most
    # recent. Without lru it is the dict's own get, so a hit costs one C call and no Python frame.
    get: _Get[Key, Value]

    def __init__(self, max_entries: int, *, lru: bool = False) -> None:
        if max_entries < 1:
            raise ValueError("a bounded map holds at least one entry")
        self.max_entries = max_entries
        # With lru, one OrderedDict seen twice: as the map, and as the recency order. Without, a
        # plain dict, whose get is the cheapest lookup there is.
        self._ordered: OrderedDict[Key, Value] | None = OrderedDict() if lru else None
        self._entries: dict[Key, Value] = self._ordered if self._ordered is not None else {}
        if self._ordered is not None:
            self.get = self._most_recent
        else:
            self.get = cast("_Get[Key, Value]", self._entries.get)  # dict.get's overloads include this one

    def _most_recent(self, key: Key, default: Value | None = None) -> Value | None:
        ordered = self._ordered
        assert ordered is not None
        try:
            ordered.move_to_end(key)
        except KeyError:
            return default
        return ordered[key]

    def put(self, key: Key, value: Value) -> None:
        """Keeps `value` for `key`, as the most recent entry with lru; a full map first makes room
        (see the module's docstring)."""
        entries, ordered = self._entries, self._ordered
        if key in entries:
            if ordered is not None:
                ordered.move_to_end(key)
        elif len(entries) >= self.max_entries:
            if ordered is not None:
                ordered.popitem(last=False)
            else:
                entries.clear()
        entries[key] = value

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
