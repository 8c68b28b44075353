"""The ports the application needs from the outside world. Adapters implement them;
unit tests use the fakes in tests/fakes/ (the provider port: tests/fakes/provider.py).

A chat exchange speaks OpenAI's chat format whatever the provider's: a whole
``chat.completion`` document, or ``chat.completion.chunk`` payloads then ``DONE``. What a
stream is charged however it ends is application/streams.py's rule."""

from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from domain.rate_limits import RateLimits

if TYPE_CHECKING:
    from uuid import UUID

    from application.routing import Route
    from domain.request_record import RequestDetails


class KeyVault(Protocol):
    """Seals and opens secrets (provider credentials, the API-key pepper)."""

    def seal(self, plaintext: bytes, *, context: bytes) -> dict[str, str]: ...

    def open(self, sealed: dict[str, str], *, context: bytes) -> bytes: ...


@dataclass(frozen=True)
class StoredSecret:
    """One row of the secret store: the current envelope of the secret named ``ref``."""

    ref: str
    envelope: dict[str, str] = field(repr=False)
    version: int  # 1 when written, +1 at each re-encryption
    created_at: float  # seconds since the epoch

    @property
    def kid(self) -> str:
        return self.envelope.get("kid", "")


class SecretStore(Protocol):
    """Envelopes kept apart from the immutable event history, in the same database: events
    name a secret by its ``ref``; its one current envelope lives here, is re-encrypted in
    place and deleted when superseded (adapters/persistence/secret_store.py)."""

    def create_table(self) -> None: ...

    def get(self, ref: str) -> StoredSecret | None: ...

    def all(self) -> list[StoredSecret]: ...

    def add(self, ref: str, envelope: dict[str, str]) -> bool:
        """Write a new row; False (and the row kept as it was) when ``ref`` has one already."""
        ...

    def replace(self, ref: str, envelope: dict[str, str], *, version: int) -> bool:
        """Overwrite the row if it is still at ``version``; False if it changed or went."""
        ...

    def delete(self, refs: Iterable[str]) -> int: ...

    def scrub(self) -> None:
        """Leave no replaced or deleted envelope readable in the database's files (best effort)."""
        ...


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class StatusOf(Protocol):
    """The HTTP status the caller is answered with for an error: adapters/http/errors.py
    ``status_of``, the one place that chooses it (an ``UpstreamError`` brings its own). The
    billed call records a failed or refused request with it before the error reaches HTTP,
    so the request log keeps the status the caller saw."""

    def __call__(self, error: Exception, /) -> int: ...


class RequestObserver(Protocol):
    """Told of each request once its record is durably saved (completed, failed or refused):
    the metrics and the access log (adapters/observers.py). Called once per record, on the
    event loop or on the account writer's thread; RequestBilling guards the call, so an
    observer's error never reaches billing. ``failed_attempts``: the upstream attempts that
    failed before the one that served it (failovers)."""

    def recorded(self, request_id: "UUID", details: "RequestDetails", failed_attempts: int) -> None: ...


class ApiKeyScheme(Protocol):
    """Makes API keys and their keyed digests (see adapters/crypto/key_digest.py)."""

    def new_user_key(self) -> str: ...

    def new_admin_key(self) -> str: ...

    def visible_prefix(self, key: str) -> str: ...

    def digest(self, key: str) -> str: ...

    def matches(self, key: str, digest: str) -> bool: ...


class ChatExchange(Protocol):
    """One upstream chat call in flight, in OpenAI's chat format whatever the provider's."""

    async def read_completion(self) -> bytes:
        """The whole answer as an OpenAI ``chat.completion`` JSON document."""
        ...

    def stream_data(self) -> AsyncIterator[bytes]:
        """OpenAI ``chat.completion.chunk`` payloads, then ``DONE`` if the provider finished."""
        ...

    def stream_batches(self) -> AsyncIterator[list[bytes]]:
        """``stream_data``'s payloads in the groups they arrived in (one each, if it cannot tell)."""
        ...

    def abort(self) -> None:
        """Cancel the upstream call (the caller went away, or its hold was refused)."""
        ...

    def release(self) -> None:
        """Return the connection; safe to call more than once."""
        ...


class ChatProvider(Protocol):
    async def start_chat(self, route: "Route", body: dict[str, Any]) -> ChatExchange:
        """Start a chat call; raises UpstreamError for every failure before the first byte."""
        ...


class ProviderAdapter(ChatProvider, Protocol):
    """A provider adapter and every optional capability. A capability the provider lacks
    raises InvalidRequest (a 400 naming the provider) rather than being absent, and a
    provider that cannot be probed answers None (adapters/providers/base.py)."""

    async def embed(self, route: "Route", body: dict[str, Any]) -> bytes:
        """OpenAI's embeddings document."""
        ...

    async def generate_images(self, route: "Route", body: dict[str, Any]) -> bytes:
        """OpenAI's images document."""
        ...

    async def probe(self, route: "Route") -> bool | None:
        """Is the credential accepted? A cheap call that costs no tokens; None: cannot tell."""
        ...


class CredentialSwitch(Protocol):
    """Disables a credential the provider refused (the ledger)."""

    def disable_credential(self, name: str, credential_id: str, reason: str, *, automatic: bool = False) -> Any: ...


@dataclass(frozen=True)
class LimitScope:
    """One set of rate limits a request counts against (its key's, its account's)."""

    name: str  # "key:<dashed uuid>" or "account:<dashed uuid>": ids only, never names
    limits: RateLimits


@dataclass(frozen=True)
class WindowState:
    """One window's state, for OpenAI's ``x-ratelimit-*`` headers."""

    limit: int
    remaining: int  # after this request (0 when refused)
    reset_seconds: float  # until the window has room again for what was asked


@dataclass(frozen=True)
class Admission:
    admitted: bool
    retry_after_seconds: float  # > 0 when refused: when the refusing limit has room again
    refused_by: str | None  # e.g. "key:<id> requests" (for the error message), None if admitted
    requests: WindowState | None  # the tightest RPM scope (None: no RPM limit applies)
    tokens: WindowState | None  # the tightest TPM scope
    lease: str  # names this admission (its parallel slot, its token entry)


class RateLimiter(Protocol):
    """Enforces ``RateLimits``: RPM and TPM over a sliding window of 60 one-second buckets
    (the bucket of ``int(now)``), parallel slots as leases that expire after the hold TTL.
    ``now`` is the caller's ``time.time()``. A limit of None does not apply."""

    async def admit(self, scopes: Sequence[LimitScope], tokens: int, now: float) -> Admission:
        """All scopes or none: admitted only if every scope has room for one more request,
        ``tokens`` more tokens and one more parallel slot; then all are taken at once."""
        ...

    async def settle(self, scopes: Sequence[LimitScope], admission: Admission, tokens: int, now: float) -> None:
        """The request ended: its tokens corrected from the worst case to ``tokens`` (never
        below 0), its parallel slot released. Idempotent; never raises for a limiter outage."""
        ...

    async def aclose(self) -> None:
        """Release what the limiter holds open (a connection pool) when the app stops."""
        ...
