"""Cached reads of the read models (``th_rm_*`` tables) — the dashboard's only data source.

Invariants kept here:
- nothing in this module writes, loads an aggregate or replays an event: it reads the
  tables the projections maintain, through their views or a plain ``SELECT``;
- one connection (SQLite) or one small pool (PostgreSQL) per database lives in
  ``st.cache_resource``; every query result lives in ``st.cache_data`` for ``TTL_SECONDS``,
  keyed by the database it came from and the query's arguments;
- money leaves as integer nanocredits, times as tz-aware UTC datetimes.
The SQLite connection is opened on an existing file only, with ``query_only`` set, so
the dashboard can neither create a stray database nor change one.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pandas as pd
import psycopg
import streamlit as st

from adapters.presenters import id_text
from adapters.settings import DatabaseConfig, Settings
from dashboard import export_files
from dashboard.windows import Window
from projections.audit import AUDIT_TABLE, AuditFilter, SqlAuditView
from projections.audit import UNRECORDED as AUDIT_UNRECORDED
from projections.balances import SqlBalancesView
from projections.ledger_entries import SqlLedgerEntriesView
from projections.provider_hourly import COUNTERS as PROVIDER_COUNTERS
from projections.provider_hourly import SqlProviderHourlyView
from projections.request_log import COLUMNS as REQUEST_COLUMNS
from projections.request_log import REQUESTS_TABLE, TAGS_TABLE, SqlRequestLogView, hours_window, usage_of
from projections.store import TRACKING_TABLE, PostgresStore, SqliteStore, SqlStore
from projections.usage import COUNTERS, USAGE_TABLE, SqlUsageView

TTL_SECONDS = 30
BALANCE_AMOUNTS = (
    "balance",
    "held",
    "available",
    "granted_total",
    "charged_total",
    "uncollected_total",
    "refunded_total",
    "adjusted_total",
)
BALANCE_COLUMNS = ("account_id", "name", *BALANCE_AMOUNTS, "updated_at")
USAGE_COLUMNS = ("hour", "account_id", "api_key_id", "provider", "model", *COUNTERS)
PROVIDER_COLUMNS = ("hour", "provider", "credential_id", "model", *PROVIDER_COUNTERS)


class ReadModelsMissing(RuntimeError):
    """The read-model database or its tables do not exist yet (``tallyhub init`` creates them)."""


class QueryOnlySqliteStore(SqliteStore):
    """One shared, query-only connection to an existing read-models file.

    ``SqliteStore`` opens a connection per thread; Streamlit runs every script run on a
    new thread, so the dashboard shares one connection behind a lock instead.
    """

    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise ReadModelsMissing(f"no read-model database at {path}")
        super().__init__(path)
        self._conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA query_only = 1")
        self._query_lock = threading.Lock()

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._query_lock:
            return self._conn.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._query_lock:
            self._conn.close()


@dataclass(frozen=True)
class Views:
    store: SqlStore
    balances: SqlBalancesView
    usage: SqlUsageView
    requests: SqlRequestLogView
    ledger: SqlLedgerEntriesView


def _release(views: Views) -> None:
    views.store.close()


@st.cache_resource(show_spinner=False, on_release=_release)
def _views(key: str, _database: DatabaseConfig) -> Views:
    store: SqlStore
    if _database.kind == "postgres":
        store = PostgresStore(_database.conninfo(), _database.schema, pool_size=2)
    else:
        store = QueryOnlySqliteStore(_database.read_models_sqlite_path)
    return Views(
        store, SqlBalancesView(store), SqlUsageView(store), SqlRequestLogView(store), SqlLedgerEntriesView(store)
    )


def source_key(database: DatabaseConfig) -> str:
    """Names the read-model database without any secret (the password is left out)."""
    if database.kind == "postgres":
        return f"postgres://{database.user}@{database.host}:{database.port}/{database.dbname}?schema={database.schema}"
    return f"sqlite://{database.read_models_sqlite_path.resolve()}"


@dataclass(frozen=True)
class Source:
    key: str
    database: DatabaseConfig

    @classmethod
    def of(cls, settings: Settings) -> Source:
        return cls(source_key(settings.database), settings.database)

    def views(self) -> Views:
        return _views(self.key, self.database)


def _is_missing_table(error: Exception) -> bool:
    text = str(error).lower()
    return "no such table" in text or "does not exist" in text


@contextmanager
def _reading() -> Iterator[None]:
    """Turns "no such table" (SQLite) / "relation does not exist" (PostgreSQL) into ReadModelsMissing."""
    try:
        yield
    except (sqlite3.OperationalError, psycopg.errors.UndefinedTable) as error:
        if _is_missing_table(error):
            raise ReadModelsMissing(str(error)) from error
        raise


def _run(source: Source, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with _reading():
        return source.views().store.query(sql, params)


def _time(source: Source, value: datetime | None) -> Any:
    return source.views().store.to_db_time(value)


def _from_db_time(source: Source, value: Any) -> datetime | None:
    return source.views().store.from_db_time(value)


# --- queries ----------------------------------------------------------------------------
# Each takes the source's key (hashed for the cache) and the Source itself as ``_source``
# (not hashed: the key already names it).


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def positions(key: str, *, _source: Source) -> dict[str, int]:
    """Each projection's tracked position; raises ReadModelsMissing before ``tallyhub init``."""
    return {str(name): int(pos) for name, pos in _run(_source, f"SELECT name, position FROM {TRACKING_TABLE}")}


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def usage_totals(key: str, since: datetime, until: datetime, *, _source: Source) -> dict[str, int]:
    """The usage view's own sums over ``[since, until)``."""
    with _reading():
        return asdict(_source.views().usage.get_usage_totals(since=since, until=until))


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def usage_frame(
    key: str,
    since: datetime,
    until: datetime,
    account_id: str | None = None,
    *,
    user: str | None = None,
    tag: str | None = None,
    _source: Source,
) -> pd.DataFrame:
    """Hourly usage buckets in ``[since, until)`` (ids as dashed UUIDs, ``''`` when absent). With
    ``user`` or ``tag`` (the requests' attribution, matched exactly), the matching request-log
    rows summed into the same buckets: the hourly rollups keep no attribution."""
    account = UUID(account_id) if account_id else None
    with _reading():
        if user is None and tag is None:
            rows = _source.views().usage.list_usage(account, since, until)
        else:
            matching = _source.views().requests.iter_requests(
                *hours_window(since, until), account_id=account, user=user, tag=tag
            )
            rows = usage_of(matching, since, until)
    records = [
        {
            **asdict(row),
            "account_id": str(row.account_id) if row.account_id else "",
            "api_key_id": str(row.api_key_id) if row.api_key_id else "",
        }
        for row in rows
    ]
    frame = pd.DataFrame.from_records(records, columns=list(USAGE_COLUMNS))
    return frame.astype({name: "int64" for name in COUNTERS})


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def provider_totals(key: str, since: datetime, until: datetime, *, _source: Source) -> dict[str, int] | None:
    """The provider rollups' own sums over ``[since, until)``; None where the deployment has no
    provider rollups (``th_rm_provider_hourly``) yet — ``tallyhub init`` creates them."""
    try:
        with _reading():
            return asdict(SqlProviderHourlyView(_source.views().store).get_totals(since, until))
    except ReadModelsMissing:
        return None


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def provider_frame(key: str, since: datetime, until: datetime, *, _source: Source) -> pd.DataFrame | None:
    """Hourly provider rollups in ``[since, until)`` (credential ``''`` when the request reached
    no upstream); None where the deployment has no provider rollups yet."""
    try:
        with _reading():
            rows = SqlProviderHourlyView(_source.views().store).list_hours(since, until)
    except ReadModelsMissing:
        return None
    records = [{**asdict(row), "credential_id": row.credential_id or ""} for row in rows]
    frame = pd.DataFrame.from_records(records, columns=list(PROVIDER_COLUMNS))
    return frame.astype({name: "int64" for name in PROVIDER_COUNTERS})


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def timings_frame(key: str, since: datetime, until: datetime, limit: int, *, _source: Source) -> pd.DataFrame:
    """Latency and time to first byte of the newest ``limit`` requests in the window (+1 to detect truncation)."""
    rows = _run(
        _source,
        f"SELECT at, latency_ms, ttfb_ms, outcome FROM {REQUESTS_TABLE} WHERE at >= ? AND at < ?"
        " ORDER BY at DESC, request_id DESC LIMIT ?",
        (_time(_source, since), _time(_source, until), limit + 1),
    )
    frame = pd.DataFrame(
        [
            (_from_db_time(_source, at), float(lat), None if ttfb is None else float(ttfb), outcome != "completed")
            for at, lat, ttfb, outcome in rows
        ],
        columns=["at", "latency_ms", "ttfb_ms", "failed"],
    )
    return frame.astype({"latency_ms": "float64", "ttfb_ms": "float64", "failed": "bool"})


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def request_count(key: str, since: datetime, until: datetime, *, _source: Source) -> int:
    ((count,),) = _run(
        _source,
        f"SELECT COUNT(*) FROM {REQUESTS_TABLE} WHERE at >= ? AND at < ?",
        (_time(_source, since), _time(_source, until)),
    )
    return int(count)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False, max_entries=4)
def export_snapshot(
    key: str, kind: str, since: datetime, until: datetime, file_format: str, *, _source: Source
) -> export_files.Snapshot | None:
    """The ``kind`` export of ``[since, until)`` built from the read models as they stand (not
    recorded in the ledger's export log); None when it would have more than
    ``export_files.MAX_ROWS`` rows."""
    as_of = positions(key, _source=_source)
    with _reading():
        return export_files.snapshot(kind, _source.views(), Window(since, until), file_format, as_of)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def latest_request_at(key: str, *, _source: Source) -> datetime | None:
    ((latest,),) = _run(_source, f"SELECT MAX(at) FROM {REQUESTS_TABLE}")
    return _from_db_time(_source, latest)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def balances_frame(key: str, *, _source: Source) -> pd.DataFrame:
    with _reading():
        rows = _source.views().balances.list_balances()
    records = [{**asdict(b), "account_id": str(b.account_id)} for b in rows]
    frame = pd.DataFrame.from_records(records, columns=list(BALANCE_COLUMNS))
    for column in BALANCE_AMOUNTS:  # totals a newer balances view adds (refunds, adjustments) or not
        frame[column] = frame[column].fillna(0).astype("int64")
    return frame


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def open_holds_frame(key: str, account_id: str, *, _source: Source) -> pd.DataFrame:
    with _reading():
        holds = _source.views().balances.list_open_holds(UUID(account_id))
    return pd.DataFrame.from_records(
        [{"request_id": str(h.request_id), "amount": h.amount, "expires_at": h.expires_at} for h in holds],
        columns=["request_id", "amount", "expires_at"],
    )


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def requests_frame(
    key: str,
    since: datetime,
    until: datetime,
    *,
    account_id: str | None = None,
    api_key_id: str | None = None,
    model: str | None = None,
    provider: str | None = None,
    status: int | None = None,
    min_latency_ms: float | None = None,
    user: str | None = None,
    tag: str | None = None,
    limit: int = 200,
    _source: Source,
) -> pd.DataFrame:
    """The request log, newest first, filtered in SQL (so ``limit`` counts matching rows); ids
    in and out are dashed UUIDs (the read model keeps hex)."""
    filters = [
        ("at >= ?", _time(_source, since)),
        ("at < ?", _time(_source, until)),
        ("account_id = ?", UUID(account_id).hex if account_id else None),
        ("api_key_id = ?", UUID(api_key_id).hex if api_key_id else None),
        ("model = ?", model),
        ("provider = ?", provider),
        ("status = ?", status),
        ("latency_ms >= ?", min_latency_ms),
        ("end_user = ?", user),
        (f"request_id IN (SELECT request_id FROM {TAGS_TABLE} WHERE tag = ?)", tag),
    ]
    used = [(clause, value) for clause, value in filters if value is not None]
    rows = _run(
        _source,
        f"SELECT {', '.join(REQUEST_COLUMNS)} FROM {REQUESTS_TABLE} WHERE {' AND '.join(c for c, _ in used)}"
        " ORDER BY at DESC, request_id DESC LIMIT ?",
        [*(value for _, value in used), int(limit)],
    )
    frame = pd.DataFrame.from_records(rows, columns=list(REQUEST_COLUMNS))
    frame["at"] = [_from_db_time(_source, at) for at in frame["at"]]
    frame["stream"] = frame["stream"].astype(bool)
    for name in ("request_id", "account_id", "api_key_id"):
        frame[name] = [id_text(value) or "" for value in frame[name]]
    return frame


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def request_row(key: str, request_id: str, *, _source: Source) -> dict[str, Any] | None:
    with _reading():
        row = _source.views().requests.get_request(UUID(request_id))
    return None if row is None else asdict(row)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def dimensions(key: str, *, _source: Source) -> dict[str, list[Any]]:
    """The distinct accounts, keys (ids as dashed UUIDs), models, providers and statuses that have requests."""

    def distinct(column: str, table: str) -> list[Any]:
        return sorted(v for (v,) in _run(_source, f"SELECT DISTINCT {column} FROM {table}") if v not in (None, ""))

    return {
        "account_id": [id_text(v) for v in distinct("account_id", USAGE_TABLE)],
        "api_key_id": [id_text(v) for v in distinct("api_key_id", USAGE_TABLE)],
        "model": distinct("model", USAGE_TABLE),
        "provider": distinct("provider", USAGE_TABLE),
        "status": [int(s) for s in distinct("status", REQUESTS_TABLE)],
    }


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def status_counts(key: str, since: datetime, until: datetime, *, _source: Source) -> pd.DataFrame:
    """Requests per provider and HTTP status in the window."""
    rows = _run(
        _source,
        f"SELECT provider, status, COUNT(*) FROM {REQUESTS_TABLE} WHERE at >= ? AND at < ?"
        " GROUP BY provider, status ORDER BY provider, status",
        (_time(_source, since), _time(_source, until)),
    )
    return pd.DataFrame([(p, int(s), int(n)) for p, s, n in rows], columns=["provider", "status", "requests"])


@dataclass(frozen=True)
class Statement:
    opening_balance: int
    entries: pd.DataFrame  # position, at, kind, amount, balance, request_id, reason, ... oldest first


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def statement(key: str, account_id: str, since: datetime, until: datetime, *, _source: Source) -> Statement | None:
    """An account's ledger entries in the window with its opening balance; None where the
    deployment has no ledger-entries read model (``th_rm_ledger_entries``) yet."""
    view, account = _source.views().ledger, UUID(account_id)
    try:
        with _reading():
            entries = view.list_entries(account, since, until)
            opening = view.opening_balance(account, since)
    except ReadModelsMissing:
        return None
    records = [
        {**asdict(e), "account_id": str(e.account_id), "request_id": str(e.request_id) if e.request_id else ""}
        for e in entries
    ]
    columns = ["position", "at", "kind", "amount", "balance", "reason", "request_id"]
    frame = pd.DataFrame.from_records(records)
    return Statement(opening, frame[columns] if not frame.empty else pd.DataFrame(columns=columns))


KEY_SPEND_COLUMNS = ("account_id", "api_key_id", "requests", "failed_requests", "tokens", "charge", "cost")


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def key_spend_frame(key: str, since: datetime, until: datetime, *, _source: Source) -> pd.DataFrame:
    """The usage rollups of ``[since, until)`` summed per account and API key in SQL (one query;
    ids as dashed UUIDs, ``''`` for requests no key made), the most charged first. ``tokens``
    is input (cached included) + output (reasoning included), as the overview counts them."""
    rows = _run(
        _source,
        f"SELECT account_id, api_key_id, SUM(requests), SUM(failed_requests), SUM(input_tokens + output_tokens),"
        f" SUM(charge), SUM(cost) FROM {USAGE_TABLE} WHERE hour >= ? AND hour < ? GROUP BY account_id, api_key_id",
        (_time(_source, since), _time(_source, until)),
    )
    records = [
        (id_text(account) or "", id_text(api_key) or "", *(int(value) for value in sums))
        for account, api_key, *sums in rows
    ]
    frame = pd.DataFrame.from_records(records, columns=list(KEY_SPEND_COLUMNS))
    frame = frame.astype({name: "int64" for name in KEY_SPEND_COLUMNS[2:]})
    return frame.sort_values(["charge", "requests", "api_key_id"], ascending=[False, False, True], ignore_index=True)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def keys_last_used(key: str, account_id: str, *, _source: Source) -> dict[str, datetime]:
    """When each API key of the account last made a request (the request log's newest row;
    keys as dashed UUIDs); a key that never did is absent."""
    rows = _run(
        _source,
        f"SELECT api_key_id, MAX(at) FROM {REQUESTS_TABLE} WHERE account_id = ? AND api_key_id IS NOT NULL"
        " GROUP BY api_key_id",
        (UUID(account_id).hex,),
    )
    found = {id_text(api_key) or "": _from_db_time(_source, at) for api_key, at in rows}
    return {api_key: at for api_key, at in found.items() if api_key and at is not None}


# --- the audit log and request-id search (issue 19) --------------------------------------

AUDIT_COLUMNS = ("position", "at", "actor", "action", "target", "summary", "aggregate_id")


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def audit_frame(
    key: str,
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 200,
    _source: Source,
) -> pd.DataFrame:
    """The audit log's rows matching the filters (projections/audit.py ``AuditFilter``),
    newest first, at most ``limit``; actor ``None`` shown as ``unrecorded``, ids dashed."""
    where = AuditFilter(actor=actor, action=action, target=target, since=since, until=until)
    with _reading():
        entries = SqlAuditView(_source.views().store).list_entries(where, limit=limit)
    records = [
        {**asdict(e), "actor": e.actor or AUDIT_UNRECORDED, "aggregate_id": str(e.aggregate_id)} for e in entries
    ]
    return pd.DataFrame.from_records(records, columns=list(AUDIT_COLUMNS))


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def audit_count(
    key: str,
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    _source: Source,
) -> int:
    view = SqlAuditView(_source.views().store)
    clauses, params = view.where(AuditFilter(actor=actor, action=action, target=target, since=since, until=until))
    sql = f"SELECT COUNT(*) FROM {AUDIT_TABLE}" + (" WHERE " + " AND ".join(clauses) if clauses else "")
    ((count,),) = _run(_source, sql, params)
    return int(count)


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def audit_actors(key: str, *, _source: Source) -> list[str]:
    """Every actor of the audit log (``unrecorded`` for rows without one)."""
    with _reading():
        actors = SqlAuditView(_source.views().store).list_actors()
    return [actor or AUDIT_UNRECORDED for actor in actors]


@st.cache_data(ttl=TTL_SECONDS, show_spinner=False)
def request_ids_starting(key: str, prefix: str, *, _source: Source) -> list[str]:
    """Up to two request ids (dashed) of the request log that start with ``prefix`` (hex digits,
    dashes ignored): one means found, two means the prefix is ambiguous."""
    digits = prefix.replace("-", "").lower()
    if not digits or any(c not in "0123456789abcdef" for c in digits) or len(digits) > 32:
        return []
    sql = f"SELECT request_id FROM {REQUESTS_TABLE} WHERE " + (
        "request_id = ?" if len(digits) == 32 else "request_id LIKE ?"
    )
    rows = _run(_source, sql + " ORDER BY request_id LIMIT 2", (digits if len(digits) == 32 else digits + "%",))
    return [id_text(request_id) or "" for (request_id,) in rows]
