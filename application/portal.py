"""The customer portal's access: sign-in links, sessions, and the self-service key policy.

Invariants kept here:
- a session is opened only by an API key ``Ledger.authenticate`` accepts (exactly as the
  API does) or by a sign-in link redeemed for the first time (domain/portal.py: the store
  refuses a second ``Redeemed``); a link's token is never stored, only its SHA-256 digest;
- a session and a link token are signed with HMAC-SHA256 under a key derived from the
  deployment's pepper (``Ledger.open_pepper``), so neither can be forged or altered, and
  both carry their expiry; a session names its account, how it was opened (the key or the
  link) and the account's portal generation;
- ``open_session`` is called on every page run and ends the session when it expired, when
  its account's portal access was revoked since (``PortalAccess.generation``), or, for a
  key session, when the key is no longer usable (revoked, rotated past its grace, expired);
- a portal action names its actor ``portal:<api key id>`` or ``portal-link:<link id>``
  (application/acting.py), acts only on the session's own account, and key actions are
  refused unless the account allows self-service keys *at the time of the action*.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from application.acting import acting_as
from application.api_keys import ApiKeys, IssuedKey
from application.event_scan import scan, topics_of, uuid_of
from application.ledger import Ledger
from domain import ids
from domain.api_key import ApiKey
from domain.deployment import Deployment
from domain.errors import ApiKeyNotFound, AuthenticationFailed, InvalidRequest, NotInitialised, PermissionDenied
from domain.portal import LinkRefused, PortalAccess, PortalLink, portal_access_id, portal_link_id

SIGNING_CONTEXT = b"tallyhub:portal-signing"
MIN_LINK_TTL = timedelta(minutes=1)
MAX_LINK_TTL = timedelta(days=7)
DEFAULT_LINK_TTL = timedelta(hours=1)
DEFAULT_SESSION_TTL = timedelta(hours=8)
KEY = "key"
LINK = "link"


class SessionEnded(AuthenticationFailed):
    """The portal session is no longer valid; the customer signs in again."""

    code = "portal_session_ended"


@dataclass(frozen=True)
class IssuedLink:
    link_id: UUID
    account_id: UUID
    token: str  # shown once (in the URL), never stored
    expires_at: datetime


@dataclass(frozen=True)
class PortalSession:
    account_id: UUID
    via: str  # KEY or LINK
    ref: UUID  # the API key's id or the link's id
    generation: int
    expires_at: datetime

    @property
    def actor(self) -> str:
        return f"portal:{self.ref}" if self.via == KEY else f"portal-link:{self.ref}"


@dataclass(frozen=True)
class PortalKey:
    """One of the account's API keys as the portal lists it (nothing secret)."""

    key_id: UUID
    name: str
    prefix: str
    usable: bool
    revoked: bool
    expires_at: datetime | None


class Portal:
    def __init__(self, ledger: Ledger, api_keys: ApiKeys, *, session_ttl: timedelta = DEFAULT_SESSION_TTL) -> None:
        if session_ttl <= timedelta(0):
            raise InvalidRequest("a portal session's lifetime must be positive", param="session_ttl")
        self.ledger = ledger
        self.api_keys = api_keys
        self.session_ttl = session_ttl
        self._key: bytes | None = None

    # --- signing ------------------------------------------------------------------

    def _signing_key(self) -> bytes:
        if self._key is None:
            deployment = self.ledger.find(ids.DEPLOYMENT_ID)
            if not isinstance(deployment, Deployment):
                raise NotInitialised("the store is not initialised: run `tallyhub init`")
            pepper = self.ledger.open_pepper(deployment)
            self._key = hmac.new(pepper, SIGNING_CONTEXT, hashlib.sha256).digest()
        return self._key

    def _sign(self, kind: bytes, body: str) -> str:
        mac = hmac.new(self._signing_key(), kind + b":" + body.encode(), hashlib.sha256).digest()
        return _b64(mac)

    def _signed(self, kind: bytes, token: str) -> str | None:
        """The body of ``token`` (``body.signature``) when its signature is right."""
        body, _, signature = token.rpartition(".")
        if not body or not hmac.compare_digest(self._sign(kind, body), signature):
            return None
        return body

    # --- links --------------------------------------------------------------------

    def issue_link(self, account: str | UUID, ttl: timedelta = DEFAULT_LINK_TTL) -> IssuedLink:
        """A one-use sign-in link's token for ``account``, valid for ``ttl``."""
        if not MIN_LINK_TTL <= ttl <= MAX_LINK_TTL:
            raise InvalidRequest("a sign-in link lives from 1 minute to 7 days", param="ttl")
        account_id = self.ledger.get_account(account).id
        expires_at = self.ledger.clock.now() + ttl
        body = f"{secrets.token_urlsafe(24)}.{int(expires_at.timestamp())}"
        token = f"{body}.{self._sign(b'link', body)}"
        link = PortalLink(
            digest=token_digest(token),
            account_id=account_id,
            expires_at=expires_at,
            generation=self.generation(account_id),
        )
        self.ledger.save(link)
        return IssuedLink(link_id=link.id, account_id=account_id, token=token, expires_at=expires_at)

    def redeem_link(self, token: str) -> PortalSession:
        """Open a session with a link's token: once, before it expires, unless revoked since."""
        token = (token or "").strip()
        body = self._signed(b"link", token) if len(token) < 200 else None
        if body is None or self.ledger.clock.now().timestamp() >= _expiry_of(body):
            raise LinkRefused("this sign-in link is invalid, expired or already used")
        link = self.ledger.find(portal_link_id(token_digest(token)))
        if not isinstance(link, PortalLink):
            raise LinkRefused("this sign-in link is invalid, expired or already used")
        with acting_as(f"portal-link:{link.id}"):
            link.redeem(self.ledger.clock.now(), self.generation(link.account_id))
            try:
                self.ledger.save(link)
            except IntegrityError:  # redeemed meanwhile, maybe by another process
                raise LinkRefused("this sign-in link is invalid, expired or already used") from None
        return self._session(link.account_id, LINK, link.id)

    # --- sessions -----------------------------------------------------------------

    def sign_in_with_key(self, presented: str) -> PortalSession:
        """A session for the account of a usable API key (AuthenticationFailed otherwise)."""
        key = self.ledger.authenticate((presented or "").strip())
        return self._session(key.account_id, KEY, key.id)

    def _session(self, account_id: UUID, via: str, ref: UUID) -> PortalSession:
        expires_at = self.ledger.clock.now() + self.session_ttl
        return PortalSession(account_id, via, ref, self.generation(account_id), expires_at)

    def seal(self, session: PortalSession) -> str:
        """The session as signed text (kept in the browser session's state)."""
        body = _b64(
            json.dumps(
                {
                    "a": session.account_id.hex,
                    "v": session.via,
                    "r": session.ref.hex,
                    "g": session.generation,
                    "e": int(session.expires_at.timestamp()),
                },
                separators=(",", ":"),
            ).encode()
        )
        return f"{body}.{self._sign(b'session', body)}"

    def open_session(self, sealed: str) -> PortalSession:
        """The session ``sealed`` names if it is still valid, else SessionEnded (checked on every page)."""
        body = self._signed(b"session", sealed or "")
        if body is None:
            raise SessionEnded("the portal session is not valid; sign in again")
        fields = json.loads(_unb64(body))
        session = PortalSession(
            account_id=UUID(fields["a"]),
            via=fields["v"],
            ref=UUID(fields["r"]),
            generation=int(fields["g"]),
            expires_at=datetime.fromtimestamp(int(fields["e"]), UTC),
        )
        now = self.ledger.clock.now()
        if now >= session.expires_at:
            raise SessionEnded("the portal session expired; sign in again")
        if self.generation(session.account_id) != session.generation:
            raise SessionEnded("the operator ended this account's portal sessions; sign in again")
        if session.via == KEY:
            key = self.ledger.find(session.ref)
            if not isinstance(key, ApiKey) or key.account_id != session.account_id or not key.is_usable(now):
                raise SessionEnded("the API key this session was opened with is no longer valid; sign in again")
        return session

    def generation(self, account_id: UUID) -> int:
        access = self.ledger.find(portal_access_id(account_id))
        return access.generation if isinstance(access, PortalAccess) else 0

    def revoke_sessions(self, account: str | UUID) -> int:
        """End every portal session and unused sign-in link of ``account``; the new generation."""
        account_id = self.ledger.get_account(account).id

        def load() -> PortalAccess:
            found = self.ledger.find(portal_access_id(account_id))
            return found if isinstance(found, PortalAccess) else PortalAccess(account_id=account_id)

        def revoke(access: PortalAccess) -> list[PortalAccess]:
            access.revoke_sessions()
            return []

        self.ledger.change(load, revoke)
        return self.generation(account_id)

    # --- self-service keys --------------------------------------------------------

    def self_service_keys(self, session: PortalSession) -> bool:
        return self.ledger.get_account(session.account_id).self_service_keys

    def list_keys(self, account_id: UUID) -> list[PortalKey]:
        """The account's API keys, newest first (a scan of the keys' ``Issued`` events)."""
        now = self.ledger.clock.now()
        found: list[PortalKey] = []
        for stored in scan(self.ledger.recorder, topics_of(ApiKey.Issued)):
            if uuid_of(stored.state["account_id"]) != account_id:
                continue
            key = self.ledger.find(stored.originator_id)
            if isinstance(key, ApiKey):
                found.append(PortalKey(key.id, key.name, key.prefix, key.is_usable(now), key.revoked, key.expires_at))
        return found[::-1]

    def issue_key(self, session: PortalSession, name: str) -> IssuedKey:
        """A new key of the session's account (shown once), when self-service keys are on."""
        self._allowed(session)
        cleaned = (name or "").strip()
        if len(cleaned) > 200 or any(not ch.isprintable() for ch in cleaned):
            raise InvalidRequest("a key's name is at most 200 printable characters", param="name")
        with acting_as(session.actor):
            return self.api_keys.issue_api_key(session.account_id, name=cleaned)

    def revoke_key(self, session: PortalSession, key_id: str | UUID) -> ApiKey:
        """Revoke one of the session's account's keys, when self-service keys are on."""
        self._allowed(session)
        key = self.ledger.get_api_key(key_id)
        if key.account_id != session.account_id:
            raise ApiKeyNotFound(f"no API key {key_id}")
        with acting_as(session.actor):
            return self.api_keys.revoke_api_key(key.id, reason="revoked in the customer portal")

    def _allowed(self, session: PortalSession) -> None:
        self.open_session(self.seal(session))  # still valid now
        if not self.self_service_keys(session):
            raise PermissionDenied("the operator has not allowed this account to manage its own keys")


def topup_link(template: str, account_id: UUID) -> str:
    """``TALLYHUB_TOPUP_URL`` for an account: ``{account}`` is its id (dashed), URL-encoded."""
    return template.replace("{account}", quote(str(account_id), safe=""))


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_ttl(text: str) -> timedelta:
    """``90s``, ``30m``, ``1h``, ``2d`` (or plain seconds) as a duration."""
    cleaned = (text or "").strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (cleaned[:-1], cleaned[-1]) if cleaned[-1:] in units else (cleaned, "s")
    if not number.isdigit():
        raise InvalidRequest(f"a duration is a whole number with s, m, h or d, got {text!r}", param="ttl")
    return timedelta(seconds=int(number) * units[unit])


def _expiry_of(body: str) -> int:
    _, _, expiry = body.rpartition(".")
    return int(expiry) if expiry.isdigit() else 0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
