"""What one upstream attempt's outcome teaches, and whether another attempt may follow.

- A refused credential (401/403, ``upstream_auth_failed``): disabled through the ledger
  (the caller does it: it is a ledger command), and the next credential is tried.
- 429: the credential cools for the provider's Retry-After (application/health.py).
- 502/503/504 (a 5xx, a timeout, a broken connection): one failure counted toward the
  credential's failure rate; the next credential or target is tried.
- Anything else the provider answered (the caller's request was at fault: 400, 404, ...)
  shows the credential works; nothing else is tried.
"""

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from application.health import CredentialHealth
from domain.errors import UpstreamError

RETRYABLE_STATUSES = (429, 502, 503, 504)


def retryable(error: UpstreamError) -> bool:
    """True when another credential or target may serve what this attempt could not."""
    return error.status in RETRYABLE_STATUSES


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
        return float(value)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - (now or datetime.now(UTC))).total_seconds()
