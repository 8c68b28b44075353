"""Feeds the application's notification log to the projections, exactly once each.

Invariant kept here: a projection sees notification ``n`` only inside a store
transaction that holds its tracking lock, reads its position there, drops everything
at or below it, and advances the position to the batch's last id in the same commit.
The position that decides is the one read *under* the lock, so several runners
(threads or processes) may call :meth:`ProjectionRunner.catch_up` at once — and a
rebuild may reset a projection meanwhile — and every event is still applied exactly
once.
Events a projection does not follow are skipped by topic without being decoded,
but they still advance its position, so ``lag`` is exact.

One pass of :meth:`ProjectionRunner.catch_up` reads each batch of notifications once
and decodes each event once for all projections (:class:`_SharedReads`): a batch read
from position ``p`` holds every notification after ``p`` up to its last id (the store
commits notification ids in order), so a projection whose locked position is ``p``
may use it as if it had read it under its own lock — it only may not be the newest;
the next pass sees the rest. A projection at any other position reads its own batch.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

from eventsourcing.application import Application
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Notification

from domain.errors import NotFound

log = logging.getLogger(__name__)
FULL_PASS_SECONDS = 1.0  # how often an idle poller still runs a whole catch-up pass


class Projection(Protocol):
    name: str
    topics: frozenset[str]

    def process(self, tx: Any, events: list[DomainEventProtocol[Any]]) -> None: ...

    def clear(self, tx: Any) -> None: ...


class Store(Protocol):
    def tracked(self, name: str, *, wait: bool = True) -> Any: ...

    def positions(self) -> dict[str, int]: ...


@dataclass(frozen=True)
class ProjectionStatus:
    name: str
    position: int
    max_notification_id: int
    lag: int


class ProjectionRunner:
    def __init__(
        self,
        app: Application,
        store: Store,
        projections: Sequence[Projection],
        *,
        batch_size: int = 1000,
        poll_interval: float = 0.05,
    ) -> None:
        self.app = app
        self.store = store
        self.projections = {p.name: p for p in projections}
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def catch_up(self, *, wait: bool = True) -> int:
        """Apply every pending event; returns how many (projection, event) applications.

        With ``wait=False`` a projection another process is applying right now is
        skipped (PostgreSQL advisory lock) instead of waited for.
        """
        reads = _SharedReads(self.app, self.batch_size)
        return sum(self._catch_up(projection, reads, wait=wait) for projection in self.projections.values())

    def apply(self, name: str, notifications: Sequence[Notification]) -> int:
        """Apply an already-read batch (e.g. one delivered twice); returns events applied."""
        projection = self._projection(name)
        with self.store.tracked(name) as tx:
            return self._apply(tx, projection, notifications, _SharedReads(self.app, self.batch_size))

    def rebuild(self, name: str | None = None) -> int:
        """Empty the view(s) and their tracking together, then replay from zero."""
        applied = 0
        reads = _SharedReads(self.app, self.batch_size)
        for projection in [self._projection(name)] if name else list(self.projections.values()):
            with self.store.tracked(projection.name) as tx:
                projection.clear(tx)
                tx.reset()
            applied += self._catch_up(projection, reads, wait=True)
        return applied

    def status(self) -> list[ProjectionStatus]:
        head = self.app.recorder.max_notification_id() or 0
        positions = self.store.positions()
        return [
            ProjectionStatus(name, positions.get(name, 0), head, max(head - positions.get(name, 0), 0))
            for name in self.projections
        ]

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, name="tallyhub-projections", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _poll(self) -> None:
        # An idle store: one read of the head per poll instead of a transaction per
        # projection (100 write transactions a second on an idle embedded gateway). A whole
        # pass still runs every FULL_PASS_SECONDS, for a position reset elsewhere (a rebuild)
        # or a projection another process held the last time.
        seen_head, full_pass_at = -1, 0.0
        while not self._stop.is_set():
            self._wake.clear()  # a wake() from here on makes the wait below return at once
            try:
                head = self.app.recorder.max_notification_id() or 0
                now = time.monotonic()
                if head != seen_head or now - full_pass_at >= FULL_PASS_SECONDS:
                    self.catch_up(wait=False)
                    seen_head, full_pass_at = head, now
            except Exception:
                log.exception("projection catch-up failed; retrying in 1 s")
                self._stop.wait(1.0)
            self._wake.wait(self.poll_interval)

    def _projection(self, name: str) -> Projection:
        try:
            return self.projections[name]
        except KeyError:
            raise NotFound(f"no projection named {name!r} (have: {', '.join(self.projections)})") from None

    def _catch_up(self, projection: Projection, reads: _SharedReads, *, wait: bool) -> int:
        applied = 0
        while True:
            with self.store.tracked(projection.name, wait=wait) as tx:
                if tx is None:
                    return applied
                batch = reads.after(tx.position)
                applied += self._apply(tx, projection, batch, reads)
            if len(batch) < self.batch_size:
                return applied

    def _apply(self, tx: Any, projection: Projection, notifications: Sequence[Notification],
               reads: _SharedReads) -> int:
        fresh = [n for n in notifications if n.id > tx.position]
        if not fresh:
            return 0
        events = [reads.event(n) for n in fresh if n.topic in projection.topics]
        if events:
            projection.process(tx, events)
        tx.advance(fresh[-1].id)
        return len(events)


class _SharedReads:
    """Notification batches and decoded events of one catch-up pass, shared by its
    projections (see the module docstring for why a shared batch is safe). A pass far
    behind (a rebuild) would keep the whole history: past ``KEPT`` notifications the
    shared reads start afresh."""

    KEPT = 5_000

    def __init__(self, app: Application, batch_size: int) -> None:
        self._app, self._batch_size = app, batch_size
        self._batches: dict[int, list[Notification]] = {}
        self._events: dict[int, DomainEventProtocol[Any]] = {}
        self._kept = 0

    def after(self, position: int) -> list[Notification]:
        batch = self._batches.get(position)
        if batch is None:
            batch = self._app.recorder.select_notifications(position, self._batch_size, inclusive_of_start=False)
            self._kept += len(batch)
            if self._kept > self.KEPT:
                self._batches.clear()
                self._events.clear()
                self._kept = len(batch)
            self._batches[position] = batch
        return batch

    def event(self, notification: Notification) -> DomainEventProtocol[Any]:
        event = self._events.get(notification.id)
        if event is None:
            event = self._events[notification.id] = self._app.mapper.to_domain_event(notification)
        return event
