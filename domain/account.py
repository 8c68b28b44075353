"""An account's credit: the consistency boundary of the no-overdraft rule.

Invariants (checked by tests/property/test_account_rules.py):
- ``balance = grants − charges + refunds ± adjustments``;
- ``available = balance − sum(open holds) ≥ 0`` after every event: a hold is refused
  when it would exceed ``available`` and a settlement never charges more than the
  account can pay (the shortfall is recorded as ``uncollected``, never as debt);
- a hold is settled or released at most once: both remove it, and a second attempt
  finds no hold;
- spend caps (per account and per API key, per UTC day and month) are enforced with
  the same holds: a hold is refused when what was charged in the window plus what is
  held in it would pass a cap. Spend counts in the window its request started in.
Only *open* holds live in the aggregate, so it stays small however long its history.
"""

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain import ids, spend_caps
from domain.errors import AlreadyExists, HoldNotFound, InsufficientCredits, InvalidRequest


class Account(Aggregate):
    @staticmethod
    def create_id(name: str) -> UUID:
        return ids.account_id(name)

    @event("Created")
    def __init__(self, name: str) -> None:
        self.name = name
        self.balance = 0
        self.holds: dict[str, dict[str, Any]] = {}
        self.caps: dict[str, dict[str, int | None]] = {}  # scope ("account" or a key id) -> window -> cap
        self.spent: dict[str, dict[str, list[Any]]] = {}  # scope -> window -> [window key, amount]

    @property
    def held(self) -> int:
        return sum(hold["amount"] for hold in self.holds.values())

    @property
    def available(self) -> int:
        return self.balance - self.held

    def grant_credits(self, amount: int, reason: str, idempotency_key: str | None = None) -> None:
        """Add credit; ``amount`` must be a positive integer of nanocredits."""
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            raise InvalidRequest("a grant must be a positive amount", param="amount")
        self._credit_granted(amount=amount, reason=reason, idempotency_key=idempotency_key)

    @event("CreditGranted")
    def _credit_granted(self, amount: int, reason: str, idempotency_key: str | None) -> None:
        self.balance += amount

    def adjust(self, amount: int, reason: str, idempotency_key: str | None = None) -> int:
        """A manual correction (or a payment refunded to the customer): positive adds
        credit, negative removes it — never more than is available, so a debit cannot
        overdraw the account; the part it could not take is recorded as ``uncollected``.
        Returns the amount applied."""
        if not isinstance(amount, int) or isinstance(amount, bool) or amount == 0:
            raise InvalidRequest("an adjustment must be a non-zero amount", param="amount")
        if not reason or not reason.strip():
            raise InvalidRequest("an adjustment needs a reason", param="reason")
        applied = amount if amount > 0 else -min(-amount, max(self.available, 0))
        self._adjusted(amount=applied, requested=amount, reason=reason, idempotency_key=idempotency_key)
        return applied

    @event("Adjusted")
    def _adjusted(self, amount: int, requested: int, reason: str, idempotency_key: str | None) -> None:
        self.balance += amount

    def refund_charge(self, request_id: UUID, amount: int, reason: str) -> None:
        """Give back (part of) what a request was charged; the caller checks the amount
        against the request's charge, and the refund's identity makes it happen once."""
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            raise InvalidRequest("a refund must be a positive amount", param="amount")
        self._charge_refunded(request_id=request_id, amount=amount, reason=reason)

    @event("ChargeRefunded")
    def _charge_refunded(self, request_id: UUID, amount: int, reason: str) -> None:
        self.balance += amount

    def place_hold(self, request_id: UUID, amount: int, expires_at: datetime, *,
                   api_key_id: UUID | None = None, now: datetime | None = None) -> None:
        """Reserve credit for a request's worst case; raises InsufficientCredits or SpendCapReached."""
        if request_id.hex in self.holds:
            raise AlreadyExists(f"request {request_id} already holds credit")
        if not isinstance(amount, int) or amount < 0:
            raise InvalidRequest("a hold must be a non-negative amount")
        if amount > self.available:
            raise InsufficientCredits(self.id, needed=amount, available=self.available)
        windows = spend_caps.windows_at(now) if now is not None else {}
        key = api_key_id.hex if api_key_id else None
        for scope in ("account", key):
            if scope is not None and windows:
                spend_caps.check(self.caps.get(scope, {}), self._used(scope, windows), amount, windows, scope, now)
        self._hold_placed(request_id=request_id, amount=amount, expires_at=expires_at, api_key=key,
                          day=windows.get("day"), month=windows.get("month"))

    @event("HoldPlaced")
    def _hold_placed(self, request_id: UUID, amount: int, expires_at: datetime, api_key: str | None = None,
                     day: str | None = None, month: str | None = None) -> None:
        self.holds[request_id.hex] = {"amount": amount, "expires_at": expires_at, "api_key": api_key,
                                      "day": day, "month": month}

    def set_spend_caps(self, scope: str, day: int | None, month: int | None) -> None:
        """Caps for the account (``scope="account"``) or one of its keys (the key id's hex)."""
        for cap in (day, month):
            if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 0):
                raise InvalidRequest("a spend cap is a non-negative amount", param="caps")
        self._spend_caps_set(scope=scope, day=day, month=month)

    @event("SpendCapsSet")
    def _spend_caps_set(self, scope: str, day: int | None, month: int | None) -> None:
        self.caps[scope] = {"day": day, "month": month}

    def _used(self, scope: str, windows: dict[str, str]) -> dict[str, int]:
        """What ``scope`` spent plus what it holds, in each current window."""
        used = {}
        for window, window_key in windows.items():
            spent_key, spent = self.spent.get(scope, {}).get(window, [None, 0])
            held = sum(h["amount"] for h in self.holds.values()
                       if h.get(window) == window_key and (scope == "account" or h.get("api_key") == scope))
            used[window] = (spent if spent_key == window_key else 0) + held
        return used

    def _count_spend(self, hold: dict[str, Any], amount: int) -> None:
        for scope in ("account", hold.get("api_key")):
            if scope is None:
                continue
            for window in ("day", "month"):
                window_key = hold.get(window)
                if window_key is None:
                    continue
                current = self.spent.setdefault(scope, {}).get(window)
                total = current[1] if current and current[0] == window_key else 0
                self.spent[scope][window] = [window_key, total + amount]

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
        payable = self.balance - (self.held - hold["amount"])
        charged = min(cost, payable)
        self._hold_settled(request_id=request_id, amount=charged, uncollected=cost - charged, held=hold["amount"])
        return charged

    @event("HoldSettled")
    def _hold_settled(self, request_id: UUID, amount: int, uncollected: int, held: int) -> None:
        hold = self.holds.pop(request_id.hex, None)
        self.balance -= amount
        if hold is not None:
            self._count_spend(hold, amount)

    def charge_without_hold(self, request_id: UUID, cost: int) -> int:
        """Charge a request whose hold already expired and was released.

        Charges at most what is available, so no other hold is ever overdrawn.
        """
        if request_id.hex in self.holds:
            raise AlreadyExists(f"request {request_id} still holds credit: settle it")
        if not isinstance(cost, int) or cost < 0:
            raise InvalidRequest("a charge must be a non-negative amount")
        charged = max(0, min(cost, self.available))
        self._hold_settled(request_id=request_id, amount=charged, uncollected=cost - charged, held=0)
        return charged

    def release_hold(self, request_id: UUID, reason: str) -> None:
        """Give a hold back without charging (upstream failure, expiry)."""
        hold = self.holds.get(request_id.hex)
        if hold is None:
            raise HoldNotFound(f"no open hold for request {request_id}")
        self._hold_released(request_id=request_id, amount=hold["amount"], reason=reason)

    @event("HoldReleased")
    def _hold_released(self, request_id: UUID, amount: int, reason: str) -> None:
        del self.holds[request_id.hex]

    def expired_holds(self, now: datetime) -> list[UUID]:
        return [UUID(key) for key, hold in self.holds.items() if hold["expires_at"] <= now]

    def release_expired_holds(self, now: datetime) -> list[UUID]:
        """Release every hold past its deadline (its process crashed or hung); returns them."""
        expired = self.expired_holds(now)
        for request_id in expired:
            self.release_hold(request_id, reason="expired")
        return expired


class MovementReceipt(Aggregate):
    """Exists once per (account, kind, idempotency key): a second grant, adjustment,
    payment or refund with the same key collides with it in the store and moves no credit."""

    @staticmethod
    def create_id(account_id: UUID, kind: str, idempotency_key: str) -> UUID:
        return ids.receipt_id(account_id, kind, idempotency_key)

    @event("Recorded")
    def __init__(self, account_id: UUID, kind: str, idempotency_key: str, amount: int) -> None:
        self.account_id = account_id
        self.kind = kind
        self.idempotency_key = idempotency_key
        self.amount = amount
