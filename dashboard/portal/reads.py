"""The portal's reads of the read models that ``dashboard.queries`` does not already make
for one account: its balances row, its statement (the very document ``tallyhub
statement`` and the admin API give, adapters/cli/statement_commands.py ``statement_json``)
and that statement as CSV. Every function takes the signed-in account's id and reads
only its rows; nothing here writes."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any
from uuid import UUID

import streamlit as st

from adapters.cli.statement_commands import statement_json
from application.portal import Portal
from dashboard import queries
from dashboard.queries import Source

CSV_COLUMNS = (
    "position",
    "at",
    "kind",
    "amount",
    "amount_credits",
    "balance",
    "balance_credits",
    "request_id",
    "reason",
    "idempotency_key",
    "uncollected",
    "held",
)
BURN_DAYS = 7  # days of credit left: available ÷ the average daily charge of the last BURN_DAYS days


@st.cache_data(ttl=queries.TTL_SECONDS, show_spinner=False)
def balance_of(key: str, account_id: str, *, _source: Source) -> dict[str, Any] | None:
    """The account's balances row (integers of nanocredits), None before its first movement is projected."""
    with queries._reading():
        row = _source.views().balances.get_balance(UUID(account_id))
    return None if row is None or str(row.account_id) != account_id else asdict(row)


@st.cache_data(ttl=queries.TTL_SECONDS, show_spinner=False)
def key_names(key: str, account_id: str, *, _portal: Portal) -> dict[str, str]:
    """The account's key names by key id (a name never changes once the key is issued)."""
    return {str(k.key_id): k.name or "(unnamed)" for k in _portal.list_keys(UUID(account_id))}


def days_left(available: int, charged: int, days: int = BURN_DAYS) -> Decimal | None:
    """``available ÷ (charged ÷ days)`` to one decimal, rounded down; None without spend."""
    if charged <= 0:
        return None
    return (Decimal(max(available, 0)) * days / Decimal(charged)).quantize(Decimal("0.1"), rounding=ROUND_DOWN)


@st.cache_data(ttl=queries.TTL_SECONDS, show_spinner=False)
def statement_document(
    key: str, account_id: str, name: str, since: datetime, until: datetime, *, _source: Source
) -> dict[str, Any] | None:
    """The statement of ``[since, until)`` as ``tallyhub statement --json`` prints it; None where
    the deployment has no ledger-entries read model yet."""
    view, account = _source.views().ledger, UUID(account_id)
    try:
        with queries._reading():
            entries = view.list_entries(account, since, until)
            opening = entries[0].balance - entries[0].amount if entries else view.opening_balance(account, since)
    except queries.ReadModelsMissing:
        return None
    closing = entries[-1].balance if entries else opening
    return statement_json(name, account, since, until, opening, closing, entries)


def statement_csv(document: dict[str, Any]) -> str:
    """The statement's entries, one row each (times in UTC ISO 8601, amounts as integers of
    nanocredits and as exact credits text)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(CSV_COLUMNS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for entry in document["entries"]:
        writer.writerow({column: "" if entry.get(column) is None else entry[column] for column in CSV_COLUMNS})
    return out.getvalue()


def last_days(now: datetime, days: int) -> tuple[datetime, datetime]:
    """``[now − days, now)`` widened to whole hours (the usage rollups are hourly)."""
    until = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return until - timedelta(days=days), until
