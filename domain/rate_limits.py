"""Rate limits: how many requests per minute (RPM), tokens per minute (TPM) and requests in
flight at once an API key, or an account, may use. Pure values and rules; the ``ApiKey``
aggregate keeps its key's current ``RateLimits`` and ``AccountRateLimits`` (below) an
account's; a ``RateLimiter`` (application/ports.py) enforces them. The error,
``RateLimitExceeded``, is in domain/errors.py.

Rules kept here:
- a limit is an integer from 1 to ``MAX_LIMIT``, or None (no limit); ``0`` given by an
  operator clears a limit (stored as None);
- every change is an event (``ApiKey.RateLimitsSet``, ``AccountRateLimits.LimitsSet``).

An account's limits are an aggregate of their own, named by the account's id, not events of
the ``Account``: the account is saved with every request (its holds), so a copy of it read
for the hot path is stale at once, while its limits change rarely and are read on every
request through the ledger's read cache, as the API key is.
"""

from dataclasses import dataclass
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidRequest
from domain.ids import NAMESPACE

__all__ = ["MAX_LIMIT", "AccountRateLimits", "RateLimits", "checked_limits"]

MAX_LIMIT = 10**9


@dataclass(frozen=True)
class RateLimits:
    rpm: int | None = None  # requests per minute
    tpm: int | None = None  # tokens per minute (input + output, worst case at admission)
    max_parallel: int | None = None  # requests in flight at once

    @property
    def any(self) -> bool:
        return self.rpm is not None or self.tpm is not None or self.max_parallel is not None

    def plain(self) -> dict[str, int | None]:
        return {"rpm": self.rpm, "tpm": self.tpm, "max_parallel": self.max_parallel}


def checked_limit(value: int | None, param: str) -> int | None:
    """A limit as stored: None kept, 0 → None, 1..MAX_LIMIT kept; raises InvalidRequest."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0 or value > MAX_LIMIT:
        raise InvalidRequest(f"{param} is a whole number from 0 (no limit) to {MAX_LIMIT}", param=param)
    return value or None


def checked_limits(current: RateLimits, rpm: int | None, tpm: int | None, max_parallel: int | None) -> RateLimits:
    """``current`` with each limit given replaced (None: unchanged; 0: cleared)."""
    return RateLimits(
        rpm=current.rpm if rpm is None else checked_limit(rpm, "rpm"),
        tpm=current.tpm if tpm is None else checked_limit(tpm, "tpm"),
        max_parallel=current.max_parallel if max_parallel is None else checked_limit(max_parallel, "max_parallel"),
    )


class AccountRateLimits(Aggregate):
    """An account's rate limits (see the module's docstring for why apart from the Account)."""

    class Created(Aggregate.Created):
        account_id: UUID

    class LimitsSet(Aggregate.Event):
        rpm: int | None
        tpm: int | None
        max_parallel: int | None

    @staticmethod
    def create_id(account_id: UUID) -> UUID:
        return account_limits_id(account_id)

    @event(Created)
    def __init__(self, account_id: UUID) -> None:
        self.account_id = account_id
        self.limits = RateLimits()

    def set_limits(self, limits: RateLimits) -> None:
        if limits != self.limits:
            self._limits_set(rpm=limits.rpm, tpm=limits.tpm, max_parallel=limits.max_parallel)

    @event(LimitsSet)
    def _limits_set(self, rpm: int | None, tpm: int | None, max_parallel: int | None) -> None:
        self.limits = RateLimits(rpm=rpm, tpm=tpm, max_parallel=max_parallel)


_limits_ids: dict[UUID, UUID] = {}


def account_limits_id(account_id: UUID) -> UUID:
    """The id of an account's ``AccountRateLimits`` (looked up on every request: kept)."""
    found = _limits_ids.get(account_id)
    if found is None:
        if len(_limits_ids) > 16_384:
            _limits_ids.clear()
        found = _limits_ids[account_id] = uuid5(NAMESPACE, f"account-rate-limits:{account_id.hex}")
    return found
