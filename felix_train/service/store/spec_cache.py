"""Decoded job specs kept in memory for the job lists: a list page reads a spec from the database only once.

A job's spec is written once, when the job is created, and never changed, so a decoded copy keyed by
`(job id, created_at)` stays right for as long as it is kept (a job deleted and submitted again under
the same id has another `created_at`, so another key). Decoding each row's spec was most of the
store's time for a 200-row page; with the cache a page reads every column but the spec, then the
specs it misses (`WHERE id IN (...)`).

The specs are shared between answers: read them, never change them (`public_spec` copies what it
edits).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import datetime

Key = tuple[str, datetime]

DEFAULT_SIZE = 4096
"""Specs kept (least recently used dropped first): ~20 pages of 200; a spec is a few kB decoded."""


class SpecCache:
    """A thread-safe LRU of decoded specs by `(job id, created_at)`."""

    def __init__(self, size: int = DEFAULT_SIZE):
        self.size = size
        self._items: OrderedDict[Key, dict] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get_many(self, keys: list[Key]) -> dict[Key, dict]:
        """The cached specs among `keys` (each one found becomes the most recently used)."""
        found: dict[Key, dict] = {}
        with self._lock:
            for key in keys:
                spec = self._items.get(key)
                if spec is not None:
                    self._items.move_to_end(key)
                    found[key] = spec
            self.hits += len(found)
            self.misses += len(keys) - len(found)
        return found

    def put_many(self, items: dict[Key, dict]) -> None:
        with self._lock:
            self._items.update(items)
            for key in items:
                self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
