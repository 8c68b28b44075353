"""A process's graceful shutdown: drain the requests in flight, then cut what is left.

``begin()`` (SIGTERM or SIGINT, wired by adapters/http/drain.py) starts the drain. From then
on the process takes no new request (answered 503 ``shutting_down``) and ``GET /ready``
fails its ``shutdown`` check, so a load balancer stops sending; the requests already in
flight, plain answers and streams, run on and are completed and charged as usual.
``grace_seconds`` (``TALLYHUB_SHUTDOWN_GRACE_SECONDS``) after ``begin()`` the requests still
running are cut: ``cutting`` is set, then each one is cancelled (its task). What a
cancelled call is recorded as is decided here (``cancelled_as``):

- cut by this shutdown: 503 ``shutting_down``. A call that produced nothing is failed, its
  hold released, nothing charged; a stream that delivered output is charged for the output
  delivered only (no prompt), as a stream the provider broke is (application/streams.py):
  the caller pays for nothing it did not get;
- any other cancellation (the caller went away): 499 ``client_disconnected``, as before.

Invariants: a request admitted before the drain is never refused by it; ``cutting`` is set
before any cancellation is delivered, so no call this shutdown cut is recorded as its
caller gone; ``drain()`` and ``stopped()`` return only once every tracked request has left
(closed through the billed call: completed or failed, its hold settled or released) or a
bounded wait ran out, so the account writer, stopped after them, flushes their settlements.
A request that still has not left by then (a thread that cannot be cancelled) keeps its
hold until the hold sweep releases it after ``TALLYHUB_HOLD_TTL_SECONDS``: never lost.
Settlements the store failed after their caller was served (``pending``:
application/pending_settlements.py) get what is left of the grace period (all of it when no
drain began) in ``stopped()``, before the account writer stops; the ones still pending are
then given up, logged.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from application.readiness import Check, CheckResult

log = logging.getLogger("tallyhub.shutdown")

DEFAULT_GRACE_SECONDS = 30.0
SHUTTING_DOWN = "shutting_down"
SHUTDOWN_STATUS = 503
CLIENT_GONE_STATUS = 499
CLIENT_GONE = "client_disconnected"
SETTLE_SECONDS = 10.0  # how long a cut request may take to record its ending


class Cancellable(Protocol):
    """One request in flight (adapters/http/drain.py: its task, cancelled only when cut)."""

    def cancel(self) -> object: ...


class PendingWork(Protocol):
    """Work the requests left behind (application/pending_settlements.py ``PendingSettlements``)."""

    async def finish(self, seconds: float) -> int: ...


@dataclass(frozen=True)
class DrainReport:
    in_flight: int  # requests running when the drain began
    cut: int  # of them, cut at the deadline
    unsettled: int  # cut, and still not closed after SETTLE_SECONDS


class Shutdown:
    """The drain of one process: the requests in flight, and whether they are being cut."""

    def __init__(
        self, grace_seconds: float = DEFAULT_GRACE_SECONDS, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.grace_seconds = grace_seconds
        self.clock = clock
        self.began_at: float | None = None
        self.cutting = False
        self._in_flight: set[Cancellable] = set()
        self._waiters: list[asyncio.Event] = []  # one per wait, made in the waiter's own loop
        self.pending: PendingWork | None = None  # settlements waiting for the store: given the grace left

    @property
    def draining(self) -> bool:
        return self.began_at is not None

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def enter(self, request: Cancellable) -> bool:
        """A request arrives: tracked until it ``leave``s (True), or refused while draining (False)."""
        if self.began_at is not None:
            return False
        self._in_flight.add(request)
        return True

    def leave(self, request: Cancellable) -> None:
        self._in_flight.discard(request)
        if not self._in_flight:
            for waiter in self._waiters:
                waiter.set()

    def begin(self) -> None:
        """Stop taking requests; the grace period starts now (once)."""
        if self.began_at is None:
            self.began_at = self.clock()
            log.info(
                "shutting down: %d request(s) in flight get up to %g s to finish", self.in_flight, self.grace_seconds
            )

    async def drain(self) -> DrainReport:
        """``begin()``, wait for the requests in flight until the grace period ends, cut the
        ones still running, and wait (bounded) until they have recorded their ending."""
        self.begin()
        assert self.began_at is not None
        in_flight = self.in_flight
        remaining = self.began_at + self.grace_seconds - self.clock()
        if await self._wait_idle(remaining):
            if in_flight:
                log.info("drained: the %d request(s) in flight finished", in_flight)
            return DrainReport(in_flight, 0, 0)
        cut = self.cut()
        unsettled = 0 if await self._wait_idle(SETTLE_SECONDS) else self.in_flight
        if unsettled:
            log.error("%d cut request(s) did not close; their holds are left to the hold sweep", unsettled)
        return DrainReport(in_flight, cut, unsettled)

    async def stopped(self) -> None:
        """The process stops (the app's lifespan ends): whatever still runs is cut now, and
        waited for (bounded), before the account writer is stopped. Without a ``begin()``
        (an app run in process by tests) nothing else changes: the same services may serve
        another app."""
        if self._in_flight:
            self.cut()
            await self._wait_idle(SETTLE_SECONDS)
        if self.pending is not None:
            left = self.grace_seconds if self.began_at is None else self.began_at + self.grace_seconds - self.clock()
            await self.pending.finish(left)

    def cut(self) -> int:
        """Cancel every request still running, as cut by the shutdown; returns how many."""
        self.cutting = True  # first: the cancelled calls ask ``cancelled_as`` how to end
        running = list(self._in_flight)
        if running:
            log.warning(
                "cutting %d request(s) still running after %g s: 503 shutting_down", len(running), self.grace_seconds
            )
        for request in running:
            request.cancel()
        return len(running)

    def cancelled_as(self) -> tuple[int, str]:
        """The status and error code a cancelled call is recorded with (the module's rule)."""
        if self.cutting:
            return SHUTDOWN_STATUS, SHUTTING_DOWN
        return CLIENT_GONE_STATUS, CLIENT_GONE

    async def _wait_idle(self, seconds: float) -> bool:
        if not self._in_flight:
            return True
        if seconds <= 0:
            return False
        idle = asyncio.Event()
        self._waiters.append(idle)
        try:
            await asyncio.wait_for(idle.wait(), seconds)
        except TimeoutError:
            return not self._in_flight
        finally:
            self._waiters.remove(idle)
        return True


def shutdown_check(shutdown: Shutdown) -> Check:
    """For ``GET /ready``: fails from the moment the drain begins."""

    def run() -> CheckResult:
        if not shutdown.draining:
            return CheckResult(True)
        return CheckResult(
            False,
            "shutting down: taking no new requests",
            {"in_flight": shutdown.in_flight, "cutting": shutdown.cutting},
        )

    return Check("shutdown", run, "the shutdown state cannot be checked")
