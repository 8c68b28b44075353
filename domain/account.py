"""An account's credit: the consistency boundary of the no-overdraft rule.

Invariants (checked by tests/property/test_account_rules.py):
- ``balance = grants − charges + refunds ± adjustments − expired``;
- ``available = balance − sum(open holds) ≥ 0`` after every event: a hold is refused
  when it would exceed ``available`` and a settlement never charges more than the
  account can pay (the shortfall is recorded as ``uncollected``, never as debt);
- a hold is settled or released at most once: both remove it, and a second attempt
  finds no hold;
- spend caps (per account and per API key, per UTC day and month) are enforced with
  the same holds: a hold is refused when what was charged in the window plus what is
  held in it would pass a cap. Spend counts in the window its request started in; each
  scope keeps the count of its latest window only, so a charge of an earlier window (a
  request that started before midnight, settled after one that started since) leaves the
  latest window's count alone. A refund of a charge (``refund_charge`` given the request's
  key and start) lowers the count of the windows that charge was counted in by the amount
  refunded, never below 0, and leaves a count that has moved on to a later window alone
  (tests/property/test_spend_window_rules.py); a ``ChargeRefunded`` stored before refunds
  named their windows moves no count.
- every value an event carries fits the read models (``domain/bounds.py``): one grant,
  adjustment (either sign), refund or spend cap is at most ``MAX_AMOUNT``, and a movement
  that would take the balance past ``MAX_BALANCE`` is refused (``BalanceLimitExceeded``)
  before any event, so ``0 ≤ balance ≤ MAX_BALANCE`` after every credit movement.
Only *open* holds live in the aggregate, so it stays small however long its history;
its history does not stay short, so the ledger stores an ``Account.Snapshot`` every
``ACCOUNT_SNAPSHOT_INTERVAL`` events (see ``Snapshot`` below for what it must keep).

Grants may expire (``expires_at``). The balance is made of three parts, each ≥ 0:
``balance = Σ lots + Σ kept + credit that never expires``, where a *lot* is what is
left of an expiring grant before its deadline and *kept* is expired credit that an
open hold may still spend. Refunds, positive adjustments, payments and grants without
``expires_at`` never expire.
- Spending (a settled charge, a late charge, a debit adjustment) takes the
  soonest-expiring credit first: what the request's own hold kept, then lots by
  deadline (then by grant), then credit that never expires.
- At its deadline a grant expires once (``GrantExpired``; the lot leaves the aggregate,
  so a second sweep finds nothing) — applied by the sweep, or by the first hold placed
  at or after it, whichever comes first: the part of its remainder that is *available*
  leaves the balance at once; the rest is what open holds reserve, so it is kept by
  them (in the order they were placed, each up to what it holds). A hold may still
  spend what it keeps — its request started while the credit was valid — and what it
  does not spend expires the moment it is settled or released (a ``GrantExpired``
  naming the request). So ``available`` never goes negative, no request that started
  after a deadline spends credit that expired at it, and every nanocredit of a grant
  is either spent or expired, exactly.
A grant's identity (``grant`` on ``GrantExpired``) is the account version of its
``CreditGranted`` event.

An account may carry alert thresholds on its available balance (``AlertThresholdsSet``, at
most ``MAX_ALERT_THRESHOLDS``): they move no credit; application/alerts.py derives
``balance.low`` notices from them. Older accounts and snapshots have none (a class default).

Open holds and lots are value objects (``Hold``, ``Lot``: frozen, replaced on change, never
mutated). A snapshot stores them as the plain dicts it always stored (``Snapshot`` below), so
snapshots written before and after they became value objects load alike, in either version.
"""

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event
from eventsourcing.domain import Snapshot as BaseSnapshot

from domain import ids, spend_caps
from domain.bounds import MAX_AMOUNT, MAX_BALANCE
from domain.errors import (
    AlreadyExists,
    BalanceLimitExceeded,
    HoldNotFound,
    InsufficientCredits,
    InvalidRequest,
    PaymentNotFound,
    RefundExceedsPayment,
)
from domain.fast_events import trigger
from domain.money import InvalidAmount, format_credits

MAX_ALERT_THRESHOLDS = 10  # balance.low thresholds per account
REFUND_KIND = "charge-refund"  # the MovementReceipt kind of a request's refund (``refund_charge``)


@dataclass(frozen=True)
class Hold:
    """An open hold: credit reserved for one request's worst case until ``expires_at``.
    ``api_key`` (the key id's hex, if a key made the request), ``day`` and ``month`` (the
    UTC windows the request started in) say which spend caps it counts against."""

    amount: int
    expires_at: datetime
    api_key: str | None = None
    day: str | None = None
    month: str | None = None

    def window(self, window: str) -> str | None:
        """The key of the ``"day"`` or ``"month"`` window the request started in."""
        return self.day if window == "day" else self.month

    def plain(self) -> dict[str, Any]:
        """As a snapshot has always stored it."""
        return {
            "amount": self.amount,
            "expires_at": self.expires_at,
            "api_key": self.api_key,
            "day": self.day,
            "month": self.month,
        }

    @classmethod
    def from_plain(cls, value: dict[str, Any]) -> "Hold":
        return cls(value["amount"], value["expires_at"], value.get("api_key"), value.get("day"), value.get("month"))


@dataclass(frozen=True)
class Lot:
    """What is left (``remaining``) of an expiring grant before its deadline (``expires_at``)."""

    expires_at: datetime
    remaining: int

    def plain(self) -> dict[str, Any]:
        """As a snapshot has always stored it."""
        return {"expires_at": self.expires_at, "remaining": self.remaining}

    @classmethod
    def from_plain(cls, value: dict[str, Any]) -> "Lot":
        return cls(value["expires_at"], value["remaining"])


class Account(Aggregate):
    # The events, declared so readers name them (``Account.CreditGranted``) and a type checker
    # sees their fields. Each class's fields are its decorated method's parameters, in the same
    # order and with the same defaults: the order is the order of a stored event's state, and a
    # default is what an event stored before that field existed reads (the method gets the same).
    # The events every request makes (HoldPlaced, then HoldSettled or HoldReleased) are made by
    # ``trigger`` (domain/fast_events.py): what calling their method does, without eventsourcing's
    # generic path. Their methods' bodies apply them, made or loaded.
    class Created(Aggregate.Created):
        name: str

    class CreditGranted(Aggregate.Event):
        amount: int
        reason: str
        idempotency_key: str | None
        expires_at: datetime | None = None

    class GrantExpired(Aggregate.Event):
        grant: int  # the account version of the grant's CreditGranted
        amount: int
        kept_by_holds: dict[str, int]  # request id hex -> expired credit its hold keeps
        request_id: UUID | None = None  # the hold that kept it closed (None: the deadline)

    class Adjusted(Aggregate.Event):
        amount: int  # applied
        requested: int
        reason: str
        idempotency_key: str | None

    class ChargeRefunded(Aggregate.Event):
        request_id: UUID
        amount: int
        reason: str
        # the spend-cap windows the charge was counted in (as its HoldPlaced named them);
        # None: counted in none, or a refund stored before refunds named them
        api_key: str | None = None
        day: str | None = None
        month: str | None = None

    class HoldPlaced(Aggregate.Event):
        request_id: UUID
        amount: int
        expires_at: datetime
        api_key: str | None = None
        day: str | None = None
        month: str | None = None

    class SpendCapsSet(Aggregate.Event):
        scope: str
        day: int | None
        month: int | None

    class AlertThresholdsSet(Aggregate.Event):
        thresholds: list[int]  # available-balance thresholds (nanocredits), highest first; [] clears

    class SelfServiceSet(Aggregate.Event):
        keys: bool  # the customer portal may create and revoke the account's own API keys

    class HoldSettled(Aggregate.Event):
        request_id: UUID
        amount: int  # charged
        uncollected: int
        held: int

    class HoldReleased(Aggregate.Event):
        request_id: UUID
        amount: int
        reason: str

    class Snapshot(BaseSnapshot):
        """The account's state at a version, restored exactly, in the shape snapshots have
        always had (no ``class_version``: nothing to upcast, and older versions read it too):
        - holds and lots are stored as plain dicts (``Hold.plain``, ``Lot.plain``) and made
          value objects again on loading;
        - its dicts keyed by grant (``lots``, and each request's ``kept``) have integer keys,
          which JSON would turn into strings, so they are stored as ``[key, value]`` pairs
          and turned back."""

        @classmethod
        def take(cls, aggregate: Any) -> "Account.Snapshot":
            snapshot = super().take(aggregate)
            state = dict(snapshot.state)
            state["holds"] = {request: hold.plain() for request, hold in state["holds"].items()}
            state["lots"] = {grant: lot.plain() for grant, lot in state["lots"].items()}
            return replace(snapshot, state=_with_plain_keys(state))

        def mutate(self, aggregate: Any) -> Any:
            state = _with_int_keys(self.state)
            state["holds"] = {request: Hold.from_plain(hold) for request, hold in state["holds"].items()}
            state["lots"] = {grant: Lot.from_plain(lot) for grant, lot in state["lots"].items()}
            return super(Account.Snapshot, replace(self, state=state)).mutate(aggregate)

    @staticmethod
    def create_id(name: str) -> UUID:
        return ids.account_id(name)

    @event(Created)
    def __init__(self, name: str) -> None:
        self.name = name
        self.balance = 0
        self.holds: dict[str, Hold] = {}  # request id hex -> its open hold
        self.caps: dict[str, dict[str, int | None]] = {}  # scope ("account" or a key id) -> window -> cap
        self.spent: dict[str, dict[str, list[Any]]] = {}  # scope -> window -> [window key, amount]
        self.lots: dict[int, Lot] = {}  # grant -> what is left of it, until its deadline
        self.kept: dict[str, dict[int, int]] = {}  # request id hex -> grant -> expired credit its hold may spend

    @property
    def held(self) -> int:
        return sum(hold.amount for hold in self.holds.values())

    @property
    def available(self) -> int:
        return self.balance - self.held

    @property
    def expiring(self) -> int:
        """Credit of grants whose deadline has not been applied yet."""
        return sum(lot.remaining for lot in self.lots.values())

    @property
    def next_expiry(self) -> datetime | None:
        """The soonest deadline of a grant that still has credit left."""
        return min((lot.expires_at for lot in self.lots.values() if lot.remaining), default=None)

    @property
    def has_spend_caps(self) -> bool:
        return any(spend_caps.any_cap(caps) for caps in self.caps.values())

    def _check_credit(self, amount: int) -> None:
        """Credit of ``amount`` may be added: one movement's bound, and the balance's after it."""
        if amount > MAX_AMOUNT:
            raise _too_large(amount)
        if self.balance + amount > MAX_BALANCE:
            raise BalanceLimitExceeded(
                f"this would take the balance to {format_credits(self.balance + amount)} credits, past the "
                f"maximum of {format_credits(MAX_BALANCE)}",
                param="amount",
            )

    def grant_credits(
        self,
        amount: int,
        reason: str,
        idempotency_key: str | None = None,
        expires_at: datetime | None = None,
        *,
        now: datetime | None = None,
    ) -> None:
        """Add credit; ``amount`` must be a positive integer of nanocredits. With
        ``expires_at`` (a time with a zone, after ``now``) what is unspent then expires."""
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            raise InvalidRequest("a grant must be a positive amount", param="amount")
        self._check_credit(amount)
        if expires_at is None:
            self._credit_granted(amount=amount, reason=reason, idempotency_key=idempotency_key)
            return
        if not isinstance(expires_at, datetime) or expires_at.utcoffset() is None:
            raise InvalidRequest("a grant's expiry must be a time with a zone (UTC)", param="expires_at")
        if now is not None and expires_at <= now:
            raise InvalidRequest("a grant's expiry must be in the future", param="expires_at")
        self._credit_granted(amount=amount, reason=reason, idempotency_key=idempotency_key, expires_at=expires_at)

    @event(CreditGranted)
    def _credit_granted(
        self, amount: int, reason: str, idempotency_key: str | None, expires_at: datetime | None = None
    ) -> None:
        self.balance += amount
        if expires_at is not None:
            # applied before the aggregate takes this event's version, which is the grant's identity
            self.lots[self.version + 1] = Lot(expires_at, amount)

    def due_grants(self, now: datetime) -> list[int]:
        """Grants whose deadline is at or before ``now`` and not yet applied, soonest first."""
        return [grant for grant, lot in sorted(self.lots.items(), key=_deadline_order) if lot.expires_at <= now]

    def expire_grants(self, now: datetime) -> list[int]:
        """Apply every deadline that has passed (see the module docstring); returns the grants."""
        due = self.due_grants(now)
        for grant in due:
            remaining = self.lots[grant].remaining
            removed = min(remaining, max(self.available, 0))
            self._grant_expired(grant=grant, amount=removed, kept_by_holds=self._keep(remaining - removed))
        return due

    def _keep(self, amount: int) -> dict[str, int]:
        """Tie ``amount`` of expiring credit to the open holds, in the order they were placed."""
        kept: dict[str, int] = {}
        for request, hold in self.holds.items():
            if amount <= 0:
                break
            room = hold.amount - sum(self.kept.get(request, {}).values())
            if room > 0:
                kept[request] = min(room, amount)
                amount -= kept[request]
        if amount > 0:
            raise AssertionError("open holds reserve less than the credit they keep")  # see the docstring
        return kept

    def _expire_kept(self, request_id: UUID) -> None:
        """A hold closed: the expired credit it kept and did not spend leaves the balance."""
        for grant, amount in sorted(self.kept.get(request_id.hex, {}).items()):
            self._grant_expired(grant=grant, amount=amount, kept_by_holds={}, request_id=request_id)

    @event(GrantExpired)
    def _grant_expired(
        self, grant: int, amount: int, kept_by_holds: dict[str, int], request_id: UUID | None = None
    ) -> None:
        self.balance -= amount
        if request_id is None:  # the deadline
            self.lots.pop(grant, None)
            for request, kept in kept_by_holds.items():
                self.kept.setdefault(request, {})[grant] = kept
        else:  # a hold that kept some of this grant closed
            kept_by_request = self.kept.get(request_id.hex, {})
            kept_by_request.pop(grant, None)
            if not kept_by_request:
                self.kept.pop(request_id.hex, None)

    def _spend(self, amount: int, request: str | None = None) -> None:
        """Take ``amount`` soonest-expiring first: ``request``'s kept credit, lots, the rest."""
        kept = self.kept.get(request, {}) if request else {}
        for grant in sorted(kept):
            taken = min(kept[grant], amount)
            kept[grant] -= taken
            amount -= taken
            if not kept[grant]:
                del kept[grant]
        if request and not kept:
            self.kept.pop(request, None)
        for grant, lot in sorted(self.lots.items(), key=_deadline_order):
            taken = min(lot.remaining, amount)
            if taken:
                self.lots[grant] = replace(lot, remaining=lot.remaining - taken)
            amount -= taken

    def adjust(self, amount: int, reason: str, idempotency_key: str | None = None) -> int:
        """A manual correction (or a payment refunded to the customer): positive adds
        credit, negative removes it — never more than is available, so a debit cannot
        overdraw the account; the part it could not take is recorded as ``uncollected``.
        Returns the amount applied."""
        if not isinstance(amount, int) or isinstance(amount, bool) or amount == 0:
            raise InvalidRequest("an adjustment must be a non-zero amount", param="amount")
        if amount > 0:
            self._check_credit(amount)
        elif -amount > MAX_AMOUNT:
            raise _too_large(amount)
        if not reason or not reason.strip():
            raise InvalidRequest("an adjustment needs a reason", param="reason")
        applied = amount if amount > 0 else -min(-amount, max(self.available, 0))
        self._adjusted(amount=applied, requested=amount, reason=reason, idempotency_key=idempotency_key)
        return applied

    @event(Adjusted)
    def _adjusted(self, amount: int, requested: int, reason: str, idempotency_key: str | None) -> None:
        self.balance += amount
        if amount < 0:
            self._spend(-amount)

    def refund_charge(
        self,
        request_id: UUID,
        amount: int,
        reason: str,
        *,
        api_key_id: UUID | None = None,
        started_at: datetime | None = None,
    ) -> "MovementReceipt":
        """Give back (part of) what a request was charged; the caller checks the amount
        against the request's charge. Returns the refund's receipt, to save in the same
        transaction: its identity is (account, ``REFUND_KIND``, request), so a second refund
        of the request collides with it in the store and moves nothing — at most one refund
        per request, without the account keeping every refunded request.

        ``api_key_id`` and ``started_at`` are the request's key and start, as its hold was
        placed with (``place_hold``'s ``api_key_id`` and ``now``): they name the spend-cap
        windows its charge was counted in, whose counts the refund lowers (module docstring).
        Without ``started_at`` no count moves."""
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            raise InvalidRequest("a refund must be a positive amount", param="amount")
        self._check_credit(amount)
        if started_at is None:
            self._charge_refunded(request_id=request_id, amount=amount, reason=reason)
        else:
            windows = spend_caps.windows_at(started_at)
            self._charge_refunded(
                request_id=request_id,
                amount=amount,
                reason=reason,
                api_key=api_key_id.hex if api_key_id else None,
                day=windows["day"],
                month=windows["month"],
            )
        return MovementReceipt(
            account_id=self.id,
            kind=REFUND_KIND,
            idempotency_key=request_id.hex,
            amount=amount,
            terms={"reason": reason},
        )

    @event(ChargeRefunded)
    def _charge_refunded(
        self,
        request_id: UUID,
        amount: int,
        reason: str,
        api_key: str | None = None,
        day: str | None = None,
        month: str | None = None,
    ) -> None:
        self.balance += amount
        self._count_spend(api_key, {"day": day, "month": month}, -amount)

    def place_hold(
        self,
        request_id: UUID,
        amount: int,
        expires_at: datetime,
        *,
        api_key_id: UUID | None = None,
        now: datetime | None = None,
    ) -> None:
        """Reserve credit for a request's worst case; raises InsufficientCredits or SpendCapReached."""
        if request_id.hex in self.holds:
            raise AlreadyExists(f"request {request_id} already holds credit")
        if not isinstance(amount, int) or amount < 0:
            raise InvalidRequest("a hold must be a non-negative amount")
        due = self.due_grants(now) if now is not None else []
        available = self.available
        if due:  # what a passed deadline will take first (module docstring)
            available = max(0, available - sum(self.lots[grant].remaining for grant in due))
        if amount > available:
            raise InsufficientCredits(self.id, needed=amount, available=available)
        windows = spend_caps.windows_at(now) if now is not None else {}
        key = api_key_id.hex if api_key_id else None
        for scope in ("account", key):
            caps = self.caps.get(scope) if scope is not None and now is not None else None
            if scope is not None and now is not None and caps and spend_caps.any_cap(caps):
                # what it used is summed only if capped
                spend_caps.check(caps, self._used(scope, windows), amount, windows, scope, now)
        if due and now is not None:  # a request that starts after a deadline never reserves what expired at it
            self.expire_grants(now)
        trigger(  # self._hold_placed(...), made directly: every request places a hold
            self,
            Account.HoldPlaced,
            request_id=request_id,
            amount=amount,
            expires_at=expires_at,
            api_key=key,
            day=windows.get("day"),
            month=windows.get("month"),
        )

    @event(HoldPlaced)
    def _hold_placed(
        self,
        request_id: UUID,
        amount: int,
        expires_at: datetime,
        api_key: str | None = None,
        day: str | None = None,
        month: str | None = None,
    ) -> None:
        self.holds[request_id.hex] = Hold(amount, expires_at, api_key, day, month)

    def set_spend_caps(self, scope: str, day: int | None, month: int | None) -> None:
        """Caps for the account (``scope="account"``) or one of its keys (the key id's hex)."""
        for window, cap in (("day", day), ("month", month)):
            if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 0):
                raise InvalidRequest("a spend cap is a non-negative amount", param=window)
            if cap is not None and cap > MAX_AMOUNT:
                raise _too_large(cap, window)
        self._spend_caps_set(scope=scope, day=day, month=month)

    @event(SpendCapsSet)
    def _spend_caps_set(self, scope: str, day: int | None, month: int | None) -> None:
        self.caps[scope] = {"day": day, "month": month}

    alert_thresholds: Sequence[int] = ()  # a class default: accounts and snapshots from before alerts

    def set_alert_thresholds(self, thresholds: list[int]) -> None:
        """The available-balance thresholds a ``balance.low`` notice fires at (application/alerts.py);
        each a positive amount, at most ``MAX_ALERT_THRESHOLDS`` of them; ``[]`` clears them."""
        if len(thresholds) > MAX_ALERT_THRESHOLDS:
            raise InvalidRequest(f"at most {MAX_ALERT_THRESHOLDS} alert thresholds", param="below")
        for threshold in thresholds:
            if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold <= 0:
                raise InvalidRequest("an alert threshold is a positive amount", param="below")
            if threshold > MAX_AMOUNT:
                raise _too_large(threshold, "below")
        ordered = sorted(set(thresholds), reverse=True)
        if tuple(ordered) != tuple(self.alert_thresholds):
            self._alert_thresholds_set(thresholds=ordered)

    @event(AlertThresholdsSet)
    def _alert_thresholds_set(self, thresholds: list[int]) -> None:
        self.alert_thresholds = list(thresholds)

    self_service_keys: bool = False  # a class default: accounts and snapshots from before self-service

    def set_self_service(self, keys: bool) -> bool:
        """Whether the customer portal may manage the account's own keys; an event only on a change."""
        if keys == self.self_service_keys:
            return False
        self._self_service_set(keys=keys)
        return True

    @event(SelfServiceSet)
    def _self_service_set(self, keys: bool) -> None:
        self.self_service_keys = keys

    def _used(self, scope: str, windows: dict[str, str]) -> dict[str, int]:
        """What ``scope`` spent plus what it holds, in each current window."""
        used = {}
        for window, window_key in windows.items():
            spent_key, spent = self.spent.get(scope, {}).get(window, [None, 0])
            held = sum(
                hold.amount
                for hold in self.holds.values()
                if hold.window(window) == window_key and (scope == "account" or hold.api_key == scope)
            )
            used[window] = (spent if spent_key == window_key else 0) + held
        return used

    def _count_spend(self, api_key: str | None, windows: dict[str, str | None], amount: int) -> None:
        """Count ``amount`` (a charge; a refund's is negative) in the windows a request started
        in (window -> key, None: not counted), for the account and for ``api_key``. Each scope
        keeps its latest window only: a charge of a later window starts it afresh, one of an
        earlier window leaves it alone (window keys are ISO dates: their order is time's); a
        refund lowers only the window it names, never below 0."""
        for scope in ("account", api_key):
            if scope is None:
                continue
            for window, window_key in windows.items():
                current = self.spent.get(scope, {}).get(window)
                if window_key is None or (current is not None and current[0] > window_key):
                    continue
                if current is not None and current[0] == window_key:
                    total = max(0, current[1] + amount)
                elif amount >= 0:
                    total = amount
                else:
                    continue  # a refund of a window no longer (or never) counted
                self.spent.setdefault(scope, {})[window] = [window_key, total]

    def settle_hold(self, request_id: UUID, cost: int) -> int:
        """Close a hold by charging ``cost``; returns the amount actually charged.

        The charge is capped at what the account can pay without going below zero;
        any excess is recorded on the event as ``uncollected``.
        """
        hold = self.holds.get(request_id.hex)
        if hold is None:
            raise HoldNotFound(f"no open hold for request {request_id}")
        if not isinstance(cost, int) or cost < 0:
            raise InvalidRequest("a charge must be a non-negative amount")
        payable = self.balance - (self.held - hold.amount)
        charged = min(cost, payable)
        # self._hold_settled(...), made directly (domain/fast_events.py): every request settles or releases
        trigger(
            self,
            Account.HoldSettled,
            request_id=request_id,
            amount=charged,
            uncollected=cost - charged,
            held=hold.amount,
        )
        self._expire_kept(request_id)
        return charged

    @event(HoldSettled)
    def _hold_settled(self, request_id: UUID, amount: int, uncollected: int, held: int) -> None:
        hold = self.holds.pop(request_id.hex, None)
        self.balance -= amount
        self._spend(amount, request_id.hex if hold is not None else None)
        if hold is not None:
            self._count_spend(hold.api_key, {"day": hold.day, "month": hold.month}, amount)

    def charge_without_hold(self, request_id: UUID, cost: int) -> int:
        """Charge a request whose hold already expired and was released.

        Charges at most what is available, so no other hold is ever overdrawn.
        """
        if request_id.hex in self.holds:
            raise AlreadyExists(f"request {request_id} still holds credit: settle it")
        if not isinstance(cost, int) or cost < 0:
            raise InvalidRequest("a charge must be a non-negative amount")
        charged = max(0, min(cost, self.available))
        trigger(self, Account.HoldSettled, request_id=request_id, amount=charged, uncollected=cost - charged, held=0)
        return charged

    def release_hold(self, request_id: UUID, reason: str) -> None:
        """Give a hold back without charging (upstream failure, expiry)."""
        hold = self.holds.get(request_id.hex)
        if hold is None:
            raise HoldNotFound(f"no open hold for request {request_id}")
        trigger(self, Account.HoldReleased, request_id=request_id, amount=hold.amount, reason=reason)
        self._expire_kept(request_id)

    @event(HoldReleased)
    def _hold_released(self, request_id: UUID, amount: int, reason: str) -> None:
        del self.holds[request_id.hex]

    def expired_holds(self, now: datetime) -> list[UUID]:
        return [UUID(key) for key, hold in self.holds.items() if hold.expires_at <= now]

    def release_expired_holds(self, now: datetime) -> list[UUID]:
        """Release every hold past its deadline (its process crashed or hung); returns them."""
        expired = self.expired_holds(now)
        for request_id in expired:
            self.release_hold(request_id, reason="expired")
        return expired


def _too_large(amount: int, param: str = "amount") -> InvalidAmount:
    return InvalidAmount(
        f"{param} {format_credits(abs(amount))} is above the maximum of {format_credits(MAX_AMOUNT)} credits",
        param=param,
    )


_INT_KEYS = "__int_keys__"


def _with_plain_keys(value: Any) -> Any:
    if isinstance(value, dict):
        if any(isinstance(key, int) for key in value):
            return {_INT_KEYS: [[key, _with_plain_keys(item)] for key, item in value.items()]}
        return {key: _with_plain_keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_with_plain_keys(item) for item in value]
    return value


def _with_int_keys(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {_INT_KEYS}:
            return {key: _with_int_keys(item) for key, item in value[_INT_KEYS]}
        return {key: _with_int_keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_with_int_keys(item) for item in value]
    return value


def _deadline_order(item: tuple[int, Lot]) -> tuple[datetime, int]:
    grant, lot = item
    return lot.expires_at, grant


class MovementReceipt(Aggregate):
    """Exists once per (account, kind, idempotency key): a second grant, adjustment,
    payment or refund with the same key collides with it in the store and moves no credit.

    It keeps what the movement asked for — ``amount`` and ``terms`` (reason, expiry, the
    payment a refund is of) — so a key used again for the same movement (a re-delivery)
    is told apart from a key reused for a different one (``matches``). Receipts recorded
    before ``terms`` existed have ``terms=None`` and are compared by amount alone.

    A payment's receipt also counts what has been refunded of it: ``refund`` refuses a
    refund that would take the total past the payment, and its event is saved in the same
    transaction as the refund's debit, so two refunds of one payment that race are
    decided one after the other by the store (the second is retried on the fresh count).
    """

    class Recorded(Aggregate.Created):
        account_id: UUID
        kind: str
        idempotency_key: str
        amount: int
        terms: dict[str, Any] | None = None

    class Refunded(Aggregate.Event):
        amount: int
        refund_id: str

    @staticmethod
    def create_id(account_id: UUID, kind: str, idempotency_key: str) -> UUID:
        return ids.receipt_id(account_id, kind, idempotency_key)

    @event(Recorded)
    def __init__(
        self, account_id: UUID, kind: str, idempotency_key: str, amount: int, terms: dict[str, Any] | None = None
    ) -> None:
        self.account_id = account_id
        self.kind = kind
        self.idempotency_key = idempotency_key
        self.amount = amount
        self.terms = terms
        self.refunded = 0  # of a payment: the sum of the refunds of it recorded since refunds were checked

    def matches(self, amount: int, terms: dict[str, Any]) -> bool:
        """Whether a movement of ``amount`` on ``terms`` is the one this receipt recorded."""
        return self.amount == amount and (self.terms is None or self.terms == terms)

    def refund(self, amount: int, refund_id: str) -> None:
        """Count a refund of ``amount`` against this payment; raises RefundExceedsPayment."""
        if self.kind != "payment":
            raise PaymentNotFound(f"{self.idempotency_key} is not a payment")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            raise InvalidRequest("a refund must be a positive amount", param="amount")
        if self.refunded + amount > self.amount:
            raise RefundExceedsPayment(
                f"refund {refund_id} of {format_credits(amount)} credits would take the refunds of payment "
                f"{self.idempotency_key} to {format_credits(self.refunded + amount)}, more than the payment's "
                f"{format_credits(self.amount)}",
                param="amount",
            )
        self._refunded(amount=amount, refund_id=refund_id)

    @event(Refunded)
    def _refunded(self, amount: int, refund_id: str) -> None:
        self.refunded += amount
