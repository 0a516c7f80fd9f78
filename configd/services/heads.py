"""The heads a server process last read or committed, so a push can start without reading them again."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from ..planning.writes import Heads


@dataclass
class KnownHeads:
    """The heads this process last read or committed, per config (bounded LRU, thread-safe).

    A push may start from these instead of reading Consul: its transaction's CAS on the head and check-index on
    the schema head then prove them current (or fail, and the push re-reads). Another writer — a second server
    process, a replica — makes an entry stale, which costs one failed transaction, never a wrong result.
    """

    maxsize: int = 4096
    _items: OrderedDict[tuple[str, str], Heads] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, namespace: str, name: str) -> Heads | None:
        with self._lock:
            found = self._items.get((namespace, name))
            if found is not None:
                self._items.move_to_end((namespace, name))
            return found

    def put(self, namespace: str, name: str, heads: Heads) -> None:
        with self._lock:
            self._items[(namespace, name)] = heads
            self._items.move_to_end((namespace, name))
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._items.pop((namespace, name), None)
