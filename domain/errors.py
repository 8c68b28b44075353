"""The error tree. The domain, application and provider adapters raise these;
``adapters/http/errors.py`` maps each class once to an OpenAI-shaped error with an honest
status. No class here carries an HTTP status of its own, except ``UpstreamError``, whose
``status`` is data: what the provider's failure means to the caller (relayed or mapped by
adapters/providers/errors.py), also recorded with the attempt and read by the failover policy.

Errors that only live inside one module (settings, export formats, CLI usage) stay there.
"""

from uuid import UUID


class TallyhubError(Exception):
    """Base of every error Tallyhub raises on purpose. ``admission``: the rate limiter's
    answer (application/ports.py ``Admission``) when the request it failed had been admitted
    under a limit, so that its answer carries OpenAI's ``x-ratelimit-*`` headers too (set by
    application/calls.py; ``None``: no limit applied)."""

    code = "tallyhub_error"
    admission: object = None


class InvalidRequest(TallyhubError):
    code = "invalid_request"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class EmptyWindow(InvalidRequest):
    """A replay or export window that holds nothing to work on."""

    code = "empty_window"


class BalanceLimitExceeded(InvalidRequest):
    """A movement that would take an account's balance past ``bounds.MAX_BALANCE``."""

    code = "balance_limit_exceeded"


class RefundExceedsPayment(InvalidRequest):
    """A payment refund that, with the refunds of that payment before it, is more than the payment."""

    code = "refund_exceeds_payment"


class NotInCreditsMode(InvalidRequest):
    """Something that only means anything with ``TALLYHUB_BILLING_MODE=credits`` (spend caps)."""

    code = "not_in_credits_mode"

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what} take effect only in credits mode (TALLYHUB_BILLING_MODE=credits); this gateway "
            f"runs in track mode, where they would be silently ignored"
        )


class SpendCapReached(TallyhubError):
    """A hold that would pass an account's or API key's daily or monthly spend cap
    (domain/spend_caps.py); answered 429 with ``Retry-After``."""

    code = "spend_cap_reached"

    def __init__(self, scope: str, window: str, cap: int, retry_after_seconds: int) -> None:
        who = "this account" if scope == "account" else "this API key"
        super().__init__(
            f"{who} has reached its {window}ly spend cap of {cap} nanocredits; it resets in {retry_after_seconds} s"
        )
        self.scope, self.window, self.cap = scope, window, cap
        self.retry_after_seconds = retry_after_seconds


class RateLimitExceeded(TallyhubError):
    """A request over an API key's or account's requests-per-minute, tokens-per-minute or
    parallel-requests limit (domain/rate_limits.py), refused before any hold; answered 429
    with ``Retry-After``. ``refused_by`` names the scope by id and the limit ("key:<id>
    requests"); ``admission`` is the limiter's answer (application/ports.py ``Admission``),
    which the API turns into OpenAI's ``x-ratelimit-*`` headers."""

    code = "rate_limit_exceeded"

    def __init__(self, refused_by: str, retry_after_seconds: int, admission: object = None) -> None:
        super().__init__(f"rate limit reached ({refused_by}); try again in {retry_after_seconds} s")
        self.refused_by = refused_by
        self.retry_after_seconds = retry_after_seconds
        self.admission = admission


class AuthenticationFailed(TallyhubError):
    code = "invalid_api_key"


class TooManyFailedAuthentications(TallyhubError):
    """This client address failed to authenticate too often lately (application/auth_throttle.py);
    answered 429 with ``Retry-After`` and its key is not checked."""

    code = "too_many_failed_auth"

    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(f"too many failed authentications from this address; try again in {retry_after_seconds} s")
        self.retry_after_seconds = retry_after_seconds


class PermissionDenied(TallyhubError):
    code = "permission_denied"


class NotFound(TallyhubError):
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class AccountNotFound(NotFound):
    code = "account_not_found"


class ApiKeyNotFound(NotFound):
    code = "api_key_not_found"


class ProviderNotFound(NotFound):
    code = "provider_not_found"


class PaymentNotFound(NotFound):
    """A refund names a payment that was never credited to that account."""

    code = "payment_not_found"


class AlreadyExists(TallyhubError):
    code = "already_exists"


class IdempotencyConflict(AlreadyExists):
    """An idempotency key used before for a movement with other content (amount, reason, ...)."""

    code = "idempotency_conflict"
    param = "idempotency_key"


class InsufficientCredits(TallyhubError):
    code = "insufficient_credits"

    def __init__(self, account_id: UUID, *, needed: int, available: int) -> None:
        super().__init__(
            f"insufficient credits: this request may cost up to {needed} nanocredits "
            f"and the account has {available} available"
        )
        self.account_id = account_id
        self.needed = needed
        self.available = available


class HoldNotFound(TallyhubError):
    code = "hold_not_found"


class NotInitialised(TallyhubError):
    code = "not_initialised"


class ProjectionStopped(TallyhubError):
    """A read that needs a read model stopped at an event it could not apply (503): its
    rows stopped there. Why, and how to resume it: ``tallyhub projections status``."""

    code = "projection_stopped"

    def __init__(self, projection: str, position: int) -> None:
        super().__init__(
            f"the {projection} read model is stopped at event {position}, which it could not apply; "
            f"its reads are unavailable until the operator resumes it (tallyhub projections status)"
        )
        self.projection = projection
        self.position = position


class UpstreamError(TallyhubError):
    """A provider failed; ``status`` is what the caller gets (502, 503, 504, 429 or a 4xx)."""

    code = "upstream_error"

    def __init__(
        self, message: str, *, status: int, code: str = "upstream_error", retry_after: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after = retry_after


class MalformedUpstreamAnswer(TallyhubError):
    """The provider's answer cannot be read as one: bad JSON, a missing or mistyped field,
    broken SSE or event-stream framing, an error reported inside a stream, a stream that
    ended before it was finished. Raised explicitly where an adapter (adapters/providers/)
    detects it; with network errors and timeouts it is all ``READ_FAILURES`` holds
    (adapters/providers/base.py), so a bug of ours (KeyError, TypeError, a plain ValueError)
    is never taken for a provider failure."""

    code = "upstream_bad_response"


class SecretError(TallyhubError):
    """A secret could not be sealed or opened (wrong key, tampered ciphertext)."""

    code = "secret_error"
