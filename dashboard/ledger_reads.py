"""The dashboard's only uses of the ledger itself, each named here and nowhere else.

1. ``is_admin_key``: the admin key ``tallyhub init`` printed is stored only as a digest
   under a pepper the master key seals, so checking it needs the deployment (loaded once
   per process, then once per browser session — the result lives in ``st.session_state``).
2. ``price_book_versions``: published versions are not in a read model yet; they are
   read as the price book's own ``VersionPublished`` events (one small aggregate's
   history, never the whole log).
3. ``request_receipt``: the upstream attempts of one request exist only on its record.
Everything else on every page comes from ``dashboard.queries`` (the read models).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

import streamlit as st
from eventsourcing.persistence import PersistenceError

from adapters.bootstrap import build_ledger
from adapters.settings import Settings
from application.ledger import Ledger
from dashboard.queries import TTL_SECONDS, source_key
from domain import ids
from domain.errors import NotFound, NotInitialised, TallyhubError
from domain.price_book import PriceBook
from domain.request_record import RequestRecord


class StoreUnavailable(RuntimeError):
    """The event store cannot be opened: not initialised, or the master key does not open it."""


def ledger_key(settings: Settings) -> str:
    return f"{source_key(settings.database)}|master-key-dir={settings.data_dir.resolve()}"


def _close(ledger: Ledger) -> None:
    ledger.close()


@st.cache_resource(show_spinner=False, on_release=_close)
def _ledger(key: str, _settings: Settings) -> Ledger:
    database = _settings.database
    if database.kind == "sqlite" and not (database.sqlite_path and database.sqlite_path.exists()):
        raise NotInitialised(f"no event store at {database.sqlite_path}: run `tallyhub init`")
    ledger = build_ledger(_settings)
    try:
        ledger.load_deployment()
    except BaseException:
        ledger.close()
        raise
    return ledger


def ledger(settings: Settings) -> Ledger:
    try:
        return _ledger(ledger_key(settings), settings)
    except (TallyhubError, PersistenceError) as error:
        raise StoreUnavailable(str(error)) from error


def is_admin_key(settings: Settings, presented: str) -> bool:
    """The configured ``TALLYHUB_ADMIN_KEY``, or the key ``tallyhub init`` printed."""
    if not presented:
        return False
    if settings.admin_key and hmac.compare_digest(presented.encode(), settings.admin_key.encode()):
        return True
    return ledger(settings).is_admin_key(presented)


@dataclass(frozen=True)
class PriceBookVersion:
    version: int
    effective_at: Any  # datetime
    prices: dict[str, dict[str, Any]]  # model -> ModelPrice.to_dict()


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def price_book_versions(key: str, *, _settings: Settings) -> list[PriceBookVersion]:
    """Every published version, oldest first."""
    events = ledger(_settings).events.get(ids.PRICE_BOOK_ID)
    return [
        PriceBookVersion(e.version, e.effective_at, dict(e.prices))
        for e in events
        if isinstance(e, PriceBook.VersionPublished)
    ]


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def request_receipt(key: str, request_id: str, *, _settings: Settings) -> dict[str, Any] | None:
    """One request's recorded details and failed upstream attempts; None if unknown."""
    try:
        record = ledger(_settings).get_request_record(request_id)
    except NotFound:
        return None
    return receipt_json(record)


def receipt_json(record: RequestRecord) -> dict[str, Any]:
    """The receipt page's data: the record's details and attempts in their stored form
    (ids as hex, money as integer nanocredits, reported usage as decimal text)."""
    return {"details": record.details.to_dict(), "attempts": [attempt.to_dict() for attempt in record.attempts]}
