"""``verify --from --to``: the checks one window of record times allows, read from the
window's own events, in time proportional to the window rather than to the whole history.

A request is the window's when its record's time is in ``[since, until)`` (each record's own
time decides, exactly, as for replay and export); a charge with no record is the window's
when its own time is. For the window's requests:
- each is charged at most once, and its charge (the account's ``HoldSettled`` for it) is the
  amount its record says; a record that held credit (``hold`` > 0: credits mode, where a
  completed request is always charged) with no charge is a problem, and so is a charge of
  the window with no record;
- every priced record's cost is its usage priced under the price-book version it names (the
  full verify's own check: application/verify.py ``RecordPricing``);
- a request's refunds add up to at most its charge;
and each kind's exports form one unbroken hash chain (the export logs, as the full verify).
Balances, holds, the read models, replays' postings and export files need the whole
history: they are not checked here, and the report's notes say so.

How the window's charges are found without reading the whole history. The records come
through the index by event time (application/history_reads.py ``rows_in_window``). A
request's charge is written in the same transaction as its record, before it: the
settlement (application/billing.py ``_Settlement.settle``) charges the account and returns
the record, and an account change and what it returns are saved by one ``save`` — in a
group-commit batch (application/group_commit.py ``_commit``: the batch's accounts, then the
aggregates their commands returned) or alone (application/ledger.py ``change``). Neither
store puts another transaction's events among one transaction's positions (SQLite has one
writer at a time; eventsourcing's PostgreSQL recorder inserts under an EXCLUSIVE table
lock), so a charge lies among its record's transaction's positions: about a thousand for a
batch of 512 commands. The charges are read from the positions of the window's
records widened by ``MARGIN`` on each side. That is only what makes it fast; what makes it
right does not rely on it: a record whose charge is not among them is not called uncharged
until the range has been widened again (doubling) to where its charge is found, or to the
whole history. So a correct ledger never gets a false problem, whatever the size of its
transactions, and only a ledger with a problem (or a transaction beyond the margin) costs
more than its window. A charge of the window whose record is not in the window is looked up
by its request id (one indexed read) before it is called unrecorded: its record may be
stamped just outside the window's times.

Said plainly, what a window cannot see: a second charge of a window's request written far
from it (beyond the positions read), and a charge with no record that lies outside those
positions (a window with no records reads no charges). The full verify proves "at most once"
and "recorded" over all time; the writers make it so (a charge is only written with its
request's record, and the store refuses a second record of a request). Refunds are read
all, through their own index (they are few, and come any time after their charge).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from application.event_scan import last_position, time_of, topics_of
from application.history_reads import decode, decode_exact, record_facts, rows, rows_in_window
from application.ledger import Ledger
from application.verify import (
    HOLD_SETTLED,
    RECORDS,
    RecordPricing,
    VerifyReport,
    capped,
    charge_differs,
    charged_twice,
    check_export_logs,
    dashed,
    unrecorded_charge,
)
from domain.account import Account
from domain.errors import InvalidRequest
from domain.request_record import ChargeFacts

(COMPLETED,) = RECORDS
(REFUNDED,) = topics_of(Account.ChargeRefunded)
# Positions read on each side of the window's records: a transaction's span (see the module
# docstring); a group-commit batch of 512 holds or settlements with their records is ~1,000 events.
MARGIN = 4_000
NOT_CHECKED = (
    "a window checks its own requests only: balances, holds, the read models' totals and replays' postings "
    "need the whole history; run verify without a window for them"
)


@dataclass(frozen=True)
class VerifyWindow:
    """``[since, until)`` of record times, either end open; times without a zone are UTC."""

    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC))
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise InvalidRequest("the verify window's start must be before its end", param="from")

    @classmethod
    def of(cls, since: datetime | None, until: datetime | None) -> VerifyWindow | None:
        """The window, or None when neither end is given (verify the whole history)."""
        return None if since is None and until is None else cls(since, until)

    def contains(self, at: datetime) -> bool:
        return (self.since is None or at >= self.since) and (self.until is None or at < self.until)

    def to_json(self) -> dict[str, str | None]:
        return {
            "from": self.since.isoformat() if self.since else None,
            "to": self.until.isoformat() if self.until else None,
        }


@dataclass(frozen=True)
class _Record:
    position: int
    facts: ChargeFacts
    held: bool  # a hold was placed for it: credits mode, so it must have been charged


@dataclass(frozen=True)
class _Charge:
    position: int
    account: str  # 32 hex digits
    amount: int
    timestamp: Any  # as stored; parsed only when the charge's own time decides


@dataclass
class _Charges:
    """The charges in positions ``(after, last]``, each read once, by request (32 hex digits)."""

    ledger: Ledger
    after: int = 0
    last: int = 0
    started: bool = False
    by_request: dict[str, list[_Charge]] = field(default_factory=dict)

    def widen(self, after: int, last: int) -> None:
        """Read the charges in ``(after, last]`` not read yet (the range only ever grows)."""
        if not self.started:
            self._read(after, last)
            self.after, self.last, self.started = after, last, True
            return
        self._read(after, self.after)
        self._read(self.last, last)
        self.after, self.last = min(after, self.after), max(last, self.last)

    def _read(self, after: int, last: int) -> None:
        if after >= last:
            return
        for position, account, _, _, stored in rows(self.ledger.recorder, (HOLD_SETTLED,), after=after, stop=last):
            state = decode(stored)
            if type(state.get("amount")) is float:
                state = decode_exact(stored)  # beyond 64 bits: orjson made it a float
            request_id = state.get("request_id")
            request = request_id["_data_"] if type(request_id) is dict else ""
            charge = _Charge(position, account, state["amount"], state.get("timestamp"))
            self.by_request.setdefault(request, []).append(charge)


class WindowVerifier:
    def __init__(self, ledger: Ledger, *, margin: int = MARGIN) -> None:
        self.ledger = ledger
        self.margin = margin

    def verify(self, window: VerifyWindow) -> VerifyReport:
        """Every check of the module docstring over ``window``'s requests, up to the last position now."""
        stop = last_position(self.ledger.recorder)
        pricing = RecordPricing(self.ledger)
        records: dict[str, _Record] = {}
        priced_problems: list[str] = []
        for position, request, _, _, state in rows_in_window(
            self.ledger.recorder, COMPLETED, window.since, window.until, stop=stop
        ):
            data, facts = record_facts(state)
            if not window.contains(time_of(data["timestamp"])):
                continue  # the index is a coarse filter: the record's own time decides
            records[request] = _Record(position, facts, bool(data["details"].get("hold")))
            problem = pricing.problem(request, facts)
            if problem is not None:
                priced_problems.append(problem)
        charges = self._charges_of(records, stop)
        refunds = self._refunds(records, stop)
        problems = (
            capped(
                "charges",
                self._check_charges(records, charges.by_request, refunds)
                + self._check_unrecorded(window, records, charges.by_request),
            )
            + capped("request records", priced_problems)
            + check_export_logs(self.ledger)
        )
        checked = {
            "events_up_to_position": stop,
            "accounts": len({record.facts.account_id for record in records.values()}),
            "charges": sum(1 for request in records if request in charges.by_request),
            "request_records": len(records),
            "open_holds": None,  # holds need the whole history: not checked
            "refunds": sum(1 for request in records if request in refunds),
            "positions_read": {"after": charges.after, "last": charges.last},
            "window": window.to_json(),
        }
        return VerifyReport(problems, checked, [NOT_CHECKED])

    def _charges_of(self, records: dict[str, _Record], stop: int) -> _Charges:
        """The charges around the records' positions, widened until every record that must
        have been charged has its charge, or the whole history has been read."""
        charges = _Charges(self.ledger)
        if not records:
            return charges
        positions = [record.position for record in records.values()]
        charges.widen(max(0, min(positions) - 1 - self.margin), min(stop, max(positions) + self.margin))
        width = max(self.margin, 1)
        while (charges.after > 0 or charges.last < stop) and any(
            record.held and request not in charges.by_request for request, record in records.items()
        ):
            charges.widen(max(0, charges.after - width), min(stop, charges.last + width))
            width *= 2
        return charges

    def _refunds(self, records: dict[str, _Record], stop: int) -> dict[str, int]:
        """What each of ``records``' requests was refunded in all."""
        refunded: dict[str, int] = {}
        for *_, stored in rows_in_window(self.ledger.recorder, REFUNDED, None, None, stop=stop):
            state = decode(stored)
            if type(state.get("amount")) is float:
                state = decode_exact(stored)
            request = state["request_id"]["_data_"]
            if request in records:
                refunded[request] = refunded.get(request, 0) + state["amount"]
        return refunded

    @staticmethod
    def _check_charges(
        records: dict[str, _Record], charges: dict[str, list[_Charge]], refunds: dict[str, int]
    ) -> list[str]:
        problems: list[str] = []
        for request, record in sorted(records.items(), key=lambda item: item[1].position):
            found = charges.get(request, [])
            problems += [charged_twice(UUID(charge.account), request) for charge in found[1:]]
            if found and found[-1].amount != record.facts.charge:
                problems.append(charge_differs(request, found[-1].amount, record.facts.charge))
            elif not found and record.held:
                problems.append(
                    f"request {dashed(request)}: its record says charged {record.facts.charge}, "
                    "but its account has no charge for it"
                )
            charged = sum(charge.amount for charge in found)
            if refunds.get(request, 0) > charged:
                problems.append(
                    f"request {dashed(request)}: refunded {refunds[request]}, more than its charge {charged}"
                )
        return problems

    def _check_unrecorded(
        self, window: VerifyWindow, records: dict[str, _Record], charges: dict[str, list[_Charge]]
    ) -> list[str]:
        """The window's charges (by their own time) whose request has no record at all."""
        problems: list[str] = []
        for request, found in sorted(charges.items(), key=lambda item: item[1][0].position):
            if request in records or not _any_within(window, found):
                continue
            if self._has_record(request):
                continue  # recorded outside the window's times: that window checks it
            problems += [charged_twice(UUID(charge.account), request) for charge in found[1:]]
            problems.append(unrecorded_charge(request, found[-1].amount))
        return problems

    def _has_record(self, request: str) -> bool:
        try:
            request_id = UUID(request)
        except ValueError:
            return False
        found = self.ledger.recorder.select_events(request_id, limit=1)
        return bool(found) and found[0].topic == COMPLETED


def _any_within(window: VerifyWindow, charges: Iterable[_Charge]) -> bool:
    return any(charge.timestamp is not None and window.contains(time_of(charge.timestamp)) for charge in charges)
