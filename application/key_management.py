"""Secrets and keys over a Ledger: master-key rotation, provider credential rotation
and deletion, API-key rotation and per-key model limits.

Invariants kept here:
- ``rotate_master`` re-wraps every envelope the current state holds (each provider
  credential and the API-key pepper) under the newest master key, one event per
  envelope (``Provider.CredentialRewrapped``, ``Deployment.PepperRewrapped``); an
  envelope is opened in full before it is re-wrapped, so a tampered one is reported,
  never copied; running it again changes nothing;
- ``secrets_status`` lists every kid the state still needs: a configured key that no
  envelope names can be retired without losing anything;
- a rotated API key and its replacement are saved in one transaction, the new key
  carrying the old one's account, name, expiry and model limits, so a crash never
  leaves a replacement with wider access than the key it replaces;
- a rotated credential is replaced in one event-pair on its provider; the old one
  stays usable until its grace period ends, then routing leaves it out.
Plaintext secrets pass through here only on their way to the vault or, for a newly
issued key, back to the caller once.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.domain import Aggregate

from application.ledger import PEPPER_CONTEXT, IssuedKey, Ledger
from domain import ids
from domain.api_key import ApiKey, check_model_patterns
from domain.deployment import Deployment
from domain.errors import InvalidRequest, NotInitialised, SecretError
from domain.provider import Provider

MAX_GRACE = timedelta(days=30)


class RewrappingVault(Protocol):
    """What key management needs of the vault beyond ``KeyVault`` (see adapters/crypto/aes_gcm.py)."""

    @property
    def kid(self) -> str: ...

    def rewrap(self, sealed: dict[str, str]) -> dict[str, str]: ...

    def open(self, sealed: dict[str, str], *, context: bytes) -> bytes: ...


@dataclass(frozen=True)
class SealedRef:
    """One envelope the current state holds: the pepper or a provider credential."""

    what: str  # "pepper" | "credential"
    kid: str
    provider: str | None = None
    credential_id: str | None = None

    @property
    def label(self) -> str:
        return "API-key pepper" if self.what == "pepper" else f"credential {self.credential_id} of {self.provider}"


@dataclass(frozen=True)
class SecretsStatus:
    newest_kid: str
    configured_kids: list[str]
    in_use: dict[str, list[str]]  # kid -> labels of the envelopes sealed under it
    missing_kids: list[str]  # named by an envelope but not configured: those secrets cannot be opened
    retirable_kids: list[str]  # configured, not the newest, named by no envelope

    @property
    def rotation_needed(self) -> bool:
        return any(kid != self.newest_kid for kid in self.in_use)


@dataclass(frozen=True)
class RotationResult:
    newest_kid: str
    rewrapped: list[str] = field(default_factory=list)  # labels of the envelopes re-wrapped now
    status: SecretsStatus | None = None


# --- master keys --------------------------------------------------------------------


def sealed_refs(ledger: Ledger) -> list[SealedRef]:
    deployment = _deployment(ledger)
    refs = [SealedRef("pepper", _kid(deployment.sealed_pepper))]
    for provider in ledger.list_providers():
        refs += [SealedRef("credential", _kid(c["sealed"]), provider.name, c["credential_id"])
                 for c in provider.credentials]
    return refs


def secrets_status(ledger: Ledger) -> SecretsStatus:
    vault = _vault(ledger)
    configured = vault.ring.kids
    in_use: dict[str, list[str]] = {}
    for ref in sealed_refs(ledger):
        key = vault.ring.find(ref.kid)
        in_use.setdefault(key.kid if key else ref.kid, []).append(ref.label)
    return SecretsStatus(
        newest_kid=vault.kid,
        configured_kids=configured,
        in_use=in_use,
        missing_kids=[kid for kid in in_use if kid not in configured],
        retirable_kids=[kid for kid in configured if kid != vault.kid and kid not in in_use],
    )


def check_key_ring(ledger: Ledger) -> None:
    """At start: every envelope the state holds opens with the configured keys, or SecretError
    naming each one that does not (a missing kid, a wrong key, a tampered envelope)."""
    problems = []
    deployment = _deployment(ledger)
    try:
        ledger.vault.open(deployment.sealed_pepper, context=PEPPER_CONTEXT)
    except SecretError as error:
        problems.append(f"API-key pepper: {error}")
    for provider in ledger.list_providers():
        for credential in provider.credentials:
            try:
                ledger.open_credential(provider, credential)
            except SecretError as error:
                problems.append(f"credential {credential['credential_id']} of {provider.name}: {error}")
    if problems:
        raise SecretError("the configured master keys cannot open every secret:\n  " + "\n  ".join(problems))


def rotate_master(ledger: Ledger) -> RotationResult:
    """Re-wrap every envelope not yet under the newest master key. Online and idempotent."""
    vault = _vault(ledger)
    newest = vault.kid
    rewrapped: list[str] = []

    def rewrap_pepper(deployment: Deployment) -> list[Aggregate] | None:
        if _kid(deployment.sealed_pepper) == newest:
            return None
        vault.open(deployment.sealed_pepper, context=PEPPER_CONTEXT)
        deployment.rewrap_pepper(vault.rewrap(deployment.sealed_pepper))
        return []

    if ledger._change(lambda: _deployment(ledger), rewrap_pepper):
        rewrapped.append("API-key pepper")
    for name in [p.name for p in ledger.list_providers()]:
        done: list[str] = []

        def rewrap_credentials(provider: Provider) -> list[Aggregate] | None:
            done.clear()
            for credential in provider.credentials:
                if _kid(credential["sealed"]) != newest:
                    ledger.open_credential(provider, credential)  # proves the whole envelope is intact
                    provider.rewrap_credential(credential["credential_id"], vault.rewrap(credential["sealed"]))
                    done.append(f"credential {credential['credential_id']} of {provider.name}")
            return [] if done else None

        if ledger._change(lambda: ledger.get_provider(name), rewrap_credentials):
            rewrapped += done
    return RotationResult(newest_kid=newest, rewrapped=rewrapped, status=secrets_status(ledger))


# --- provider credentials -----------------------------------------------------------


@dataclass(frozen=True)
class CredentialRotation:
    provider: Provider
    old_credential_id: str
    new_credential_id: str
    retires_at: datetime | None  # None: the old credential was disabled at once


def rotate_credential(ledger: Ledger, name: str, secret: str, *, credential_id: str | None = None,
                      grace: timedelta = timedelta(0), weight: int | None = None) -> CredentialRotation:
    """Add ``secret`` as a new credential replacing ``credential_id`` (or the provider's only
    current one). With a grace period both are used until it ends; without, the old is disabled now."""
    if not secret:
        raise InvalidRequest("a credential needs a secret (--api-key-stdin)", param="api_key")
    grace = _check_grace(grace)
    retire_due_credentials(ledger, name)
    outcome: dict[str, Any] = {}

    def rotate(provider: Provider) -> list[Aggregate]:
        now = ledger.clock.now()
        old = provider.credential(credential_id) if credential_id else _only_current(provider, now)
        ledger._seal_into(provider, secret, weight or old["weight"])
        new_id = provider.credentials[-1]["credential_id"]
        provider.rotate_credential(old["credential_id"], new_id, retires_at=now + grace)
        if not grace:
            provider.disable_credential(old["credential_id"], f"rotated: replaced by {new_id}", automatic=False)
        outcome.update(old=old["credential_id"], new=new_id, retires_at=now + grace if grace else None)
        return []

    ledger._change(lambda: ledger.get_provider(name), rotate)
    return CredentialRotation(ledger.get_provider(name), outcome["old"], outcome["new"], outcome["retires_at"])


def delete_credential(ledger: Ledger, name: str, credential_id: str) -> Provider:
    def delete(provider: Provider) -> list[Aggregate]:
        provider.delete_credential(credential_id)
        return []

    ledger._change(lambda: ledger.get_provider(name), delete)
    return ledger.get_provider(name)


def retire_due_credentials(ledger: Ledger, name: str | None = None) -> list[tuple[str, str]]:
    """Record ``CredentialDisabled`` for rotated credentials whose grace period has ended
    (routing already leaves them out); returns (provider, credential id) pairs."""
    retired: list[tuple[str, str]] = []
    names = [name] if name else [p.name for p in ledger.list_providers()]
    for provider_name in names:
        due: list[str] = []

        def retire(provider: Provider) -> list[Aggregate] | None:
            due.clear()
            for credential in provider.retired_credentials(ledger.clock.now()):
                provider.disable_credential(credential["credential_id"],
                                            f"rotated: replaced by {credential['replaced_by']}", automatic=False)
                due.append(credential["credential_id"])
            return [] if due else None

        if ledger._change(lambda: ledger.get_provider(provider_name), retire):
            retired += [(provider_name, credential_id) for credential_id in due]
    return retired


# --- API keys -----------------------------------------------------------------------


def issue_key(ledger: Ledger, account: str | UUID, name: str = "", expires_at: datetime | None = None,
              models: Sequence[str] | None = None) -> IssuedKey:
    """Issue a user key, limited to ``models`` when given (saved together with the key)."""
    account_id = ledger.get_account(account).id
    if expires_at is not None and expires_at <= ledger.clock.now():
        raise InvalidRequest("a key's expiry must be in the future", param="expires")
    key, plaintext = _new_key(ledger, account_id, name, expires_at, list(models) if models is not None else None)
    ledger.save(key)
    return IssuedKey(key_id=key.id, account_id=account_id, name=name, prefix=key.prefix, plaintext=plaintext)


@dataclass(frozen=True)
class KeyRotation:
    issued: IssuedKey
    old_key_id: UUID
    old_retires_at: datetime | None  # None: revoked at once


def rotate_key(ledger: Ledger, key_id: str | UUID, grace: timedelta = timedelta(0)) -> KeyRotation:
    """A new key for the same account, name, expiry and models; the old one is revoked now or
    stays usable for ``grace``. Both are saved in one transaction."""
    grace = _check_grace(grace)
    old_id = ledger.get_api_key(key_id).id
    made: dict[str, Any] = {}

    def rotate(old: ApiKey) -> list[Aggregate]:
        now = ledger.clock.now()
        if not old.is_usable(now):
            raise InvalidRequest(f"key {old.id} is revoked, rotated or expired; issue a new key instead",
                                 param="key_id")
        new, plaintext = _new_key(ledger, old.account_id, old.name, old.expires_at, old.allowed_models)
        made.update(key=new, plaintext=plaintext, retires_at=now + grace if grace else None)
        old.rotate(new.id, made["retires_at"])
        return [new]

    ledger._change(lambda: ledger.get_api_key(old_id), rotate)
    new = made["key"]
    issued = IssuedKey(key_id=new.id, account_id=new.account_id, name=new.name, prefix=new.prefix,
                       plaintext=made["plaintext"])
    return KeyRotation(issued=issued, old_key_id=old_id, old_retires_at=made["retires_at"])


def set_allowed_models(ledger: Ledger, key_id: str | UUID, models: Sequence[str] | None) -> ApiKey:
    """Limit a key to ``models`` (None: every model)."""
    key = ledger.get_api_key(key_id)
    key.allow_models(None if models is None else list(models))
    if key.pending_events:
        ledger.save(key)
    return ledger.get_api_key(key.id)


def parse_models(text: str | None) -> list[str] | None:
    """``a/b,c/d`` → a checked list; None or empty text → None (every model)."""
    if text is None or not text.strip():
        return None
    return check_model_patterns(text.split(","))


# --- helpers ------------------------------------------------------------------------


def _new_key(ledger: Ledger, account_id: UUID, name: str, expires_at: datetime | None,
             models: list[str] | None) -> tuple[ApiKey, str]:
    scheme = ledger.key_scheme
    plaintext = scheme.new_user_key()
    key = ApiKey(digest=scheme.digest(plaintext), account_id=account_id, name=name,
                 prefix=scheme.visible_prefix(plaintext), expires_at=expires_at)
    if models is not None:
        key.allow_models(models)
    return key, plaintext


def _only_current(provider: Provider, now: datetime) -> dict[str, Any]:
    current = [c for c in provider.usable_credentials(now) if not c.get("replaced_by")]
    if len(current) != 1:
        ids_ = ", ".join(c["credential_id"] for c in current) or "none"
        raise InvalidRequest(f"{provider.name!r} has {len(current)} current credentials ({ids_}): "
                             "say which to rotate with --credential", param="credential")
    return current[0]


def _check_grace(grace: timedelta) -> timedelta:
    if grace < timedelta(0) or grace > MAX_GRACE:
        raise InvalidRequest(f"a grace period is 0 to {MAX_GRACE.days} days", param="grace_seconds")
    return grace


def _deployment(ledger: Ledger) -> Deployment:
    deployment = ledger.find(ids.DEPLOYMENT_ID)
    if not isinstance(deployment, Deployment):
        raise NotInitialised("the store is not initialised: run `tallyhub init`")
    return deployment


def _kid(sealed: dict[str, str]) -> str:
    kid = sealed.get("kid") if isinstance(sealed, dict) else None
    return kid if isinstance(kid, str) and kid else "(none)"


def _vault(ledger: Ledger) -> Any:
    vault = ledger.vault
    if not hasattr(vault, "rewrap") or not hasattr(vault, "ring"):
        raise SecretError("this vault cannot re-wrap secrets")
    return vault
