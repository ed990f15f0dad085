"""A table that forgets: per-flow state of a long-running watcher, bounded in age and in size.

Entries are kept least recently used first, so both the idle entries and, when the table is full,
the one to make room with (the longest idle) are always at the front. What is forgotten is counted
per reason in the `evictions` counter the owner passes in.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class RecentTable(Generic[K, V]):
    """Key -> value with the time each was last used; at most `max_entries`, none idle past `idle`."""

    def __init__(
        self,
        name: str,
        *,
        idle: dt.timedelta,
        max_entries: int,
        evictions: Counter[str],
        on_evict: Callable[[V], None] | None = None,
    ) -> None:
        self.name = name
        self.idle = idle
        self.max_entries = max(1, max_entries)
        self.evictions = evictions
        self.on_evict = on_evict
        self._items: OrderedDict[K, V] = OrderedDict()
        self._used: dict[K, dt.datetime] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[K]:
        return iter(self._items)

    def values(self) -> list[V]:
        return list(self._items.values())

    def get(self, key: K, now: dt.datetime) -> V | None:
        """The value, marked used at `now`; None when absent."""
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
            self._used[key] = now
        return value

    def put(self, key: K, value: V, now: dt.datetime) -> V:
        """Sets the value (the longest idle entry makes room when the table is full)."""
        if key not in self._items:
            while len(self._items) >= self.max_entries:
                self._evict(next(iter(self._items)), "over limit")
        self._items[key] = value
        self._items.move_to_end(key)
        self._used[key] = now
        return value

    def setdefault(self, key: K, make: Callable[[], V], now: dt.datetime) -> V:
        value = self.get(key, now)
        return self.put(key, make(), now) if value is None else value

    def expire(self, now: dt.datetime) -> None:
        """Forgets the entries not used since `now - idle`."""
        while self._items:
            key = next(iter(self._items))
            if now - self._used[key] <= self.idle:
                return
            self._evict(key, "idle")

    def _evict(self, key: K, reason: str) -> None:
        value = self._items.pop(key)
        del self._used[key]
        self.evictions[f"{self.name} {reason}"] += 1
        if self.on_evict is not None:
            self.on_evict(value)
