"""Secrets over a Ledger: the secret store and master-key rotation (provider credential
rotation and deletion: application/providers.py; API-key rotation: application/api_keys.py).

Invariants kept here:
- the event history holds no secret and no envelope: events name a secret by reference
  and its envelope lives in the secret store (application/ports.py, SecretStore);
- ``rotate_master`` re-encrypts every row not under the newest master key with a FRESH
  data key wrapped by the newest key, in place, after deleting superseded rows: once it
  has run, no row holds a data key an older master key can unwrap, so a retired key and
  a copy of the store open nothing current. An envelope is opened in full before it is
  replaced, so a tampered one is reported, never copied; running it again changes nothing;
- a store made before the secret store (envelopes in its provider and deployment events)
  is upgraded in place by ``move_secrets_out_of_history`` (``serve``, ``init`` and
  ``rotate-master`` run it; idempotent, safe from several processes): each current secret
  is opened and written to the store under a fresh data key, and an event records the move.
  The old events cannot be edited: their envelopes stay readable by the master keys that
  sealed them, which ``secrets_status`` reports (``in_history``);
- a superseded secret is deleted from the store (application/providers.py deletes a
  deleted or retired credential's); rows nothing refers to (a crash between the row and
  its event, a lost race) are deleted by ``rotate_master`` once they are ``ORPHAN_AGE`` old;
- ``secrets_status`` lists every kid the current secrets still need, and the kids stored
  responses (application/stored_responses.py) are sealed under: a configured key that none
  names can be retired without losing anything current; ``rotate_master`` re-encrypts the
  stored responses too, so after it only the newest key is needed.
Plaintext secrets pass through here only on their way to the vault.
"""

import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from eventsourcing.domain import Aggregate

from application.ledger import Ledger, credential_ref, secret_context
from application.stored_responses import StoredResponses
from application.webhooks import webhook_secret_refs
from domain import ids
from domain.deployment import Deployment
from domain.errors import NotInitialised, SecretError
from domain.provider import Credential, Provider

ORPHAN_AGE = timedelta(minutes=10)  # an unreferenced row younger than this may be a write in flight
LEGACY_PEPPER_REF = "pepper"


@dataclass(frozen=True)
class CurrentSecret:
    """One secret the current state needs: the pepper or a provider credential."""

    label: str
    kid: str  # of its row, or of its envelope in history when not moved yet
    ref: str | None  # its row in the secret store; None: still only in the event history


@dataclass(frozen=True)
class SecretsStatus:
    newest_kid: str
    configured_kids: list[str]
    in_use: dict[str, list[str]]  # kid -> labels of the current secrets sealed under it
    missing_kids: list[str]  # named by a current secret but not configured: it cannot be opened
    retirable_kids: list[str]  # configured, not the newest, named by no current secret
    in_history: dict[str, int] = field(default_factory=dict)  # kid -> envelopes the event history still holds
    not_moved: list[str] = field(default_factory=list)  # current secrets still only in the event history

    @property
    def rotation_needed(self) -> bool:
        return any(kid != self.newest_kid for kid in self.in_use) or bool(self.not_moved)


@dataclass(frozen=True)
class RotationResult:
    newest_kid: str
    rewrapped: list[str] = field(default_factory=list)  # labels of the secrets re-encrypted now
    status: SecretsStatus | None = None
    moved: list[str] = field(default_factory=list)  # labels of the secrets moved out of the history now
    deleted: int = 0  # superseded or unreferenced rows deleted now
    responses_resealed: int = 0  # stored responses re-encrypted now
    responses_unreadable: int = 0  # stored responses no configured key opens (left: already treated as gone)


# --- the secret store and master keys -----------------------------------------------


def current_secrets(ledger: Ledger) -> list[CurrentSecret]:
    deployment = _deployment(ledger)
    rows = {row.ref: row for row in ledger.secret_store.all()}
    found = [_current("API-key pepper", deployment.pepper_ref, deployment.legacy_sealed_pepper, rows)]
    now = ledger.clock.now()
    for provider in ledger.list_providers():
        found += [
            _current(_label(provider, c), c.secret_ref, c.legacy_sealed, rows)
            for c in provider.current_credentials(now)
        ]
    for ref in sorted(webhook_secret_refs(ledger)):  # a webhook's signing secret (application/webhooks.py)
        found.append(_current(f"webhook {ref.partition(':')[2]}", ref, None, rows))
    return found


def secrets_status(ledger: Ledger, responses: StoredResponses | None = None) -> SecretsStatus:
    """What each master key still seals: the current secrets, and ``responses``' rows."""
    vault = _vault(ledger)
    configured = vault.ring.kids
    in_use: dict[str, list[str]] = {}
    for secret in current_secrets(ledger):
        in_use.setdefault(_configured_kid(vault, secret.kid), []).append(secret.label)
    if responses is not None:
        for kid, count in responses.sealed_under().items():
            in_use.setdefault(_configured_kid(vault, kid), []).append(f"{count} stored response(s)")
    history: dict[str, int] = {}
    aggregates: list[Deployment | Provider] = [_deployment(ledger), *ledger.list_providers()]
    for aggregate in aggregates:
        for kid, count in aggregate.sealed_in_history.items():
            kid = _configured_kid(vault, kid)
            history[kid] = history.get(kid, 0) + count
    return SecretsStatus(
        newest_kid=vault.kid,
        configured_kids=configured,
        in_use=in_use,
        missing_kids=[kid for kid in in_use if kid not in configured],
        retirable_kids=[kid for kid in configured if kid != vault.kid and kid not in in_use],
        in_history=history,
        not_moved=[secret.label for secret in current_secrets(ledger) if secret.ref is None],
    )


def check_key_ring(ledger: Ledger) -> None:
    """At start: every current secret opens with the configured keys, or SecretError naming
    each one that does not (a missing kid, a wrong key, a tampered envelope, a missing row)."""
    problems = []
    try:
        ledger.open_pepper(_deployment(ledger))
    except SecretError as error:
        problems.append(f"API-key pepper: {error}")
    now = ledger.clock.now()
    for provider in ledger.list_providers():
        for credential in provider.current_credentials(now):
            try:
                ledger.credential_secret(provider, credential)  # kept: the first request reads no row
            except SecretError as error:
                problems.append(f"{_label(provider, credential)}: {error}")
    if problems:
        raise SecretError("the configured master keys cannot open every secret:\n  " + "\n  ".join(problems))


def move_secrets_out_of_history(ledger: Ledger) -> list[str]:
    """Upgrade in place: write each current secret that a store made before the secret store
    holds only in its events to the store (fresh data key, newest master key), and record
    the move. Idempotent; several processes may run it at once. Returns what was moved."""
    moved: list[str] = []

    def move_pepper(deployment: Deployment) -> list[Aggregate] | None:
        if deployment.pepper_ref is not None:
            return None
        pepper = ledger.open_pepper(deployment)
        _write_once(ledger, LEGACY_PEPPER_REF, pepper)
        deployment.move_pepper(LEGACY_PEPPER_REF)
        return []

    if ledger.change(lambda: _deployment(ledger), move_pepper):
        moved.append("API-key pepper")
    for name in [p.name for p in ledger.list_providers()]:
        done: list[str] = []

        def move_credentials(provider: Provider) -> list[Aggregate] | None:
            done.clear()
            for credential in provider.current_credentials(ledger.clock.now()):
                if credential.secret_ref is None and credential.legacy_sealed is not None:
                    ref = credential_ref(provider.name, credential.credential_id)
                    _write_once(ledger, ref, ledger.open_credential(provider, credential).encode())
                    provider.move_secret(credential.credential_id, ref)
                    done.append(_label(provider, credential))
            return [] if done else None

        if ledger.change(lambda: ledger.get_provider(name), move_credentials):
            moved += done
    return moved


def delete_superseded_secrets(ledger: Ledger, *, orphan_age: timedelta = ORPHAN_AGE) -> int:
    """Delete the rows no current secret refers to: rotated credentials past their grace
    period, deleted credentials, and (once ``orphan_age`` old) rows nothing ever referred to."""
    deployment = _deployment(ledger)
    now = ledger.clock.now()
    wanted = {deployment.pepper_ref} | webhook_secret_refs(ledger)  # webhook secrets: application/webhooks.py
    retired: set[str] = set()
    for provider in ledger.list_providers():
        for credential in provider.credentials:
            ref = credential.secret_ref
            if ref is not None:
                (wanted if credential in provider.current_credentials(now) else retired).add(ref)
    oldest = time.time() - orphan_age.total_seconds()
    doomed = [
        row.ref
        for row in ledger.secret_store.all()
        if row.ref not in wanted and (row.ref in retired or row.created_at < oldest)
    ]
    for ref in doomed:
        ledger.forget_secret(ref)
    return ledger.secret_store.delete(doomed)


def rotate_master(ledger: Ledger, responses: StoredResponses | None = None) -> RotationResult:
    """Move what the history alone holds into the secret store, delete superseded rows, and
    re-encrypt every row not under the newest master key with a fresh data key, and every
    stored response of ``responses`` the same way. Online and idempotent. Afterwards no row
    holds anything an older master key can open."""
    vault = _vault(ledger)
    newest = vault.kid
    moved = move_secrets_out_of_history(ledger)
    deleted = delete_superseded_secrets(ledger)
    labels = {secret.ref: secret.label for secret in current_secrets(ledger) if secret.ref}
    rewrapped: list[str] = []
    for row in ledger.secret_store.all():
        if _configured_kid(vault, row.kid) == newest:
            continue
        plaintext = vault.open(row.envelope, context=secret_context(row.ref))  # proves the whole envelope intact
        fresh = vault.seal(plaintext, context=secret_context(row.ref))  # a new data key, never the old one
        if ledger.secret_store.replace(row.ref, fresh, version=row.version):
            rewrapped.append(labels.get(row.ref, f"unreferenced secret {row.ref}"))
    ledger.secret_store.scrub()  # every run: a run after one that could not finish it completes it
    resealed, unreadable = (0, 0)
    if responses is not None:
        resealed, unreadable = responses.reseal(lambda kid: _configured_kid(vault, kid) == newest)
    return RotationResult(
        newest_kid=newest,
        rewrapped=rewrapped,
        status=secrets_status(ledger, responses),
        moved=moved,
        deleted=deleted,
        responses_resealed=resealed,
        responses_unreadable=unreadable,
    )


# --- helpers ------------------------------------------------------------------------


def _deployment(ledger: Ledger) -> Deployment:
    deployment = ledger.find(ids.DEPLOYMENT_ID)
    if not isinstance(deployment, Deployment):
        raise NotInitialised("the store is not initialised: run `tallyhub init`")
    return deployment


def _kid(sealed: dict[str, str] | None) -> str:
    kid = sealed.get("kid") if isinstance(sealed, dict) else None
    return kid if isinstance(kid, str) and kid else "(none)"


def _label(provider: Provider, credential: Credential) -> str:
    return f"credential {credential.credential_id} of {provider.name}"


def _current(label: str, ref: str | None, legacy: dict[str, str] | None, rows: dict[str, Any]) -> CurrentSecret:
    if ref is None:
        return CurrentSecret(label, _kid(legacy), None)
    row = rows.get(ref)
    return CurrentSecret(label, row.kid if row is not None else "(missing)", ref)


def _configured_kid(vault: Any, kid: str) -> str:
    """The configured name of ``kid`` (a key may be named later than it sealed: by fingerprint)."""
    key = vault.ring.find(kid)
    return key.kid if key is not None else kid


def _write_once(ledger: Ledger, ref: str, plaintext: bytes) -> None:
    """The row ``ref`` with ``plaintext`` under a fresh data key, unless another process wrote
    it first (then it holds the same secret: a reference names one plaintext)."""
    ledger.secret_store.add(ref, ledger.vault.seal(plaintext, context=secret_context(ref)))


def _vault(ledger: Ledger) -> Any:
    vault = ledger.vault
    if not hasattr(vault, "ring"):
        raise SecretError("this vault has no master key ring to rotate")
    return vault
