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
"""

import asyncio
from collections.abc import Iterable
from datetime import datetime
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

    # --- the caller's side (the event loop) ----------------------------------------

    def admits(self, account_id: UUID, amount: int, now: datetime) -> bool:
        room = self._known.get(account_id)
        if room is None or (room.until is not None and now >= room.until):
            return False
        return amount + self._unsaved.get(account_id, 0) <= room.available

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
