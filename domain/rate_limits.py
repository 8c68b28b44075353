"""Rate limits: how many requests per minute (RPM), tokens per minute (TPM) and requests in
flight at once an API key, or an account, may use. Pure values and rules; the ``ApiKey`` and
``Account`` aggregates keep the current ``RateLimits``, a ``RateLimiter``
(application/ports.py) enforces them. The error, ``RateLimitExceeded``, is in domain/errors.py."""

from dataclasses import dataclass

__all__ = ["RateLimits"]


@dataclass(frozen=True)
class RateLimits:
    rpm: int | None = None  # requests per minute
    tpm: int | None = None  # tokens per minute (input + output, worst case at admission)
    max_parallel: int | None = None  # requests in flight at once
