"""Which holds may start their upstream call before they are saved.

A hold is always decided by the account's writer, in order with every other change of the
account, and no answer is given before it is durable. Waiting for that before even calling
the upstream costs each request one group-commit round trip; the gate lets a request call
at once when this process already knows its hold will fit: the account's available
credit after the writer's last saved batch, less what this process has in flight, covers
it, no spend cap applies to the account, and no grant deadline has passed since. In flight
is every hold and every settlement the event loop has handed to the writer and not yet
seen answered; a settlement may charge more than its hold (a provider that reports more
than the worst case), so its whole cost is counted until then.

Invariant: the gate only ever says yes on what the writer will decide the same way, as far
as this process can see (tests/property/test_hold_gate_rules.py: any sequence of the request
path's changes, and no admitted hold is ever refused). What it does not see — a debit made
meanwhile outside the request path (an operator's adjustment or a refunded payment, through
the CLI, the admin API or the payments webhook) or a change by another process (a second
``serve``) — may still refuse the hold; the caller then abandons its call, unanswered and
uncharged (application/billing.py). Accounts the writer has not saved lately, or whose
batch the store refused, are not known here: their requests wait for the durable hold, as
without the gate.

A hold the gate admits for a whole answer (a request answered only after its settlement)
need not be saved on its own at all: it is *deferred* (``defers``) and placed by the
request's closing change, in the settlement's (or release's) own transaction, so the
request costs one commit instead of two (docs/design/no-overdraft-and-fast.md). Until
that change runs, the hold is a reservation here: the gate counts it against the room like
a hold in flight, and the writer counts it against the account when it decides any other
hold of this process (``leaves_room``), so a hold decided meanwhile never takes the credit
a deferred hold was admitted on (tests/property/test_deferred_hold_rules.py). What that
does not cover is what the gate cannot see anyway (another process, a debit outside the
request path, a grant's expiry applied by the sweeper), and a settlement this process hands
over that charges more than its hold: the deferred hold is then refused when it is placed,
the answer withheld and nothing charged (application/billing.py). A hold whose account has
a grant deadline within the hold's lifetime is never deferred (the expiry could take its
credit); it is saved first.
"""

import asyncio
import threading
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, NamedTuple
from uuid import UUID

KNOWN_ACCOUNTS = 10_000  # accounts known at once (all forgotten when it would be passed)


class Room(NamedTuple):
    available: int  # balance less open holds, after the writer's last saved batch
    until: datetime | None  # the soonest grant deadline then: past it, nothing is known


class HoldGate:
    def __init__(self) -> None:
        self._known: dict[UUID, Room] = {}  # written by the writer thread, read on the event loop
        self._unsaved: dict[UUID, int] = {}  # holds and settlements in flight, by account (event loop only)
        # deferred holds not yet placed, by account: added on the event loop, taken off by the
        # closing change on the writer's thread (or a worker thread), so under a lock
        self._deferred: dict[UUID, int] = {}
        self._deferred_lock = threading.Lock()

    # --- the writer's side (its thread) ------------------------------------------

    def saved(self, accounts: Iterable[Any]) -> None:
        """The writer saved these accounts: what they can still hold, as of now."""
        if len(self._known) > KNOWN_ACCOUNTS:
            self._known = {}
        for account in accounts:
            if account.has_spend_caps:
                self._known.pop(account.id, None)
            else:
                self._known[account.id] = Room(account.available, account.next_expiry)

    def forget(self, account_ids: Iterable[UUID]) -> None:
        """The writer no longer trusts what it held of these accounts (a refused batch)."""
        for account_id in account_ids:
            self._known.pop(account_id, None)

    # --- the caller's side (the event loop), and the deferred holds' reservations ------

    def admits(self, account_id: UUID, amount: int, now: datetime) -> bool:
        return self._fits(self._known.get(account_id), account_id, amount, now)

    def defers(self, account_id: UUID, amount: int, now: datetime, lifetime: timedelta) -> "Reservation | None":
        """Admit a hold to be placed by its request's closing change (module docstring): its
        reservation, or None when it must be saved first (not admitted, or a grant deadline
        falls within ``lifetime``, the hold's time to live)."""
        room = self._known.get(account_id)  # read once: the writer may replace it meanwhile
        if room is None or not self._fits(room, account_id, amount, now):
            return None
        if room.until is not None and room.until <= now + lifetime:
            return None
        with self._deferred_lock:
            self._deferred[account_id] = self._deferred.get(account_id, 0) + amount
        return Reservation(self, account_id, amount)

    def _fits(self, room: Room | None, account_id: UUID, amount: int, now: datetime) -> bool:
        if room is None or (room.until is not None and now >= room.until):
            return False
        in_flight = self._unsaved.get(account_id, 0) + self._deferred.get(account_id, 0)
        return amount + in_flight <= room.available

    def reserved(self, account_id: UUID) -> int:
        """What deferred holds of this process still reserve on the account (any thread)."""
        return self._deferred.get(account_id, 0)

    def leaves_room(self, account: Any, amount: int, now: datetime) -> bool:
        """Whether a hold of ``amount`` placed at ``now`` fits the account's current state beside
        what deferred holds of this process reserve on it (the writer's side, deciding any other
        hold): the credit of grants past their deadline at ``now`` is not counted, as the hold's
        own guard does not count it and its placing takes it away."""
        reserved = self._deferred.get(account.id, 0)
        if not reserved:
            return True
        due: int = sum(account.lots[grant].remaining for grant in account.due_grants(now))
        available: int = account.available
        return amount <= available - due - reserved

    def release(self, reservation: "Reservation") -> None:
        """A deferred hold no longer reserves anything here (placed, or its request closed); once."""
        with self._deferred_lock:
            if reservation.released:
                return
            reservation.released = True
            left = self._deferred.get(reservation.account_id, 0) - reservation.amount
            if left > 0:
                self._deferred[reservation.account_id] = left
            else:
                self._deferred.pop(reservation.account_id, None)

    def track(self, account_id: UUID, amount: int, durable: "asyncio.Future[bool]") -> None:
        """Count a hold (its amount) or a settlement (its cost) of this process until the
        writer has answered for it."""
        if amount:  # nothing to count for a free request; only positive amounts are summed
            self._unsaved[account_id] = self._unsaved.get(account_id, 0) + amount

        def answered(future: "asyncio.Future[bool]") -> None:
            if not future.cancelled():
                future.exception()  # a refusal is its caller's to report, not the loop's to log
            if not amount:
                return
            left = self._unsaved[account_id] - amount
            if left:
                self._unsaved[account_id] = left
            else:
                del self._unsaved[account_id]

        durable.add_done_callback(answered)


class Reservation:
    """A deferred hold's place in the gate until its request's closing change runs, which
    releases it when it places the hold (or records the request without it); released again,
    as a backstop that does nothing by then, once that change is answered, whatever became of it."""

    __slots__ = ("_gate", "account_id", "amount", "released")

    def __init__(self, gate: HoldGate, account_id: UUID, amount: int) -> None:
        self._gate, self.account_id, self.amount = gate, account_id, amount
        self.released = False

    def release(self) -> None:
        self._gate.release(self)
