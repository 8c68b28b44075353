"""The retry schedule (application/failover_policy.py): every backoff delay lies within
``[0, min(cap, base · 2^n)]``; the provider's ``Retry-After`` (seconds or an HTTP date) is
waited exactly when it is within the bound and failed over when beyond it; no retry after
the configured count, of a caller error, or of a refused credential."""

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from hypothesis import given
from hypothesis import strategies as st

from application.failover_policy import (
    BACKOFF_CAP_SECONDS,
    RETRY_AFTER_MAX_SECONDS,
    backoff_delay,
    retry_after_seconds,
    retry_delay,
)
from domain.errors import UpstreamError
from domain.provider import MAX_RETRIES, MAX_RETRY_BASE_MS, UpstreamPolicy

RETRYABLE = [
    UpstreamError("down", status=502, code="upstream_error"),
    UpstreamError("down", status=503, code="upstream_unavailable"),
    UpstreamError("slow", status=504, code="upstream_timeout"),
    UpstreamError("garbled", status=502, code="upstream_bad_response"),
]
NEVER_RETRIED = [
    UpstreamError("bad", status=400, code="upstream_rejected_request"),
    UpstreamError("no model", status=404, code="model_not_found"),
    UpstreamError("too big", status=413, code="upstream_rejected_request"),
    UpstreamError("refused", status=502, code="upstream_auth_failed"),
]


@given(
    retry=st.integers(min_value=0, max_value=200),
    base=st.floats(min_value=0.001, max_value=60.0),
    cap=st.floats(min_value=0.001, max_value=120.0),
    seed=st.integers(),
)
def test_every_backoff_delay_is_within_zero_and_the_capped_doubling(
    retry: int, base: float, cap: float, seed: int
) -> None:
    delay = backoff_delay(retry, base, random.Random(seed), cap)
    assert 0.0 <= delay <= min(cap, base * 2.0**retry)


@given(
    retries=st.integers(min_value=0, max_value=MAX_RETRIES),
    base_ms=st.integers(min_value=1, max_value=MAX_RETRY_BASE_MS),
    retry=st.integers(min_value=0, max_value=MAX_RETRIES + 2),
    error=st.sampled_from(RETRYABLE),
    seed=st.integers(),
)
def test_a_retryable_failure_is_retried_with_backoff_exactly_while_retries_are_left(
    retries: int, base_ms: int, retry: int, error: UpstreamError, seed: int
) -> None:
    policy = UpstreamPolicy(retries=retries, retry_base_ms=base_ms)
    delay = retry_delay(error, retry, policy, random.Random(seed))
    if retry >= retries:
        assert delay is None
    else:
        assert delay is not None and 0.0 <= delay <= min(BACKOFF_CAP_SECONDS, base_ms / 1000 * 2.0**retry)


@given(error=st.sampled_from(NEVER_RETRIED), retry=st.integers(min_value=0, max_value=MAX_RETRIES - 1))
def test_a_caller_error_or_a_refused_credential_is_never_retried(error: UpstreamError, retry: int) -> None:
    assert retry_delay(error, retry, UpstreamPolicy(retries=MAX_RETRIES), random.Random(0)) is None


@given(seconds=st.integers(min_value=0, max_value=120), status=st.sampled_from([429, 503]))
def test_a_retry_after_is_waited_up_to_the_bound_and_failed_over_beyond_it(seconds: int, status: int) -> None:
    error = UpstreamError("wait", status=status, code="upstream_rate_limited", retry_after=str(seconds))
    delay = retry_delay(error, 0, UpstreamPolicy(retries=1), random.Random(0))
    assert delay == (float(seconds) if seconds <= RETRY_AFTER_MAX_SECONDS else None)


def test_a_retry_after_may_be_an_http_date() -> None:
    now = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=2), usegmt=True), now) == 2.0
    assert retry_after_seconds("nan") is None and retry_after_seconds("inf") is None
    assert retry_after_seconds("soon") is None
