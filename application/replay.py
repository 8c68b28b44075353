"""Replay: recompute the charges of a window from their recorded usage under another
price book, report the difference per account and model, and (on request) post it.

Invariants kept here:
- a preview writes nothing; it reads the request records (the truth, not a read model);
  a window's records are found through the store's index by event time
  (application/history_reads.py), so a day's replay reads that day's rows (and the
  refunds), however long the history; each record's own time still decides, exactly;
- a charge's *old* price is what it stands at now: the price of the last applied replay
  covering it (domain/replay_log.py), else the ``cost`` its record names — so replaying
  the original prices gives a difference of exactly 0, and a replay applied twice finds
  nothing left to post the second time;
- the *new* price is ``price_usage`` of the recorded usage, the one rounding rule, once
  per charge; differences are exact integers of nanocredits;
- a charge that was refunded is left out (its money went back already) and counted;
- applying records the replay in the ReplayLog first (so a concurrent replay over the
  same charges is recomputed against it), then posts one adjustment per account under
  the entry's idempotency key, so a crash in between is finished by the next apply and
  nothing is posted twice;
- every model charged in the window must be priced by the new book, and every model of
  the book must be PROVIDER/MODEL of a registered provider: a replay never prices at zero.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.persistence import IntegrityError

from application.accounts import Accounts
from application.event_scan import Progress, time_of, topics_of
from application.history_reads import decode, record_facts, rows, rows_in_window
from application.ledger import Ledger
from domain import ids
from domain.account import Account
from domain.bounds import MAX_AMOUNT
from domain.errors import EmptyWindow, InvalidRequest
from domain.money import format_credits
from domain.pricing import ModelPrice, price_counts
from domain.replay_log import ReplayLog, adjustment_key, covers
from domain.request_record import ChargeFacts, RecordedCounts, RequestRecord

MAX_APPLY_ATTEMPTS = 5
MEMO_LIMIT = 100_000  # distinct (model, counts) priced once each; beyond, each is priced again
(COMPLETED,), (REFUNDED,) = topics_of(RequestRecord.Completed), topics_of(Account.ChargeRefunded)


@dataclass(frozen=True)
class ReplayPlan:
    """What to replay: a complete price book, over ``[since, until)`` (record times), one account or all."""

    prices: dict[str, ModelPrice]
    since: datetime | None = None
    until: datetime | None = None
    account_id: UUID | None = None

    def __post_init__(self) -> None:
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None:
                utc = (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
                object.__setattr__(self, name, utc)
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise InvalidRequest("the replay window's start must be before its end", param="from")

    def replay_id(self, sequence: int) -> str:
        """Names this plan applied as the log's ``sequence``-th replay."""
        canonical = json.dumps(
            {
                "prices": {model: price.to_dict() for model, price in sorted(self.prices.items())},
                "from": self.since.isoformat() if self.since else None,
                "to": self.until.isoformat() if self.until else None,
                "account": self.account_id.hex if self.account_id else None,
                "sequence": sequence,
            },
            sort_keys=True,
        )
        return uuid5(ids.NAMESPACE, "replay:" + canonical).hex

    @property
    def prices_sha256(self) -> str:
        text = json.dumps({m: p.to_dict() for m, p in sorted(self.prices.items())}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class ReplayLine:
    account_id: UUID
    model: str
    charges: int = 0
    old: int = 0
    new: int = 0

    @property
    def difference(self) -> int:
        return self.new - self.old


@dataclass(frozen=True)
class PostedAdjustment:
    account_id: UUID
    requested: int  # minus the difference: a dearer replay debits, a cheaper one credits
    applied: int  # a debit never overdraws, so it may be less than requested
    posted: bool  # False when it had been posted before (idempotency key seen)


@dataclass
class ReplayReport:
    plan: ReplayPlan
    lines: list[ReplayLine]
    charges: int
    refunded_skipped: int
    last_position: int
    replay_id: str | None = None  # set once applied
    sequence: int | None = None
    applied: bool = False
    adjustments: list[PostedAdjustment] = field(default_factory=list)

    @property
    def old(self) -> int:
        return sum(line.old for line in self.lines)

    @property
    def new(self) -> int:
        return sum(line.new for line in self.lines)

    @property
    def difference(self) -> int:
        return self.new - self.old

    def differences_by_account(self) -> dict[UUID, int]:
        totals: dict[UUID, int] = {}
        for line in self.lines:
            totals[line.account_id] = totals.get(line.account_id, 0) + line.difference
        return {account: amount for account, amount in totals.items() if amount}


def _check_postable(due: dict[UUID, int]) -> None:
    """Refuse, before anything is recorded, a replay an account could not be adjusted by in one
    movement (domain/bounds.py): recorded, it would stay pending and refused for ever."""
    too_large = sorted(account for account, amount in due.items() if abs(amount) > MAX_AMOUNT)
    if too_large:
        raise InvalidRequest(
            f"this replay would adjust {len(too_large)} account(s) (first {too_large[0]}) by more than "
            f"{format_credits(MAX_AMOUNT)} credits, the largest single movement; replay a shorter window "
            "(from/to) or one account at a time",
            param="prices",
        )


class Replayer:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def preview(self, plan: ReplayPlan, progress: Progress | None = None) -> ReplayReport:
        """The report of ``plan``, computed against the replays applied so far. Writes nothing."""
        return self._compute(plan, self._log_entries(), progress)

    def apply(self, plan: ReplayPlan, progress: Progress | None = None) -> ReplayReport:
        """Post ``plan``'s differences as adjustments, once. Finishes any earlier replay a
        crash left half posted first, so the differences are computed against settled ground."""
        self.post_pending()
        for _ in range(MAX_APPLY_ATTEMPTS):
            log = self.ledger.find(ids.REPLAY_LOG_ID)
            entries = list(log.replays) if isinstance(log, ReplayLog) else []
            report = self._compute(plan, entries, progress)
            due = {account: -difference for account, difference in report.differences_by_account().items()}
            if not due:
                return report  # nothing stands at another price: nothing to record or post
            _check_postable(due)
            log = log if isinstance(log, ReplayLog) else ReplayLog()
            sequence = len(entries) + 1
            entry = log.record_applied(
                replay_id=plan.replay_id(sequence),
                prices={model: price.to_dict() for model, price in sorted(plan.prices.items())},
                since=plan.since,
                until=plan.until,
                account_id=plan.account_id.hex if plan.account_id else None,
                adjustments={account.hex: amount for account, amount in due.items()},
                charges=report.charges,
                last_position=report.last_position,
                at=self.ledger.clock.now(),
            )
            try:
                self.ledger.save(log)
            except IntegrityError:
                continue  # another replay was applied meanwhile: recompute against it
            report.replay_id, report.sequence, report.applied = entry["replay_id"], sequence, True
            report.adjustments = self._post(entry)
            return report
        raise InvalidRequest("other replays kept being applied at the same time; try again")

    def post_pending(self) -> list[PostedAdjustment]:
        """Post every recorded replay adjustment not posted yet (idempotent)."""
        posted: list[PostedAdjustment] = []
        for entry in self._log_entries():
            posted += [adjustment for adjustment in self._post(entry) if adjustment.posted]
        return posted

    def list_applied(self) -> list[dict[str, Any]]:
        return self._log_entries()

    def _post(self, entry: dict[str, Any]) -> list[PostedAdjustment]:
        key = adjustment_key(entry)
        reason = f"replay {UUID(entry['replay_id'])} (#{entry['sequence']}): re-priced charges under a new price book"
        done = []
        for account_hex, amount in entry["adjustments"].items():
            result = Accounts(self.ledger).post_replay_adjustment(UUID(account_hex), amount, reason, key)
            done.append(PostedAdjustment(UUID(account_hex), amount, result.amount, result.credited))
        return done

    def _log_entries(self) -> list[dict[str, Any]]:
        log = self.ledger.find(ids.REPLAY_LOG_ID)
        return list(log.replays) if isinstance(log, ReplayLog) else []

    def _compute(self, plan: ReplayPlan, entries: list[dict[str, Any]], progress: Progress | None) -> ReplayReport:
        if not plan.prices:
            raise InvalidRequest("the replay's price book prices no model", param="prices")
        self.ledger.check_models_known(plan.prices)
        recorder = self.ledger.recorder
        stop = recorder.max_notification_id() or 0
        refunded = {
            decode(state)["request_id"]["_data_"]
            for *_, state in rows_in_window(recorder, REFUNDED, None, None, stop=stop)
        }
        pricer = _Pricer(plan.prices, entries)
        account = plan.account_id.hex if plan.account_id else None
        lines: dict[tuple[str, str], ReplayLine] = {}
        unpriced: dict[str, int] = {}
        charges = skipped = 0
        windowed = plan.since is not None or plan.until is not None
        records = (
            rows_in_window(recorder, COMPLETED, plan.since, plan.until, stop=stop, progress=progress)
            if windowed
            else rows(recorder, (COMPLETED,), stop=stop, progress=progress)
        )
        for position, request, _, _, state in records:
            data, facts = record_facts(state)
            counts = facts.counts
            if counts is None or (account is not None and facts.account_id != account):
                continue
            at = time_of(data["timestamp"]) if windowed or entries else None
            if (
                at is not None
                and windowed
                and ((plan.since is not None and at < plan.since) or (plan.until is not None and at >= plan.until))
            ):
                continue
            if refunded and request in refunded:
                skipped += 1
                continue
            model = facts.model
            if model not in plan.prices:
                unpriced[model] = unpriced.get(model, 0) + 1
                continue
            line = lines.get((facts.account_id, model))
            if line is None:
                line = lines[(facts.account_id, model)] = ReplayLine(UUID(facts.account_id), model)
            line.charges += 1
            line.old += pricer.old(facts, counts, at, position)
            line.new += pricer.new(model, counts)
            charges += 1
        if unpriced:
            missing = ", ".join(f"{model} ({count} charges)" for model, count in sorted(unpriced.items()))
            raise InvalidRequest(
                f"the price book has no price for models charged in the window: {missing}", param="prices"
            )
        if not charges:
            raise EmptyWindow(
                "no charges to replay in this window"
                + (" for this account" if account else "")
                + (f" ({skipped} refunded charges left out)" if skipped else "")
            )
        ordered = sorted(lines.values(), key=lambda line: (line.account_id.hex, line.model))
        return ReplayReport(plan, ordered, charges, skipped, stop)


class _Pricer:
    """Prices usage counts under the new book and under earlier replays, memoised per
    distinct (model, counts): history repeats itself, and the arithmetic is exact either way.
    The memo stops growing at ``MEMO_LIMIT`` entries: a history of distinct usages would
    otherwise keep every charge's counts in memory."""

    def __init__(self, prices: dict[str, ModelPrice], entries: list[dict[str, Any]]) -> None:
        self.prices = prices
        self.entries = entries
        self._new: dict[tuple[str, RecordedCounts], int] = {}
        self._earlier: dict[tuple[int, str, RecordedCounts], int] = {}

    def new(self, model: str, counts: RecordedCounts) -> int:
        key = (model, counts)
        found = self._new.get(key)
        if found is None:
            found = price_counts(self.prices[model], *counts)
            if len(self._new) < MEMO_LIMIT:
                self._new[key] = found
        return found

    def old(self, facts: ChargeFacts, counts: RecordedCounts, at: datetime | None, position: int) -> int:
        for index in range(len(self.entries) - 1, -1, -1):
            entry = self.entries[index]
            assert at is not None  # read for every charge when there are replays
            if facts.model in entry["prices"] and covers(entry, facts.account_id, at, position):
                key = (index, facts.model, counts)
                found = self._earlier.get(key)
                if found is None:
                    price = ModelPrice.from_dict(entry["prices"][facts.model])
                    found = price_counts(price, *counts)
                    if len(self._earlier) < MEMO_LIMIT:
                        self._earlier[key] = found
                return found
        return int(facts.cost)
