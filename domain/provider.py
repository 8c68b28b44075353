"""An upstream provider and its credentials. A credential's events carry a masked hint
and a reference (``secret_ref``) to its secret in the secret store, never the secret or
its envelope: the envelope lives in a table that master-key rotation re-encrypts and from
which a superseded secret is deleted (application/key_management.py).

Stores made before the secret store recorded each credential's envelope in its
``CredentialAdded`` (and ``CredentialRewrapped``) events. Those events still load: such a
credential keeps the envelope as ``legacy_sealed`` until ``CredentialSecretMoved`` records
that its secret now lives in the store. History cannot be edited, so the old envelopes
stay in it: ``sealed_in_history`` counts them per master key id, for ``secrets status``.

A rotated credential stays usable until its ``retires_at`` (the grace period), then
routing leaves it out even before the ``CredentialDisabled`` that records it. A
provider that needs a secret never loses its last credential while it is enabled
(with none at all it would be called without one).

A credential's weight (its share of traffic, a whole number from 1 to
``MAX_CREDENTIAL_WEIGHT``) is set when it is added and changed by
``CredentialWeightChanged``, which records the previous weight too (the audit log shows
both); routing reads it on each request (application/routing.py).

Each credential is a frozen ``Credential``; a change replaces it. The events keep their
plain payloads (ids, references, envelopes as dicts): a store written before the value
object loads unchanged, and providers are never snapshotted, so no stored state has the
old shape.

How the gateway calls a provider (``UpstreamPolicy``: its timeouts and how often it retries
the same credential before failing over) is set by ``UpstreamPolicySet``, which records the
whole new policy. A provider that never had one (every provider older code registered)
keeps the defaults, which are the gateway's behaviour before the setting existed.
"""

import math
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain import ids
from domain.errors import InvalidRequest

PROVIDER_KINDS = ("openai", "anthropic", "gemini", "bedrock", "ollama", "openai-compatible")
KINDS_WITHOUT_SECRET = ("ollama",)

MAX_CREDENTIAL_WEIGHT = 1_000_000  # a credential's share of traffic: 1 to this
DEFAULT_TIMEOUT_CONNECT_SECONDS = 10.0
DEFAULT_RETRY_BASE_MS = 250
MAX_TIMEOUT_SECONDS = 3600.0
MAX_RETRIES = 10
MAX_RETRY_BASE_MS = 60_000


@dataclass(frozen=True)
class UpstreamPolicy:
    """How the gateway calls one provider (application/failover.py, the adapters).

    - ``timeout_connect``: seconds to open the TCP (and TLS) connection;
    - ``timeout_first_byte``: seconds from the start of an attempt until the response's
      status line and headers have arrived, connecting included; None: no bound of its own;
    - ``timeout_total``: seconds for the whole upstream exchange, a stream's body included;
      None: the gateway's ``TALLYHUB_UPSTREAM_TIMEOUT_SECONDS``;
    - ``retries``: how many more times the same credential is tried on a retryable failure
      before the next credential or target (0: fail over at once);
    - ``retry_base_ms``: the backoff's base delay (full jitter, doubled per retry)."""

    timeout_connect: float = DEFAULT_TIMEOUT_CONNECT_SECONDS
    timeout_first_byte: float | None = None
    timeout_total: float | None = None
    retries: int = 0
    retry_base_ms: int = DEFAULT_RETRY_BASE_MS

    def __post_init__(self) -> None:
        for name in ("timeout_connect", "timeout_first_byte", "timeout_total"):
            value = getattr(self, name)
            if value is None and name != "timeout_connect":
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or not 0 < value <= MAX_TIMEOUT_SECONDS
            ):
                raise InvalidRequest(
                    f"{name} must be a number of seconds above 0 and at most {MAX_TIMEOUT_SECONDS:g}, got {value!r}",
                    param=name,
                )
            object.__setattr__(self, name, float(value))  # 5 and 5.0 are one policy, stored alike
        _check_whole(self.retries, "retries", 0, MAX_RETRIES)
        _check_whole(self.retry_base_ms, "retry_base_ms", 1, MAX_RETRY_BASE_MS)

    def to_dict(self) -> dict[str, Any]:
        """The stored form (``UpstreamPolicySet``'s fields) and the JSON the CLI and API show."""
        return asdict(self)


def _check_whole(value: Any, name: str, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequest(f"{name} must be a whole number from {low} to {high}, got {value!r}", param=name)


def check_weight(weight: Any) -> None:
    """A credential's weight is a whole number from 1 to ``MAX_CREDENTIAL_WEIGHT``."""
    if isinstance(weight, bool) or not isinstance(weight, int):
        raise InvalidRequest(f"a credential weight must be a whole number, got {weight!r}", param="weight")
    if weight <= 0:
        raise InvalidRequest("a credential weight must be positive", param="weight")
    if weight > MAX_CREDENTIAL_WEIGHT:
        raise InvalidRequest(f"a credential weight must be at most {MAX_CREDENTIAL_WEIGHT:,}", param="weight")


@dataclass(frozen=True)
class Credential:
    """One upstream credential of a provider, as its events left it (never its secret)."""

    credential_id: str
    hint: str  # the secret masked to its last 4 characters at most
    weight: int
    enabled: bool = True
    secret_ref: str | None = None  # its row in the secret store
    legacy_sealed: dict[str, str] | None = field(default=None, repr=False, hash=False)  # before the secret store
    disabled_reason: str | None = None
    disabled_automatically: bool = False
    replaced_by: str | None = None  # rotated: the credential that replaces it
    retires_at: datetime | None = None  # rotated: the end of its grace period

    def is_retired(self, now: datetime) -> bool:
        """Rotated and past its grace period: never used again."""
        return self.retires_at is not None and now >= self.retires_at


class Provider(Aggregate):
    class Registered(Aggregate.Created):
        name: str
        kind: str
        base_url: str | None
        region: str | None

    class CredentialStored(Aggregate.Event):
        credential_id: str
        secret_ref: str
        hint: str
        weight: int

    class CredentialAdded(Aggregate.Event):
        credential_id: str
        sealed: dict[str, str]
        hint: str
        weight: int

    class CredentialSecretMoved(Aggregate.Event):
        credential_id: str
        secret_ref: str

    class CredentialDisabled(Aggregate.Event):
        credential_id: str
        reason: str
        automatic: bool

    class CredentialEnabled(Aggregate.Event):
        credential_id: str

    class CredentialRotated(Aggregate.Event):
        credential_id: str
        replaced_by: str
        retires_at: datetime

    class CredentialDeleted(Aggregate.Event):
        credential_id: str

    class CredentialRewrapped(Aggregate.Event):
        credential_id: str
        sealed: dict[str, str]

    class CredentialWeightChanged(Aggregate.Event):
        credential_id: str
        weight: int
        previous: int

    class Disabled(Aggregate.Event):
        pass

    class UpstreamPolicySet(Aggregate.Event):
        timeout_connect: float
        timeout_first_byte: float | None
        timeout_total: float | None
        retries: int
        retry_base_ms: int

    class Enabled(Aggregate.Event):
        pass

    @staticmethod
    def create_id(name: str) -> UUID:
        return ids.provider_id(name)

    @event(Registered)
    def __init__(self, name: str, kind: str, base_url: str | None, region: str | None) -> None:
        self.name = name
        self.kind = kind
        self.base_url = base_url
        self.region = region
        self.enabled = True
        self.credentials: list[Credential] = []
        self.sealed_in_history: dict[str, int] = {}  # master key id -> envelopes the events hold
        self.policy = UpstreamPolicy()

    def add_credential(self, credential_id: str, secret_ref: str, hint: str, weight: int = 1) -> None:
        """A credential whose secret the secret store holds under ``secret_ref``."""
        check_weight(weight)
        if any(c.credential_id == credential_id for c in self.credentials):
            raise InvalidRequest(f"credential {credential_id} already exists")
        self._credential_stored(credential_id=credential_id, secret_ref=secret_ref, hint=hint, weight=weight)

    @event(CredentialStored)
    def _credential_stored(self, credential_id: str, secret_ref: str, hint: str, weight: int) -> None:
        self.credentials.append(Credential(credential_id, hint, weight, secret_ref=secret_ref))

    @event(CredentialAdded)
    def _credential_added(self, credential_id: str, sealed: dict[str, str], hint: str, weight: int) -> None:
        """Before the secret store: the envelope itself was recorded (only old events call this)."""
        self.credentials.append(Credential(credential_id, hint, weight, legacy_sealed=sealed))
        self._count_sealed(sealed)

    def move_secret(self, credential_id: str, secret_ref: str) -> None:
        """Record that a credential recorded with its envelope now has its secret in the store."""
        if self.credential(credential_id).secret_ref is None:
            self._credential_secret_moved(credential_id=credential_id, secret_ref=secret_ref)

    @event(CredentialSecretMoved)
    def _credential_secret_moved(self, credential_id: str, secret_ref: str) -> None:
        self._replace(credential_id, legacy_sealed=None, secret_ref=secret_ref)

    def disable_credential(self, credential_id: str, reason: str, *, automatic: bool) -> None:
        """Take a credential out of rotation: by the operator, or automatically when the
        provider refused it (an automatic disable is re-probed and may be lifted)."""
        if self.credential(credential_id).enabled:
            self._credential_disabled(credential_id=credential_id, reason=reason, automatic=automatic)

    @event(CredentialDisabled)
    def _credential_disabled(self, credential_id: str, reason: str, automatic: bool) -> None:
        self._replace(credential_id, enabled=False, disabled_reason=reason, disabled_automatically=automatic)

    def enable_credential(self, credential_id: str) -> None:
        if not self.credential(credential_id).enabled:
            self._credential_enabled(credential_id=credential_id)

    @event(CredentialEnabled)
    def _credential_enabled(self, credential_id: str) -> None:
        self._replace(credential_id, enabled=True, disabled_reason=None, disabled_automatically=False)

    def rotate_credential(self, credential_id: str, replaced_by: str, retires_at: datetime) -> None:
        """Mark a credential as replaced by another; it stays usable until ``retires_at``."""
        credential = self.credential(credential_id)
        self.credential(replaced_by)
        if replaced_by == credential_id:
            raise InvalidRequest("a credential cannot replace itself", param="credential")
        if not credential.enabled:
            raise InvalidRequest(
                f"credential {credential_id} is disabled; delete it or add a new one", param="credential"
            )
        if credential.replaced_by:
            raise InvalidRequest(f"credential {credential_id} was already rotated", param="credential")
        self._credential_rotated(credential_id=credential_id, replaced_by=replaced_by, retires_at=retires_at)

    @event(CredentialRotated)
    def _credential_rotated(self, credential_id: str, replaced_by: str, retires_at: datetime) -> None:
        self._replace(credential_id, replaced_by=replaced_by, retires_at=retires_at)

    def set_credential_weight(self, credential_id: str, weight: int) -> None:
        """Give a credential another share of traffic (no event when it already has it)."""
        check_weight(weight)
        previous = self.credential(credential_id).weight
        if weight != previous:
            self._credential_weight_changed(credential_id=credential_id, weight=weight, previous=previous)

    @event(CredentialWeightChanged)
    def _credential_weight_changed(self, credential_id: str, weight: int, previous: int) -> None:
        self._replace(credential_id, weight=weight)

    def delete_credential(self, credential_id: str) -> None:
        self.credential(credential_id)
        if self.enabled and self.kind not in KINDS_WITHOUT_SECRET and len(self.credentials) == 1:
            raise InvalidRequest(
                f"{credential_id} is the last credential of {self.name!r}: add another one "
                "or disable the provider first",
                param="credential",
            )
        self._credential_deleted(credential_id=credential_id)

    @event(CredentialDeleted)
    def _credential_deleted(self, credential_id: str) -> None:
        self.credentials = [c for c in self.credentials if c.credential_id != credential_id]

    @event(CredentialRewrapped)
    def _credential_rewrapped(self, credential_id: str, sealed: dict[str, str]) -> None:
        """Before the secret store: a master-key rotation recorded the re-wrapped envelope
        (only old events call this)."""
        if self.credential(credential_id).secret_ref is None:
            self._replace(credential_id, legacy_sealed=sealed)
        self._count_sealed(sealed)

    def _count_sealed(self, sealed: dict[str, str]) -> None:
        kid = sealed.get("kid") if isinstance(sealed, dict) else None
        kid = kid if isinstance(kid, str) and kid else "(none)"
        self.sealed_in_history[kid] = self.sealed_in_history.get(kid, 0) + 1

    def credential(self, credential_id: str) -> Credential:
        for credential in self.credentials:
            if credential.credential_id == credential_id:
                return credential
        raise InvalidRequest(f"provider {self.name!r} has no credential {credential_id!r}", param="credential")

    def _replace(self, credential_id: str, **changes: Any) -> None:
        self.credentials = [replace(c, **changes) if c.credential_id == credential_id else c for c in self.credentials]

    def disable(self) -> None:
        if self.enabled:
            self._disabled()

    @event(Disabled)
    def _disabled(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        if not self.enabled:
            self._enabled()

    @event(Enabled)
    def _enabled(self) -> None:
        self.enabled = True

    def set_policy(self, policy: UpstreamPolicy) -> None:
        """Call the provider with ``policy`` from now on (no event when it is the current one)."""
        if policy != self.policy:
            self._upstream_policy_set(**policy.to_dict())

    @event(UpstreamPolicySet)
    def _upstream_policy_set(
        self,
        timeout_connect: float,
        timeout_first_byte: float | None,
        timeout_total: float | None,
        retries: int,
        retry_base_ms: int,
    ) -> None:
        self.policy = UpstreamPolicy(timeout_connect, timeout_first_byte, timeout_total, retries, retry_base_ms)

    def usable_credentials(self, now: datetime | None = None) -> list[Credential]:
        """Enabled credentials whose grace period (if rotated) has not ended at ``now``."""
        now = now or datetime.now(UTC)
        return [c for c in self.credentials if c.enabled and not c.is_retired(now)]

    def current_credentials(self, now: datetime) -> list[Credential]:
        """Every credential whose secret may still be needed: all but rotated ones past their
        grace period (those are never used again, enabled or not)."""
        return [c for c in self.credentials if not c.is_retired(now)]

    def retired_credentials(self, now: datetime) -> list[Credential]:
        """Rotated credentials past their grace period that are still recorded as enabled."""
        return [c for c in self.credentials if c.enabled and c.is_retired(now)]
