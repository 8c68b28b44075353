"""Accounts and credit: opening accounts, grants (with idempotency keys and deadlines),
payments and their refunds, manual and replay adjustments, spend caps, rate limits (the
account's AccountRateLimits, domain/rate_limits.py), and the sweeps that
release expired holds and expire grants (the Account aggregate and its MovementReceipts),
over the Ledger's per-account unit of work (``Ledger.change_account``).

Invariants kept here (the arithmetic is domain/account.py's):
- a movement with an idempotency key happens at most once: its MovementReceipt, saved in
  the same transaction as the account, names it by identity, so a second one is refused by
  the store; a key used again for the same amount and terms is a re-delivery (nothing moves,
  ``credited`` False), for another movement an IdempotencyConflict;
- the refunds of a payment never add up to more than it: the payment's receipt counts
  them and is saved with the debit;
- no debit overdraws an account.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from application.ledger import Ledger, clean_name
from domain import ids
from domain.account import Account, MovementReceipt
from domain.errors import AlreadyExists, ApiKeyNotFound, IdempotencyConflict, InvalidRequest, PaymentNotFound
from domain.rate_limits import AccountRateLimits, RateLimits, account_limits_id, checked_limits


@dataclass(frozen=True)
class GrantResult:
    account_id: UUID
    amount: int
    credited: bool  # False when the idempotency key had already been used


class Accounts:
    """``limits_changed``: told the account's id when this process changes its rate limits
    (the hot path's reader forgets what it remembered of them)."""

    def __init__(self, ledger: Ledger, limits_changed: Callable[[UUID], None] | None = None) -> None:
        self.ledger = ledger
        self.limits_changed = limits_changed

    def create_account(self, name: str, starter_credits: int = 0) -> Account:
        name = clean_name(name, "account name")
        account = Account(name=name)
        if starter_credits < 0:
            raise InvalidRequest("starter credits must not be negative", param="starter_credits")
        if starter_credits:
            account.grant_credits(starter_credits, reason="starter credits", idempotency_key="starter")
        receipts = (
            [
                MovementReceipt(
                    account_id=account.id,
                    kind="grant",
                    idempotency_key="starter",
                    amount=starter_credits,
                    terms=_grant_terms("starter credits", None),
                )
            ]
            if starter_credits
            else []
        )
        try:
            self.ledger.save(account, *receipts)
        except IntegrityError:
            raise AlreadyExists(f"account {name!r} already exists") from None
        return account

    def grant_credits(
        self,
        ref: str | UUID,
        amount: int,
        reason: str = "",
        idempotency_key: str | None = None,
        expires_at: datetime | None = None,
    ) -> GrantResult:
        """Add credit; with an idempotency key, at most once; with ``expires_at`` (in the
        future), what is unspent then expires (domain/account.py says how)."""

        return self._move(
            ref,
            "grant",
            idempotency_key,
            amount,
            _grant_terms(reason, expires_at),
            lambda account: _granted(account, amount, reason, idempotency_key, expires_at, self.ledger.clock.now()),
        )

    def record_payment(self, ref: str | UUID, payment_id: str, amount: int) -> GrantResult:
        """A top-up from the payment system: credited once per payment id."""
        return self._move(
            ref,
            "payment",
            payment_id,
            amount,
            {},
            lambda account: _granted(account, amount, f"payment {payment_id}", payment_id),
        )

    def reverse_payment(self, ref: str | UUID, refund_id: str, amount: int, payment_id: str) -> GrantResult:
        """A payment refunded to the customer: debited once per refund id, never below zero.

        ``payment_id`` must name a payment credited to this account (PaymentNotFound), and the
        refunds of a payment never add up to more than it (RefundExceedsPayment): the payment's
        receipt counts them and is saved with the debit (domain/account.py, MovementReceipt)."""
        reason = f"payment refund {refund_id} of {payment_id}"

        def refund(account: Account) -> tuple[int, list[Aggregate]]:
            payment = self.ledger.find(ids.receipt_id(account.id, "payment", payment_id))
            if not isinstance(payment, MovementReceipt):
                raise PaymentNotFound(f"no payment {payment_id!r} was credited to this account")
            payment.refund(amount, refund_id)
            return account.adjust(-amount, reason, refund_id), [payment]

        return self._move(ref, "payment-refund", refund_id, -amount, {"payment_id": payment_id}, refund)

    def adjust_credits(
        self, ref: str | UUID, amount: int, reason: str, idempotency_key: str | None = None
    ) -> GrantResult:
        """A manual correction, positive or negative (a debit never overdraws); once per key."""
        return self._move(
            ref,
            "adjustment",
            idempotency_key,
            amount,
            {"reason": reason},
            lambda account: account.adjust(amount, reason, idempotency_key),
        )

    def post_replay_adjustment(self, account_id: UUID, amount: int, reason: str, idempotency_key: str) -> GrantResult:
        """A replay's difference for one account, posted once per key (a debit never overdraws)."""
        return self._move(
            account_id,
            "replay",
            idempotency_key,
            amount,
            {"reason": reason},
            lambda account: account.adjust(amount, reason, idempotency_key),
        )

    def _move(
        self,
        ref: str | UUID,
        kind: str,
        idempotency_key: str | None,
        amount: int,
        terms: dict[str, Any],
        apply: Callable[[Account], int | tuple[int, list[Aggregate]]],
    ) -> GrantResult:
        """Apply a credit movement once per idempotency key. A key used before for the same
        ``amount`` and ``terms`` is a re-delivery (nothing moves, ``credited`` is False); for
        another movement it is refused (IdempotencyConflict). ``apply`` returns the amount
        applied, or that and other aggregates to save with the account."""
        account_id = self.ledger.get_account(ref).id
        if idempotency_key is not None and not idempotency_key.strip():
            raise InvalidRequest("an idempotency key must not be blank", param="idempotency_key")
        applied: list[int] = []

        def move(account: Account) -> list[Aggregate] | None:
            if idempotency_key is not None:
                receipt = self.ledger.find(ids.receipt_id(account_id, kind, idempotency_key))
                if isinstance(receipt, MovementReceipt):
                    if not receipt.matches(amount, terms):
                        raise IdempotencyConflict(
                            f"idempotency key {idempotency_key!r} was used before for a different {kind} "
                            f"(amount or other details differ); use a new key"
                        )
                    return None
            done = apply(account)
            amount_applied, others = done if isinstance(done, tuple) else (done, [])
            applied.append(amount_applied)
            if idempotency_key is None:
                return others
            return [
                *others,
                MovementReceipt(
                    account_id=account_id, kind=kind, idempotency_key=idempotency_key, amount=amount, terms=terms
                ),
            ]

        credited = self.ledger.change_account(account_id, move)
        return GrantResult(account_id=account_id, amount=applied[-1] if applied else 0, credited=credited)

    def set_spend_caps(
        self, ref: str | UUID, *, day: int | None, month: int | None, api_key_id: str | UUID | None = None
    ) -> Account:
        """Caps per UTC day and month for the account, or for one of its own API keys
        (ApiKeyNotFound for a key of another account)."""
        account_id = self.ledger.get_account(ref).id
        scope = "account"
        if api_key_id is not None:
            key = self.ledger.get_api_key(api_key_id)
            if key.account_id != account_id:
                raise ApiKeyNotFound(f"account {ref!s} has no API key {api_key_id!s}")
            scope = key.id.hex

        def set_caps(account: Account) -> list[Aggregate]:
            account.set_spend_caps(scope, day, month)
            return []

        self.ledger.change_account(account_id, set_caps)
        return self.ledger.get_account(account_id)

    def set_self_service(self, ref: str | UUID, *, keys: bool) -> Account:
        """Whether the customer portal may create and revoke the account's own API keys
        (``Account.SelfServiceSet``; application/portal.py checks it at each action)."""
        account_id = self.ledger.get_account(ref).id

        def set_keys(account: Account) -> list[Aggregate] | None:
            return [] if account.set_self_service(keys) else None

        self.ledger.change_account(account_id, set_keys)
        return self.ledger.get_account(account_id)

    def get_account_limits(self, ref: str | UUID) -> tuple[UUID, RateLimits]:
        """The account's id and its rate limits (none set: ``RateLimits()``)."""
        account_id = self.ledger.get_account(ref).id
        found = self.ledger.find(account_limits_id(account_id))
        return account_id, found.limits if isinstance(found, AccountRateLimits) else RateLimits()

    def set_account_limits(
        self,
        ref: str | UUID,
        *,
        rpm: int | None = None,
        tpm: int | None = None,
        max_parallel: int | None = None,
    ) -> tuple[UUID, RateLimits]:
        """Set the account's rate limits: each one given replaces the current one, ``0``
        clears it, None leaves it; an event only when something changed. Two first settings
        at once: one is refused by the store (AlreadyExists), as for every identity."""
        account_id = self.ledger.get_account(ref).id
        found = self.ledger.find(account_limits_id(account_id))
        limits = found if isinstance(found, AccountRateLimits) else AccountRateLimits(account_id=account_id)
        limits.set_limits(checked_limits(limits.limits, rpm, tpm, max_parallel))
        if limits.pending_events:
            try:
                self.ledger.save(limits)
            except IntegrityError:
                raise AlreadyExists(f"the rate limits of account {ref!s} changed meanwhile; try again") from None
            if self.limits_changed is not None:
                self.limits_changed(account_id)
        return account_id, limits.limits

    def release_expired_holds(self, ref: str | UUID) -> list[UUID]:
        """Release the account's holds past their deadline; returns their request ids."""
        released: list[UUID] = []

        def release(account: Account) -> list[Aggregate] | None:
            released[:] = account.release_expired_holds(self.ledger.clock.now())
            return [] if released else None

        self.ledger.change_account(self.ledger.get_account(ref).id, release)
        return released

    def expire_grants(self, ref: str | UUID) -> list[int]:
        """Apply the account's grant deadlines that have passed; returns the grants."""
        expired: list[int] = []

        def expire(account: Account) -> list[Aggregate] | None:
            expired[:] = account.expire_grants(self.ledger.clock.now())
            return [] if expired else None

        self.ledger.change_account(self.ledger.get_account(ref).id, expire)
        return expired


def _granted(
    account: Account,
    amount: int,
    reason: str,
    idempotency_key: str | None,
    expires_at: datetime | None = None,
    now: datetime | None = None,
) -> int:
    account.grant_credits(amount, reason=reason, idempotency_key=idempotency_key, expires_at=expires_at, now=now)
    return amount


def _grant_terms(reason: str, expires_at: datetime | None) -> dict[str, Any]:
    """What besides its amount makes a grant the same grant (for its idempotency key)."""
    return {
        "reason": reason,
        "expires_at": None
        if expires_at is None
        else expires_at.astimezone(UTC).isoformat()
        if expires_at.utcoffset() is not None
        else expires_at.isoformat(),
    }
