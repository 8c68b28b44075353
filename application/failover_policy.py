"""What one upstream attempt's outcome teaches, and whether another attempt may follow.

- A refused credential (401/403, ``upstream_auth_failed``): disabled through the ledger
  (the caller does it: it is a ledger command), and the next credential is tried.
- 429: the credential cools for the provider's Retry-After (application/health.py).
- 502/503/504 (a 5xx, a timeout, a broken connection): one failure counted toward the
  credential's failure rate; the next credential or target is tried.
- Anything else the provider answered (the caller's request was at fault: 400, 404, ...)
  shows the credential works; nothing else is tried.

Before the next credential or target, a retryable failure other than a refused credential is
retried on the same credential up to the provider's ``retries`` times (domain/provider.py
``UpstreamPolicy``), after ``retry_delay``: the provider's ``Retry-After`` when it sent one
(seconds or an HTTP date) and it is at most ``RETRY_AFTER_MAX_SECONDS``, else (longer: fail
over rather than wait) no retry; without one, exponential backoff with full jitter, uniform
over ``[0, min(BACKOFF_CAP_SECONDS, base · 2^n)]`` before retry ``n`` (from 0).
"""

import math
import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from application.health import CredentialHealth
from domain.errors import UpstreamError
from domain.provider import UpstreamPolicy

RETRYABLE_STATUSES = (429, 502, 503, 504)
RETRY_AFTER_MAX_SECONDS = 30.0  # a provider asking for a longer wait is failed over at once
BACKOFF_CAP_SECONDS = 8.0  # no backoff delay is longer


def retryable(error: UpstreamError) -> bool:
    """True when another credential or target may serve what this attempt could not."""
    return error.status in RETRYABLE_STATUSES


def retry_delay(error: UpstreamError, retry: int, policy: UpstreamPolicy, rng: random.Random) -> float | None:
    """Seconds to wait before retrying the same credential after ``error``, which ended its
    attempt number ``retry`` (0: the first); None: do not retry it, fail over."""
    if not retryable(error) or error.code == "upstream_auth_failed" or retry >= policy.retries:
        return None
    asked = retry_after_seconds(error.retry_after)
    if asked is not None:
        return max(0.0, asked) if asked <= RETRY_AFTER_MAX_SECONDS else None
    return backoff_delay(retry, policy.retry_base_ms / 1000, rng)


def backoff_delay(retry: int, base_seconds: float, rng: random.Random, cap: float = BACKOFF_CAP_SECONDS) -> float:
    """Full jitter: uniform over ``[0, min(cap, base_seconds · 2^retry)]``."""
    ceiling = min(cap, base_seconds * 2.0 ** min(retry, 64))
    return min(ceiling, rng.uniform(0.0, ceiling))


def learn(health: CredentialHealth, credential_id: str | None, error: UpstreamError | None) -> str | None:
    """Record the outcome of an attempt through ``credential_id`` (``error`` None: it was
    served). Returns the reason to disable the credential when the provider refused it."""
    if not credential_id:
        return None  # a provider that needs no secret (Ollama): nothing to cool
    if error is None:
        health.record_success(credential_id)
    elif error.code == "upstream_auth_failed":
        return f"refused by the provider ({error.status})"
    elif error.status == 429:
        health.rate_limited(credential_id, health.policy.rate_limit_cooldown(retry_after_seconds(error.retry_after)))
    elif error.status in RETRYABLE_STATUSES:
        health.record_failure(credential_id)
    else:
        health.record_success(credential_id)
    return None


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """A Retry-After header in seconds: a number, or an HTTP date; None when unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - (now or datetime.now(UTC))).total_seconds()
