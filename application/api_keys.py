"""API keys: issuing, revoking and rotating user keys, and limiting them to models (the
ApiKey aggregate), over the Ledger's unit of work. Authentication is a hot-path read and
stays on the Ledger (``Ledger.authenticate``, through its read cache).

Invariants kept here:
- a key is stored only as its digest under the deployment's pepper; its plaintext is
  returned once, by ``issue_api_key`` or ``rotate_api_key``, and never stored;
- a rotated key and its replacement are saved in one transaction, the new key carrying the
  old one's account, name, expiry, model limits and rate limits, so a crash never leaves a replacement
  with wider access than the key it replaces; the old key stays usable for the grace
  period (0 to ``MAX_GRACE``), or is revoked at once without one.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from application.ledger import Ledger
from domain.api_key import ApiKey, check_model_patterns
from domain.errors import InvalidRequest
from domain.rate_limits import RateLimits, checked_limits

MAX_GRACE = timedelta(days=30)


@dataclass(frozen=True)
class IssuedKey:
    key_id: UUID
    account_id: UUID
    name: str
    prefix: str
    plaintext: str  # shown once, never stored


@dataclass(frozen=True)
class KeyRotation:
    issued: IssuedKey
    old_key_id: UUID
    old_retires_at: datetime | None  # None: revoked at once


class ApiKeys:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def issue_api_key(
        self,
        account: str | UUID,
        name: str = "",
        expires_at: datetime | None = None,
        models: Sequence[str] | None = None,
    ) -> IssuedKey:
        """Issue a user key, limited to ``models`` when given (saved together with the key)."""
        account_id = self.ledger.get_account(account).id
        if expires_at is not None and expires_at <= self.ledger.clock.now():
            raise InvalidRequest("a key's expiry must be in the future", param="expires")
        key, plaintext = self._new_key(account_id, name, expires_at, list(models) if models is not None else None)
        self.ledger.save(key)
        return IssuedKey(key_id=key.id, account_id=account_id, name=name, prefix=key.prefix, plaintext=plaintext)

    def revoke_api_key(self, key_id: str | UUID, reason: str = "") -> ApiKey:
        key = self.ledger.get_api_key(key_id)
        key.revoke(reason)
        self.ledger.save(key)
        return key

    def rotate_api_key(self, key_id: str | UUID, grace: timedelta = timedelta(0)) -> KeyRotation:
        """A new key for the same account, name, expiry and models; the old one is revoked now or
        stays usable for ``grace``. Both are saved in one transaction."""
        grace = check_grace(grace)
        old_id = self.ledger.get_api_key(key_id).id
        made: dict[str, Any] = {}

        def rotate(old: ApiKey) -> list[Aggregate]:
            now = self.ledger.clock.now()
            if not old.is_usable(now):
                raise InvalidRequest(
                    f"key {old.id} is revoked, rotated or expired; issue a new key instead", param="key_id"
                )
            new, plaintext = self._new_key(
                old.account_id, old.name, old.expires_at, old.allowed_models, old.rate_limits
            )
            made.update(key=new, plaintext=plaintext, retires_at=now + grace if grace else None)
            old.rotate(new.id, made["retires_at"])
            return [new]

        self.ledger.change(lambda: self.ledger.get_api_key(old_id), rotate)
        new = made["key"]
        issued = IssuedKey(
            key_id=new.id, account_id=new.account_id, name=new.name, prefix=new.prefix, plaintext=made["plaintext"]
        )
        return KeyRotation(issued=issued, old_key_id=old_id, old_retires_at=made["retires_at"])

    def set_allowed_models(self, key_id: str | UUID, models: Sequence[str] | None) -> ApiKey:
        """Limit a key to ``models`` (None: every model)."""
        key = self.ledger.get_api_key(key_id)
        key.allow_models(None if models is None else list(models))
        if key.pending_events:
            self.ledger.save(key)
        return self.ledger.get_api_key(key.id)

    def set_key_limits(
        self,
        key_id: str | UUID,
        *,
        rpm: int | None = None,
        tpm: int | None = None,
        max_parallel: int | None = None,
    ) -> ApiKey:
        """Set the key's rate limits (domain/rate_limits.py): each one given replaces the
        current one, ``0`` clears it, None leaves it; an event only when something changed."""
        key = self.ledger.get_api_key(key_id)
        key.set_rate_limits(checked_limits(key.rate_limits, rpm, tpm, max_parallel))
        if key.pending_events:
            self.ledger.save(key)
        return self.ledger.get_api_key(key.id)

    def _new_key(
        self,
        account_id: UUID,
        name: str,
        expires_at: datetime | None,
        models: list[str] | None,
        rate_limits: RateLimits | None = None,
    ) -> tuple[ApiKey, str]:
        scheme = self.ledger.key_scheme
        plaintext = scheme.new_user_key()
        key = ApiKey(
            digest=scheme.digest(plaintext),
            account_id=account_id,
            name=name,
            prefix=scheme.visible_prefix(plaintext),
            expires_at=expires_at,
        )
        if models is not None:
            key.allow_models(models)
        if rate_limits is not None:
            key.set_rate_limits(rate_limits)
        return key, plaintext


def parse_models(text: str | None) -> list[str] | None:
    """``a/b,c/d`` → a checked list; None or empty text → None (every model)."""
    if text is None or not text.strip():
        return None
    return check_model_patterns(text.split(","))


def check_grace(grace: timedelta) -> timedelta:
    """A grace period for a rotated key or credential: 0 to ``MAX_GRACE``."""
    if grace < timedelta(0) or grace > MAX_GRACE:
        raise InvalidRequest(f"a grace period is 0 to {MAX_GRACE.days} days", param="grace_seconds")
    return grace
