"""The in-memory store behind the ``InMemory*View`` read models (tests, embedded demos).

Invariant kept here, as in the SQL store: a projection's view changes and its tracking
position become visible together or not at all. A transaction only *collects* the
view's changes (``on_commit``); they are applied with the new position (and the stop
mark, see projections/store.py) under one lock when the block exits cleanly, and
dropped if it raises.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from projections.store import Stop


class MemoryTransaction:
    def __init__(self, name: str, position: int, stopped: Stop | None = None) -> None:
        self.name = name
        self.position = position
        self.stopped = stopped
        self.pending: list[Callable[[], None]] = []

    def on_commit(self, change: Callable[[], None]) -> None:
        self.pending.append(change)

    def advance(self, position: int) -> None:
        if position <= self.position:
            raise ValueError(f"tracking position of {self.name!r} must grow: {self.position} -> {position}")
        self.position = position

    def reset(self) -> None:
        self.position = 0

    def stop(self, stop: Stop) -> None:
        self.stopped = stop

    def resume(self) -> None:
        self.stopped = None


class InMemoryStore:
    kind = "memory"

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._positions: dict[str, int] = {}
        self._stops: dict[str, Stop] = {}
        self._writers: dict[str, threading.Lock] = {}

    def is_transient(self, exc: BaseException) -> bool:
        return False

    def create_tables(self, ddl: object = ()) -> None:
        """Nothing to create; present so every store is driven the same way."""

    def upgrade(self, schemas: object = ()) -> list[str]:
        """Nothing kept across processes, so nothing to upgrade."""
        return []

    @contextmanager
    def tracked(self, name: str, *, wait: bool = True) -> Iterator[MemoryTransaction | None]:
        with self.lock:
            writer = self._writers.setdefault(name, threading.Lock())
        if not writer.acquire(blocking=wait):
            yield None
            return
        try:
            with self.lock:
                tx = MemoryTransaction(name, self._positions.get(name, 0), self._stops.get(name))
            yield tx
            with self.lock:
                for change in tx.pending:
                    change()
                self._positions[name] = tx.position
                if tx.stopped is None:
                    self._stops.pop(name, None)
                else:
                    self._stops[name] = tx.stopped
        finally:
            writer.release()

    def positions(self) -> dict[str, int]:
        with self.lock:
            return dict(self._positions)

    def stops(self) -> dict[str, Stop]:
        with self.lock:
            return dict(self._stops)

    def close(self) -> None:
        """Nothing to release."""
