"""Feeds the application's notification log to the projections, exactly once each.

Invariant kept here: a projection sees notification ``n`` only inside a store
transaction that holds its tracking lock, reads its position there, drops everything
at or below it, and advances the position to the batch's last id in the same commit.
The position that decides is the one read *under* the lock, so several runners
(threads or processes) may call :meth:`ProjectionRunner.catch_up` at once — and a
rebuild may reset a projection meanwhile — and every event is still applied exactly
once.
Events a projection does not follow are skipped by topic without being decoded.

A projection's transaction is opened only when there is something to write: a pass
reads the committed positions once (``Store.positions``, no lock) and opens a
projection's transaction only if the notifications after its position hold an event
it follows, or it is stopped in this process's eyes (so a resume elsewhere is seen), or
it has ``batch_size`` or more notifications it does not follow behind it, or the pass
*settles* (``defer=False``: every explicit ``catch_up``, ``rebuild``, and the poller's
pass once every ``FULL_PASS_SECONDS``, busy or idle). Otherwise its position stays put
and the runner notes what it has checked: "nothing it follows in (a, b]" (``_Clear``), a
fact of the append-only log, true whoever moves the position and whenever. The next
transaction that finds its position in such a span advances over it first, under the
lock, exactly as applying those notifications would have (nothing to apply, the
position moved to ``b``). Nothing is written outside the lock, so the exactly-once
argument above is unchanged; a skip only postpones a write, and the position read
without the lock only decides whether to look (a stale one makes a pass look too late
or too early, never apply twice: under the lock the position read there decides).
So a position is never more than ``batch_size`` notifications behind what its
projection has checked, a restart re-reads at most that, and ``lag`` (head minus
position) counts notifications not yet passed: under load at most ``batch_size`` or a
``FULL_PASS_SECONDS`` of traffic; idle, 0 after the next settling pass.

A projection is handed the decoded events it follows, in notification order: a
``Projection`` as ``process(tx, events)``, a ``PositionedProjection`` (one whose rows are
keyed by position, like the ledger entries) as ``process_at(tx, events, positions)``
with each event's notification id — the ids of the notifications the runner read, so
no projection reads the store again to find them. Which of the two a projection is,
is decided once, when the runner is built.

One pass of :meth:`ProjectionRunner.catch_up` reads each batch of notifications once
and decodes each event once for all projections (:class:`_SharedReads`): a batch read
from position ``p`` holds every notification after ``p`` up to its last id (the store
commits notification ids in order), so a projection whose locked position is ``p``
may use it as if it had read it under its own lock — it only may not be the newest;
the next pass sees the rest. A projection at any other position reads its own batch.

A projection that cannot apply an event stops alone (one bad event must not wedge the
read side): when applying a batch fails, its transaction is rolled back and the batch is
applied again in small transactions — the notifications up to and including the next
event the projection follows — so the good prefix is committed and the failing event is
found exactly. The projection is then marked stopped at that event, with the error
(store.py keeps the mark beside the tracking row, visible to every process), and later
passes skip it without reading or logging anything; the others go on. Reads of its view
raise ``ProjectionStopped`` (see read_models.py). A failure that says the database is
unavailable (``Store.is_transient``, a lost connection, a lock timeout) is not the
event's fault: it is raised as before and retried, never turned into a stop.
A stopped projection is tried again, from where it stopped, by ``rebuild`` (which
replays it from zero) and by the first pass after ``start()`` (a restart, e.g. after an
upgrade that fixes the cause); it stops again at the same event if that still fails,
and the mark is cleared in the same transaction that applies past it — only there: a
rebuild keeps it while it replays, so the other runners (a serve's poller beside a
``projections rebuild``) go on skipping the projection instead of replaying it
themselves and finding the stop anew. A retry is of the stop found when it began; a
stop another runner records meanwhile is that runner's. So however many runners meet
the event, the stop is recorded and logged once, by the first (re-read under the lock
before it is written), and a retry that fails again says so as a retry.

A runner given the projections' ``schemas`` (projections/store.py ``Schema``) first
brings their tables to the versions this code declares, once, at its first catch-up (the
poller's first pass, or the first read through adapters/queries.py): a projection whose
tables were built at another version is emptied and reset to zero there, and the same
pass replays it from the event log. Meanwhile ``status`` shows its lag.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from eventsourcing import persistence
from eventsourcing.application import Application
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Notification

from domain.errors import NotFound, ProjectionStopped
from projections.recent_events import RecentEvents
from projections.store import Schema, Stop

log = logging.getLogger("tallyhub.projections")
FULL_PASS_SECONDS = 1.0  # how often an idle poller still runs a whole catch-up pass


class Projection(Protocol):
    name: str
    topics: frozenset[str]

    def process(self, tx: Any, events: list[DomainEventProtocol[Any]]) -> None: ...

    def clear(self, tx: Any) -> None: ...


@runtime_checkable
class PositionedProjection(Protocol):
    """A projection that needs each event's position: ``positions[i]`` is the notification
    id of ``events[i]``."""

    name: str
    topics: frozenset[str]

    def process_at(self, tx: Any, events: list[DomainEventProtocol[Any]], positions: list[int]) -> None: ...

    def clear(self, tx: Any) -> None: ...


AnyProjection = Projection | PositionedProjection
# How the runner hands a projection its events: (tx, events, their notification ids).
_Process = Callable[[Any, list[DomainEventProtocol[Any]], list[int]], None]


class Store(Protocol):
    def tracked(self, name: str, *, wait: bool = True) -> Any: ...

    def positions(self) -> dict[str, int]: ...

    def stops(self) -> dict[str, Stop]: ...

    def is_transient(self, exc: BaseException) -> bool: ...

    def upgrade(self, schemas: Sequence[Schema]) -> list[str]: ...


@dataclass(frozen=True)
class ProjectionStatus:
    name: str
    position: int
    max_notification_id: int
    lag: int
    state: str = "running"  # or "stopped"
    stopped_at: int | None = None  # the notification id of the event it could not apply
    stopped_event: str | None = None  # that event's topic
    error: str | None = None  # exception class: first line of its message
    stopped_on: datetime | None = None


MAX_ERROR_CHARS = 300
# Raised by the event store or a driver when the database cannot be used just now.
_TRANSIENT = (OSError, MemoryError, persistence.OperationalError, persistence.InterfaceError)


class ProjectionRunner:
    def __init__(
        self,
        app: Application[Any],
        store: Store,
        projections: Sequence[AnyProjection],
        *,
        batch_size: int = 1000,
        poll_interval: float = 0.05,
        schemas: Sequence[Schema] = (),
        recent: RecentEvents | None = None,
    ) -> None:
        """``recent``: the events this process commits, fed by its saves (embedded serve:
        adapters/bootstrap.py); applied events are taken from it instead of being decoded."""
        self.app = app
        self.recent = recent
        self.store = store
        self.schemas = tuple(schemas)
        self._upgraded = not self.schemas
        self._upgrade_lock = threading.Lock()
        self.projections: dict[str, AnyProjection] = {p.name: p for p in projections}
        self._process = {p.name: _process_of(p) for p in projections}
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stops: dict[str, Stop] = {}  # as last read under a projection's lock in this process
        self._clear: dict[str, _Clear] = {}  # per projection: a span of the log holding nothing it follows

    def catch_up(self, *, wait: bool = True, retry_stopped: bool = False, defer: bool = False) -> int:
        """Apply every pending event; returns how many (projection, event) applications.

        With ``wait=False`` a projection another process is applying right now is
        skipped (PostgreSQL advisory lock) instead of waited for. A stopped projection is
        skipped unless ``retry_stopped`` (then the stops as they are when the pass begins are
        tried again; one another runner records meanwhile is left alone). With ``defer`` a
        projection with nothing to apply keeps its position (see the module docstring);
        without, every running projection's position reaches the last notification read.
        """
        self.upgrade()
        reads = _SharedReads(self.app, self.batch_size, self.recent)
        retrying = self.store.stops() if retry_stopped else {}
        positions = self.store.positions()
        return sum(
            self._catch_up(
                projection,
                reads,
                positions.get(projection.name, 0),
                wait=wait,
                retrying=retrying.get(projection.name),
                defer=defer,
            )
            for projection in self.projections.values()
        )

    def upgrade(self) -> list[str]:
        """Bring the projections' tables to this code's schema versions, once per runner; the
        names of those emptied for a replay (which the next catch-up does)."""
        if self._upgraded:
            return []
        with self._upgrade_lock:
            if self._upgraded:
                return []
            rebuilt = self.store.upgrade(self.schemas)
            for name in rebuilt:
                self._stops.pop(name, None)
                log.warning("projection %s: its tables were built at another schema version; replaying it", name)
            self._upgraded = True
            return rebuilt

    def stopped(self, name: str) -> Stop | None:
        """The stop of projection ``name`` as this process last saw it (fresh after a catch-up)."""
        return self._stops.get(name)

    def check_running(self, name: str) -> None:
        """Raise ProjectionStopped if projection ``name`` is stopped (reads of its view call this)."""
        stop = self._stops.get(name)
        if stop is not None:
            raise ProjectionStopped(name, stop.position)

    def apply(self, name: str, notifications: Sequence[Notification]) -> int:
        """Apply an already-read batch (e.g. one delivered twice); returns events applied.

        The batch must hold every notification after the projection's position up to its
        last (as ``select_notifications`` gives them): one that misses any is refused
        (LookupError) and nothing is written, since the missed events would be skipped for good.
        """
        projection = self._projection(name)
        with self.store.tracked(name) as tx:
            fresh = [n.id for n in notifications if n.id > tx.position]
            if fresh:
                stored = self.app.recorder.select_notifications(tx.position, len(fresh), inclusive_of_start=False)
                if [n.id for n in stored] != fresh:
                    raise LookupError(
                        f"{name}: the batch is not every notification after position {tx.position} up to {fresh[-1]}"
                    )
            return self._apply(tx, projection, notifications, _SharedReads(self.app, self.batch_size, self.recent))

    def rebuild(self, name: str | None = None) -> int:
        """Empty the view(s) and their tracking together, then replay from zero (a stopped
        one keeps its stop mark until the replay applies past the event; see the module
        docstring)."""
        self.upgrade()
        applied = 0
        reads = _SharedReads(self.app, self.batch_size, self.recent)
        for projection in [self._projection(name)] if name else list(self.projections.values()):
            with self.store.tracked(projection.name) as tx:
                projection.clear(tx)
                tx.reset()  # a stop mark stays until the replay applies past its event
                self._seen(tx)
                retrying = tx.stopped
            applied += self._catch_up(projection, reads, 0, wait=True, retrying=retrying)
        return applied

    def status(self) -> list[ProjectionStatus]:
        """Positions, lag and stops as committed (by any process); applies nothing."""
        head = self.app.recorder.max_notification_id() or 0
        positions = self.store.positions()
        stops = self.store.stops()
        return [_status(name, positions.get(name, 0), head, stops.get(name)) for name in self.projections]

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Poll in a thread until ``stop``; its first pass tries stopped projections again."""
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
        # Between settling passes (one every FULL_PASS_SECONDS, busy or idle) a projection
        # with nothing to apply keeps its position: no transaction of its own per pass.
        seen_head, full_pass_at, settled_at, retry_stopped = -1, 0.0, -FULL_PASS_SECONDS, True
        while not self._stop.is_set():
            self._wake.clear()  # a wake() from here on makes the wait below return at once
            try:
                head = self.app.recorder.max_notification_id() or 0
                now = time.monotonic()
                if head != seen_head or now - full_pass_at >= FULL_PASS_SECONDS:
                    settle = now - settled_at >= FULL_PASS_SECONDS
                    self.catch_up(wait=retry_stopped, retry_stopped=retry_stopped, defer=not settle)
                    seen_head, full_pass_at, retry_stopped = head, now, False
                    settled_at = now if settle else settled_at
            except Exception:
                log.exception("projection catch-up failed; retrying in 1 s")
                self._stop.wait(1.0)
            self._wake.wait(self.poll_interval)

    def _projection(self, name: str) -> AnyProjection:
        try:
            return self.projections[name]
        except KeyError:
            raise NotFound(f"no projection named {name!r} (have: {', '.join(self.projections)})") from None

    def _catch_up(
        self,
        projection: AnyProjection,
        reads: _SharedReads,
        position: int,
        *,
        wait: bool,
        retrying: Stop | None = None,
        defer: bool = False,
    ) -> int:
        """Apply what ``projection`` has pending; a stopped one only if its stop is ``retrying``.
        ``position`` is its position as read without the lock, to decide whether to take it."""
        applied = 0
        while True:
            if not self._needs_transaction(projection, position, reads, retrying=retrying, defer=defer):
                return applied
            batch: Sequence[Notification] = []
            try:
                with self.store.tracked(projection.name, wait=wait) as tx:
                    if tx is None:
                        return applied
                    if not self._may_apply(tx, retrying):
                        return applied
                    self._pass_clear(tx)
                    after, batch = tx.position, reads.after(tx.position)
                    applied += self._apply(tx, projection, batch, reads)
                    self._resume_if_past(tx)
                    position = tx.position
            except Exception as exc:
                if not batch or self._transient(exc):
                    raise  # not an event's fault: the caller retries (the poller in 1 s)
                return applied + self._isolate(projection, after, batch, reads, wait=wait, retrying=retrying)
            if len(batch) < self.batch_size:
                return applied

    def _needs_transaction(
        self, projection: AnyProjection, position: int, reads: _SharedReads, *, retrying: Stop | None, defer: bool
    ) -> bool:
        """Whether ``projection``, at ``position``, has anything to write (module docstring);
        notes how far the log holds nothing it follows."""
        name = projection.name
        if retrying is not None or name in self._stops:
            return True  # its stop, as seen here, is to be tried again or looked at afresh
        checked = self._clear[name].end_from(position) if name in self._clear else position
        batch = reads.after(checked)
        if not projection.topics.isdisjoint(reads.topics_after(checked)):
            return True
        if batch:
            checked = batch[-1].id
            self._clear[name] = _Clear(position, checked)
        if checked == position:
            return False  # nothing after it
        return not defer or checked - position >= self.batch_size

    def _pass_clear(self, tx: Any) -> None:
        """Under the lock: advance over notifications known to hold nothing it follows."""
        clear = self._clear.get(tx.name)
        if clear is not None and clear.end_from(tx.position) > tx.position:
            tx.advance(clear.end)

    def _may_apply(self, tx: Any, retrying: Stop | None) -> bool:
        """Running, or stopped by the stop this pass tries again (not one recorded since)."""
        self._seen(tx)
        return tx.stopped is None or tx.stopped == retrying

    def _seen(self, tx: Any) -> None:
        if tx.stopped is None:
            self._stops.pop(tx.name, None)
        else:
            self._stops[tx.name] = tx.stopped

    def _resume_if_past(self, tx: Any) -> None:
        if tx.stopped is not None and tx.position >= tx.stopped.position:
            log.warning(
                "projection %s applied event %d, where it had stopped; it runs again", tx.name, tx.stopped.position
            )
            tx.resume()
            self._seen(tx)

    def _isolate(
        self,
        projection: AnyProjection,
        after: int,
        batch: Sequence[Notification],
        reads: _SharedReads,
        *,
        wait: bool,
        retrying: Stop | None,
    ) -> int:
        """Apply the failed ``batch`` (every notification after ``after`` up to its last)
        again, up to one followed event per transaction, and stop the projection at the
        event that fails (if one does)."""
        applied = 0
        while True:
            chunk: list[Notification] = []
            try:
                with self.store.tracked(projection.name, wait=wait) as tx:
                    if tx is None or not self._may_apply(tx, retrying):
                        return applied  # another runner stopped it meanwhile
                    self._pass_clear(tx)  # as the failed transaction did before ``after``
                    if tx.position < after:
                        return applied  # a rebuild reset it meanwhile
                    chunk = _next_chunk(batch, tx.position, projection.topics)
                    if not chunk:
                        return applied  # all of it applied this time: the first failure was not the events'
                    applied += self._apply(tx, projection, chunk, reads)
                    self._resume_if_past(tx)
            except Exception as exc:
                failing = chunk[-1] if chunk and chunk[-1].topic in projection.topics else None
                if failing is None or self._transient(exc):
                    raise
                self._stop_at(projection, failing, exc, wait=wait, retrying=retrying)
                return applied

    def _stop_at(
        self, projection: AnyProjection, failing: Notification, exc: Exception, *, wait: bool, retrying: Stop | None
    ) -> None:
        """Record and log the stop, unless another runner recorded one meanwhile: re-read
        under the lock, so of several runners meeting the event only the first says so."""
        stop = Stop(failing.id, failing.topic, _describe(exc), datetime.now(UTC))
        with self.store.tracked(projection.name, wait=wait) as tx:
            if tx is None or tx.position >= failing.id:
                return  # another runner got past it meanwhile
            if not self._may_apply(tx, retrying):
                return  # another runner stopped it meanwhile (and said so)
            again = tx.stopped is not None and tx.stopped.position == failing.id
            tx.stop(stop)
            self._seen(tx)
        if again:
            log.warning(
                "projection %s tried event %d again and still cannot apply it: %s; it stays stopped",
                projection.name,
                failing.id,
                stop.error,
            )
            return
        log.error(
            "projection %s stopped at event %d (%s), which it cannot apply: %s. Its reads answer "
            "projection_stopped; the other projections go on. Once the cause is fixed, run "
            "`tallyhub projections rebuild %s` or restart the process to try it again.",
            projection.name,
            failing.id,
            failing.topic,
            stop.error,
            projection.name,
        )

    def _transient(self, exc: BaseException) -> bool:
        return isinstance(exc, _TRANSIENT) or self.store.is_transient(exc)

    def _apply(
        self, tx: Any, projection: AnyProjection, notifications: Sequence[Notification], reads: _SharedReads
    ) -> int:
        fresh = [n for n in notifications if n.id > tx.position]
        if not fresh:
            return 0
        followed = [n for n in fresh if n.topic in projection.topics]
        if followed:
            self._process[projection.name](tx, [reads.event(n) for n in followed], [n.id for n in followed])
        tx.advance(fresh[-1].id)
        return len(followed)


def _process_of(projection: AnyProjection) -> _Process:
    """How to hand ``projection`` a batch: with the positions if it takes them."""
    if isinstance(projection, PositionedProjection):
        return lambda tx, events, positions: projection.process_at(tx, events, positions)
    return lambda tx, events, positions: projection.process(tx, events)


def _next_chunk(batch: Sequence[Notification], position: int, topics: frozenset[str]) -> list[Notification]:
    """The notifications of ``batch`` after ``position`` up to and including the first one
    of ``topics`` (all of them if none is)."""
    chunk = []
    for notification in batch:
        if notification.id > position:
            chunk.append(notification)
            if notification.topic in topics:
                break
    return chunk


def _describe(exc: BaseException) -> str:
    """The exception's class and the first line of its message (a driver's error may
    carry more; the data itself is never in it)."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def _status(name: str, position: int, head: int, stop: Stop | None) -> ProjectionStatus:
    lag = max(head - position, 0)
    if stop is None:
        return ProjectionStatus(name, position, head, lag)
    return ProjectionStatus(
        name, position, head, lag, "stopped", stop.position, stop.topic, stop.error, stop.stopped_on
    )


@dataclass(frozen=True)
class _Clear:
    """The notifications after ``start`` up to and including ``end`` hold no event the
    projection follows (a fact of the log, whoever moves its position)."""

    start: int
    end: int

    def end_from(self, position: int) -> int:
        """How far from ``position`` the log is known to hold nothing it follows."""
        return self.end if self.start <= position <= self.end else position


class _SharedReads:
    """Notification batches and decoded events of one catch-up pass, shared by its
    projections (see the module docstring for why a shared batch is safe). After a batch
    that ended short of ``batch_size`` (the head then) the pass reads nothing. A pass far
    behind (a rebuild) would keep the whole history: past ``KEPT`` notifications the
    shared reads start afresh. An event this process committed is taken from ``recent``
    (projections/recent_events.py) instead of being decoded from its stored state."""

    KEPT = 5_000

    def __init__(self, app: Application[Any], batch_size: int, recent: RecentEvents | None = None) -> None:
        self._app, self._batch_size, self._recent = app, batch_size, recent
        self._batches: dict[int, Sequence[Notification]] = {}
        self._topics: dict[int, frozenset[str]] = {}
        self._events: dict[int, DomainEventProtocol[Any]] = {}
        self._kept = 0

    def after(self, position: int) -> Sequence[Notification]:
        batch = self._batches.get(position)
        if batch is None:
            batch = self._app.recorder.select_notifications(position, self._batch_size, inclusive_of_start=False)
            self._kept += len(batch)
            if self._kept > self.KEPT:
                self._batches.clear()
                self._topics.clear()
                self._events.clear()
                self._kept = len(batch)
            self._batches[position] = batch
            if 0 < len(batch) < self._batch_size:
                # it reached the head: the pass reads no further (what commits meanwhile is the next pass's)
                self._batches[batch[-1].id] = ()
        return batch

    def topics_after(self, position: int) -> frozenset[str]:
        """The topics of ``after(position)``: each projection asks whether it follows any of
        them, so the batch is walked once, not once per projection."""
        topics = self._topics.get(position)
        if topics is None:
            topics = self._topics[position] = frozenset(n.topic for n in self.after(position))
        return topics

    def event(self, notification: Notification) -> DomainEventProtocol[Any]:
        event = self._events.get(notification.id)
        if event is None:
            recent = self._recent.event(notification) if self._recent is not None else None
            event = recent if recent is not None else self._app.mapper.to_domain_event(notification)
            self._events[notification.id] = event
        return event
