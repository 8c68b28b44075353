"""Settlements kept pending: a call whose caller was already served (a stream's content
relayed) and whose settlement could not be saved because the store was away (PostgreSQL
unreachable, SQLite's disk full) is settled again in the background until it lands
(docs/reliability.md, finding 4). Without it the hold would expire and the answer go
unbilled.
The same machinery keeps a plain request's *void* pending (``kind="void"``,
application/voids.py): its caller was answered 503 ``store_unavailable`` when its settlement
failed, and the void makes that answer true — the hold released, or the charge refunded when
the settlement had landed after all (docs/reliability.md, finding 5).

Invariants:
- only a transient store failure (``TRANSIENT_STORE_ERRORS``: eventsourcing's
  ``OperationalError`` and ``InterfaceError``, what the recorders raise for a lost, refused or
  full store, the PostgreSQL breaker's "not waiting" among them) keeps a settlement pending;
  any other error is the caller's to handle, as before;
- exactly once: a settlement is keyed by its request (application/billing.py ``_Settlement``:
  it settles the request's open hold, else finds the request's record and does nothing), so a
  retry after a save that did land although it was reported failed (an ambiguous commit)
  charges nothing more, and the record's id is the request id;
- retried after a bounded, doubling wait (``FIRST_WAIT_SECONDS`` up to ``MAX_WAIT_SECONDS``)
  until it lands or its hold's deadline (opened + ``TALLYHUB_HOLD_TTL_SECONDS``) would pass
  before the next try: then it is given up with an error in the log naming the request and
  the amount (the operator's reconciliation finds it), and the hold sweep releases the hold;
- a graceful shutdown gives the pending settlements what is left of its grace period
  (application/shutdown.py ``Shutdown.stopped``) before the account writer stops; the ones
  still pending then are given up the same way.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from uuid import UUID

from eventsourcing.persistence import InterfaceError, OperationalError

log = logging.getLogger("tallyhub.billing")

# The store unreachable or out of space: worth trying again once it is back.
TRANSIENT_STORE_ERRORS: tuple[type[BaseException], ...] = (OperationalError, InterfaceError)
FIRST_WAIT_SECONDS = 0.2
MAX_WAIT_SECONDS = 2.0


@dataclass(frozen=True)
class PendingSettlement:
    """One settlement to save again: ``settle`` saves it (idempotent by ``request_id``)."""

    request_id: UUID
    amount: int  # nanocredits: what the settlement charges (before the account's cap)
    deadline: float  # monotonic seconds: its hold's deadline; no try starts after it
    settle: Callable[[], Awaitable[object]]
    kind: str = "settlement"  # or "void": what the log calls it (application/voids.py)


class PendingSettlements:
    """The settlements of this process waiting for the store, each retried by a task of its own
    on the event loop that handed it over."""

    def __init__(
        self,
        *,
        first_wait: float = FIRST_WAIT_SECONDS,
        max_wait: float = MAX_WAIT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.first_wait = first_wait
        self.max_wait = max_wait
        self.clock = clock
        self._tasks: dict[UUID, asyncio.Task[None]] = {}
        self.landed = 0  # settled by a retry
        self.given_up = 0  # past their hold's deadline, or the process stopped first

    @staticmethod
    def transient(error: BaseException) -> bool:
        """Is ``error`` the store away (worth a retry), not a fault of the settlement itself?"""
        return isinstance(error, TRANSIENT_STORE_ERRORS)

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def keep(self, settlement: PendingSettlement) -> None:
        """Retry ``settlement`` in the background until it lands or its deadline passes."""
        if settlement.request_id in self._tasks:
            return  # already retried: one task per request
        log.warning(
            "the %s of request %s (%d nanocredits) could not be saved: the store is away; retrying it",
            settlement.kind,
            settlement.request_id,
            settlement.amount,
        )
        task = asyncio.get_running_loop().create_task(
            self._retry(settlement), name=f"tallyhub-settle-{settlement.request_id}"
        )
        self._tasks[settlement.request_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(settlement.request_id, None))

    async def finish(self, seconds: float) -> int:
        """The process stops: wait up to ``seconds`` for the pending settlements to land, then
        give up the rest (logged); returns how many were given up."""
        tasks = list(self._tasks.values())
        if tasks and seconds > 0:
            await asyncio.wait(tasks, timeout=seconds)
        left = [task for task in tasks if not task.done()]
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        return len(left)

    async def _retry(self, settlement: PendingSettlement) -> None:
        wait = self.first_wait
        try:
            while self.clock() + wait < settlement.deadline:
                await asyncio.sleep(wait)
                try:
                    await settlement.settle()
                except Exception as error:  # noqa: BLE001 - sorted: the store away is retried
                    if not self.transient(error):
                        self._give_up(settlement, f"it failed: {error!r}")
                        return
                    wait = min(wait * 2, self.max_wait)
                    continue
                self.landed += 1
                log.warning("the pending %s of request %s landed", settlement.kind, settlement.request_id)
                return
            self._give_up(settlement, "its hold's deadline passed with the store still away")
        except asyncio.CancelledError:
            self._give_up(settlement, "the process stopped first")
            raise

    def _give_up(self, settlement: PendingSettlement, why: str) -> None:
        self.given_up += 1
        if settlement.kind == "void":
            log.error(
                "the void of request %s (%d nanocredits) is given up (%s): it was answered 503 yet stays charged"
                " if its settlement landed, and its hold is left to the hold sweep; reconcile it",
                settlement.request_id,
                settlement.amount,
                why,
            )
            return
        log.error(
            "the settlement of request %s (%d nanocredits) is given up (%s): not charged unless a try still"
            " in flight lands; its hold is left to the hold sweep; reconcile it",
            settlement.request_id,
            settlement.amount,
            why,
        )
