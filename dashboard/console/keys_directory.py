"""Which API keys exist, whose they are and what they are called.

No read model lists API keys (a key's aggregate id derives from its digest, so the store
cannot be asked for "the keys of account X" by identity). The one place that names them
all is the ``ApiKey.Issued`` events: ``issued_keys`` reads those alone, from the
notification log filtered by their topic in SQL, each once per dashboard process (the
``KeyDirectory`` remembers how far it read), and decodes nothing else. A key's name,
account and visible prefix never change after it is issued (a rotated key's replacement is
issued under the same name), so these entries are final; its state now (revoked, rotated,
limits) is the key aggregate's, loaded by the console page for the one account shown.

Invariant: nothing here writes, and nothing secret is kept: of an ``Issued`` event only the
key's id, account, name, expiry, time and visible prefix are kept (never its digest), the
prefix cut by ``shown_prefix`` to what may be shown (keys issued before that rule recorded
more of themselves).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import streamlit as st
from eventsourcing.utils import get_topic

from adapters.settings import Settings
from application.ledger import Ledger
from dashboard import ledger_reads
from dashboard.queries import TTL_SECONDS
from domain.api_key import ApiKey, shown_prefix

PAGE = 1000


@dataclass(frozen=True)
class IssuedKey:
    key_id: UUID
    account_id: UUID
    name: str
    prefix: str  # what may be shown of the key: its kind and last 4 characters
    issued_at: datetime
    expires_at: datetime | None


class KeyDirectory:
    """The keys issued so far, kept by one dashboard process per store and brought up to
    date at each read with the ``ApiKey.Issued`` events recorded since the last one (the
    notification log's order is the store's commit order, which the projections rely on
    too), so a page run costs the new events only, not the whole log."""

    def __init__(self) -> None:
        self.position = 0
        self.keys: dict[UUID, IssuedKey] = {}
        self.lock = threading.Lock()

    def refresh(self, ledger: Ledger) -> list[IssuedKey]:
        topic = get_topic(ApiKey.Issued)
        with self.lock:
            while True:
                page = ledger.recorder.select_notifications(self.position + 1, PAGE, topics=[topic])
                for notification in page:
                    event = ledger.mapper.to_domain_event(notification)
                    if isinstance(event, ApiKey.Issued):
                        self.keys[event.originator_id] = _entry(event)
                if page:
                    self.position = page[-1].id
                if len(page) < PAGE:
                    return list(self.keys.values())


def _entry(event: ApiKey.Issued) -> IssuedKey:
    return IssuedKey(
        key_id=event.originator_id,
        account_id=event.account_id,
        name=event.name,
        prefix=shown_prefix(event.prefix),
        issued_at=event.timestamp,
        expires_at=event.expires_at,
    )


@st.cache_resource(show_spinner=False)
def _directory(key: str) -> KeyDirectory:
    return KeyDirectory()


def issued_keys(key: str, ledger: Ledger, account_id: UUID | None = None) -> list[IssuedKey]:
    """Every key issued in the store ``key`` names (of ``account_id`` only, when given),
    oldest first, up to this moment."""
    found = _directory(key).refresh(ledger)
    return [entry for entry in found if account_id is None or entry.account_id == account_id]


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def key_names(key: str, *, _settings: Settings) -> dict[str, tuple[str, str]]:
    """Each key's dashed id → (its name, its account's dashed id), for the analytics pages
    (cached like the read-model queries; ``key`` names the store)."""
    return {
        str(issued.key_id): (issued.name, str(issued.account_id))
        for issued in issued_keys(key, ledger_reads.ledger(_settings))
    }
