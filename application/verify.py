"""``verify``: recompute what the ledger says from its events alone and compare it with
every place that repeats it.

Checked, each problem reported with the account, request or export it concerns:
- balances: each account's balance folded from its movement events (grants, adjustments,
  refunds, charges, expiries) equals the balances read model and the last running balance
  of the ledger-entries read model (and, with ``deep``, the aggregate's own state as the
  gateway loads it: its newest snapshot plus the events after it);
  ``available`` ≥ 0;
- holds: every hold is placed once and then settled, released or still open — never
  closed twice, never closed without being placed; the open ones are the read model's;
- charges: a request is charged at most once, every charge has its request record with
  the same amount, and every priced record's ``cost`` is its usage priced under the
  price-book version it names (the one rounding rule);
- replays: every applied replay's adjustments were posted;
- export logs: each kind's exports form one unbroken hash chain.
The events are read as plain stored rows (application/history_reads.py), every amount
exact however large. Read models are caught up before they are compared; if events arrive
while verify runs, it reads again (a few times) before it calls a difference a problem. A
read model stopped at an event it could not apply (projections/runner.py) is a problem,
named with that event and the error; the events are not compared with its rows.
A window of record times is verified by application/verify_window.py, with the record and
charge checks defined here (``RecordPricing`` and the problems' wording).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic

from application.event_scan import topics_of
from application.history_reads import decode, decode_exact, record_facts, rows
from application.ledger import Ledger
from domain import ids
from domain.account import Account
from domain.export_log import EXPORT_KINDS, ExportLog
from domain.pricing import ModelPrice, price_counts
from domain.replay_log import ReplayLog, adjustment_key
from domain.request_record import ChargeFacts, RequestRecord

ROUNDS = 3  # reads of the read models before a difference counts as a problem
MAX_LISTED = 50  # problems listed per check; the rest are counted


# The movements of credit and the sign each gives its amount (see projections/ledger_entries.py).
MOVEMENTS: dict[str, int] = {
    get_topic(Account.CreditGranted): 1,
    get_topic(Account.Adjusted): 1,
    get_topic(Account.ChargeRefunded): 1,
    get_topic(Account.HoldSettled): -1,
    get_topic(Account.GrantExpired): -1,
}
HOLD_PLACED, HOLD_SETTLED, HOLD_RELEASED = (
    get_topic(Account.HoldPlaced),
    get_topic(Account.HoldSettled),
    get_topic(Account.HoldReleased),
)
RECORDS = topics_of(RequestRecord.Completed)
ACCOUNT_EVENTS = topics_of(
    *(cls for cls in vars(Account).values() if isinstance(cls, type) and issubclass(cls, Account.Event))
)


@dataclass
class AccountFold:
    balance: int = 0
    movements: int = 0
    version: int = 0  # of the last event folded
    holds: dict[str, int] = field(default_factory=dict)  # request id hex -> amount held


@dataclass
class Fold:
    """What the account events say, up to ``position``."""

    position: int = 0
    accounts: dict[UUID, AccountFold] = field(default_factory=dict)
    charges: dict[str, int] = field(default_factory=dict)  # request id hex -> amount charged
    problems: list[str] = field(default_factory=list)

    def extend(self, ledger: Ledger, stop: int) -> None:
        # Keyed by the stored hex id: hashing a UUID per event costs more than folding it.
        known = {account_id.hex: (account_id, fold) for account_id, fold in self.accounts.items()}
        for _, originator, version, topic, stored in rows(
            ledger.recorder, ACCOUNT_EVENTS, after=self.position, stop=stop
        ):
            found = known.get(originator)
            if found is None:
                account_id = UUID(originator)
                found = known[originator] = (account_id, self.accounts.setdefault(account_id, AccountFold()))
            state = decode(stored)
            if type(state.get("amount")) is float or type(state.get("held")) is float:
                state = decode_exact(stored)  # beyond 64 bits: orjson made it a float
            found[1].version = version
            self._apply(found[0], found[1], topic, state)
        self.position = max(self.position, stop)

    def _apply(self, account_id: UUID, account: AccountFold, topic: str, state: dict[str, Any]) -> None:
        sign = MOVEMENTS.get(topic)
        if sign is not None:
            account.balance += sign * state["amount"]
            account.movements += 1
        request_id = state.get("request_id")
        request: str = request_id["_data_"] if type(request_id) is dict else ""
        if topic == HOLD_PLACED:
            if request in account.holds:
                self.problems.append(f"account {account_id}: request {dashed(request)} placed a second hold")
            account.holds[request] = state["amount"]
        elif topic == HOLD_RELEASED:
            if account.holds.pop(request, None) is None:
                self.problems.append(
                    f"account {account_id}: request {dashed(request)} released a hold that was not open"
                )
        elif topic == HOLD_SETTLED:
            held = account.holds.pop(request, None)  # None: charged after its hold expired (held 0)
            if held != state["held"] and not (held is None and state["held"] == 0):
                self.problems.append(
                    f"account {account_id}: request {dashed(request)} settled a hold of "
                    f"{state['held']} "
                    f"but {'none' if held is None else held} was open"
                )
            if request in self.charges:
                self.problems.append(charged_twice(account_id, request))
            self.charges[request] = state["amount"]


@dataclass
class VerifyReport:
    problems: list[str]
    checked: dict[str, Any]
    notes: list[str] = field(default_factory=list)  # what was not checked, and why

    @property
    def ok(self) -> bool:
        return not self.problems


class LedgerVerifier:
    def __init__(self, ledger: Ledger, read_models: Any) -> None:
        self.ledger = ledger
        self.read_models = read_models

    def verify(self, extra: Callable[[], list[str]] | None = None, *, deep: bool = False) -> VerifyReport:
        """Every check above; ``extra`` adds more problems (exports' files, from adapters).
        ``deep`` also loads every account aggregate as the gateway does (newest snapshot,
        then the events after it) and compares it with the independent fold, so a snapshot
        that disagrees with the events is found."""
        fold = Fold()
        fold.extend(self.ledger, self.ledger.recorder.max_notification_id() or 0)
        differences: list[str] = []
        for _ in range(ROUNDS):
            self.read_models.runner.catch_up()
            differences = self._compare_read_models(fold)
            latest = self.ledger.recorder.max_notification_id() or 0
            if not differences or latest == fold.position:
                break
            fold.extend(self.ledger, latest)  # events arrived meanwhile: compare again with them folded in
        records, record_problems = self._check_records(fold)
        problems = (
            capped("holds and charges", fold.problems)
            + capped("read models", self._stopped_read_models() + differences)
            + capped("request records", record_problems)
            + capped("accounts", self._check_aggregates(fold) if deep else [])
            + self._check_replays()
            + self._check_export_logs()
            + (extra() if extra else [])
        )
        checked = {
            "events_up_to_position": fold.position,
            "accounts": len(fold.accounts),
            "charges": len(fold.charges),
            "request_records": records,
            "open_holds": sum(len(a.holds) for a in fold.accounts.values()),
        }
        return VerifyReport(problems, checked)

    def _stopped_read_models(self) -> list[str]:
        return [
            f"read model {s.name}: stopped at event {s.stopped_at} ({s.stopped_event}), which it could not "
            f"apply: {s.error}"
            for s in self.read_models.runner.status()
            if s.state == "stopped"
        ]

    def _compare_read_models(self, fold: Fold) -> list[str]:
        problems: list[str] = []
        runner = self.read_models.runner
        with_balances, with_entries = runner.stopped("balances") is None, runner.stopped("ledger_entries") is None
        balances = {b.account_id: b for b in self.read_models.balances.list_balances()} if with_balances else {}
        closing = self.read_models.ledger.list_closing_balances() if with_entries else {}
        for account_id, account in sorted(fold.accounts.items()):
            held = sum(account.holds.values())
            row = balances.get(account_id)
            if with_balances and (row is None or (row.balance, row.held) != (account.balance, held)):
                seen = "no row" if row is None else f"balance {row.balance}, held {row.held}"
                problems.append(
                    f"account {account_id}: the events say balance {account.balance}, held {held}; "
                    f"the balances read model says {seen}"
                )
            entries = closing.get(account_id, (0, 0))
            if with_entries and entries != (account.balance, account.movements):
                problems.append(
                    f"account {account_id}: the events say balance {account.balance} after "
                    f"{account.movements} movements; the ledger entries say {entries[0]} after {entries[1]}"
                )
            if account.balance - held < 0:
                problems.append(f"account {account_id}: available is {account.balance - held}, below zero")
        for account_id in set(balances) - set(fold.accounts):
            if balances[account_id].balance or balances[account_id].held:
                problems.append(f"account {account_id}: the balances read model has money the events never moved")
        return problems

    def _check_aggregates(self, fold: Fold) -> list[str]:
        problems = []
        for account_id, account in sorted(fold.accounts.items()):
            aggregate = self.ledger.find(account_id)
            if not isinstance(aggregate, Account) or aggregate.version != account.version:
                continue  # changed since the fold: nothing to compare
            if (aggregate.balance, set(aggregate.holds)) != (account.balance, set(account.holds)):
                problems.append(
                    f"account {account_id}: the aggregate says balance {aggregate.balance} with "
                    f"{len(aggregate.holds)} holds; its events say {account.balance} with {len(account.holds)}"
                )
        return problems

    def _check_records(self, fold: Fold) -> tuple[int, list[str]]:
        problems = []
        unrecorded = dict(fold.charges)
        pricing = RecordPricing(self.ledger)
        seen = 0
        for _, request, _, _, state in rows(self.ledger.recorder, RECORDS, stop=fold.position):
            seen += 1
            facts = record_facts(state)[1]
            charged = unrecorded.pop(request, None)
            if charged is not None and charged != facts.charge:
                problems.append(charge_differs(request, charged, facts.charge))
            problem = pricing.problem(request, facts)
            if problem is not None:
                problems.append(problem)
        problems += [unrecorded_charge(request, amount) for request, amount in sorted(unrecorded.items())]
        return seen, problems

    def _check_replays(self) -> list[str]:
        log = self.ledger.find(ids.REPLAY_LOG_ID)
        if not isinstance(log, ReplayLog):
            return []
        problems = []
        for entry in log.replays:
            key = adjustment_key(entry)
            for account in entry["adjustments"]:
                if self.ledger.find(ids.receipt_id(UUID(account), "replay", key)) is None:
                    problems.append(
                        f"replay {dashed(entry['replay_id'])} (#{entry['sequence']}): its adjustment "
                        "for account "
                        f"{UUID(account)} was not posted — apply the same replay again to finish it"
                    )
        return problems

    def _check_export_logs(self) -> list[str]:
        return check_export_logs(self.ledger)


class RecordPricing:
    """The check that a priced record's ``cost`` is its usage priced under the price-book
    version it names (the one rounding rule), each (version, model) looked up once."""

    def __init__(self, ledger: Ledger) -> None:
        self.versions: dict[int | None, dict[str, Any]] = {}
        for version in ledger.price_book().versions:
            self.versions.setdefault(version["version"], version)
        self.prices: dict[tuple[int | None, str], ModelPrice | None] = {}

    def problem(self, request: str, facts: ChargeFacts) -> str | None:
        """What is wrong with the record of ``request`` (32 hex digits), or None."""
        if not facts.priced or facts.counts is None:
            return None
        key = (facts.price_book_version, facts.model)
        if key not in self.prices:
            version = self.versions.get(key[0])
            data = version["prices"].get(key[1]) if version else None
            self.prices[key] = None if data is None else ModelPrice.from_dict(data)
        price = self.prices[key]
        if price is None:
            return f"request {dashed(request)}: its price-book version {key[0]} does not price {key[1]}"
        if price_counts(price, *facts.counts) != facts.cost:
            return f"request {dashed(request)}: cost {facts.cost} is not its usage priced under version {key[0]}"
        return None


def charge_differs(request: str, charged: int, recorded: int) -> str:
    return f"request {dashed(request)}: charged {charged} but its record says {recorded}"


def unrecorded_charge(request: str, amount: int) -> str:
    return f"request {dashed(request)}: charged {amount} with no request record"


def charged_twice(account: Any, request: str) -> str:
    return f"account {account}: request {dashed(request)} was charged twice"


def check_export_logs(ledger: Ledger) -> list[str]:
    """Each kind's exports form one unbroken hash chain (read from the export logs alone)."""
    problems = []
    for kind in EXPORT_KINDS:
        log = ledger.find(ids.export_log_id(kind))
        if not isinstance(log, ExportLog):
            continue
        previous = None
        for entry in log.exports:
            if previous is not None and entry["chain_seed"] != previous["chain_head"]:
                problems.append(
                    f"{kind} export {entry['export_id']}: its chain does not start where export "
                    f"{previous['export_id']} ended"
                )
            previous = entry
    return problems


def dashed(hex_id: Any) -> str:
    """An id the events keep as 32 hex digits in the form every output shows (a dashed UUID)."""
    if not isinstance(hex_id, str) or len(hex_id) != 32:
        return str(hex_id)
    return f"{hex_id[:8]}-{hex_id[8:12]}-{hex_id[12:16]}-{hex_id[16:20]}-{hex_id[20:]}"


def capped(what: str, problems: list[str]) -> list[str]:
    if len(problems) <= MAX_LISTED:
        return problems
    return problems[:MAX_LISTED] + [f"… and {len(problems) - MAX_LISTED} more problems with {what}"]
