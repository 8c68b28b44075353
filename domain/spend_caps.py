"""Spend caps: limits on what an account, or one of its API keys, may spend per UTC day
and per UTC month. Pure rules; the Account aggregate keeps the counts. The error,
``SpendCapReached``, is in domain/errors.py (still importable from here)."""

from datetime import UTC, datetime, timedelta

from domain.errors import SpendCapReached

__all__ = ["WINDOWS", "SpendCapReached", "any_cap", "check", "seconds_until_reset", "windows_at"]

WINDOWS = ("day", "month")


def any_cap(caps: dict[str, int | None]) -> bool:
    """Whether a scope's caps (window -> cap or None) limit anything at all."""
    return any(cap is not None for cap in caps.values())


def windows_at(now: datetime) -> dict[str, str]:
    """The spend-cap windows ``now`` falls in, named as ``strftime("%Y-%m-%d")`` and ``("%Y-%m")``
    name them (stored in events: the names must never change); formatted directly, since
    every hold asks and ``strftime`` cost ten times as much."""
    utc = now.astimezone(UTC)
    month = f"{utc.year}-{utc.month:02d}"
    return {"day": f"{month}-{utc.day:02d}", "month": month}


def seconds_until_reset(window: str, now: datetime) -> int:
    utc = now.astimezone(UTC)
    if window == "day":
        reset = datetime(utc.year, utc.month, utc.day, tzinfo=UTC) + timedelta(days=1)
    else:
        reset = datetime(utc.year + (utc.month == 12), utc.month % 12 + 1, 1, tzinfo=UTC)
    return max(1, int((reset - utc).total_seconds() + 0.999))


def check(
    caps: dict[str, int | None], used: dict[str, int], amount: int, windows: dict[str, str], scope: str, now: datetime
) -> None:
    """Raise SpendCapReached when ``amount`` more would pass a cap in a current window."""
    for window in WINDOWS:
        cap = caps.get(window)
        if cap is not None and window in windows and used.get(window, 0) + amount > cap:
            raise SpendCapReached(scope, window, cap, seconds_until_reset(window, now))
