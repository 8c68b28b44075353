"""The request log: one row per recorded request, newest first.

Invariants kept here:
- exactly one row per ``RequestRecord`` (its id is the request id, the row's primary
  key), carrying what the record says: outcome, status, latency, tokens, usage source,
  the charge in integer nanocredits and the price-book version, and the attribution the
  caller sent (domain/attribution.py: end user, tags, metadata), filterable;
- rows are written once and never updated, so a rebuild from zero gives identical rows.

Tags and metadata pairs are also kept one per row in two side tables, so a filter by tag
or by ``key=value`` is an exact, indexed match (never a pattern over joined text).
``usage_of`` sums rows into the usage rollup's shape (projections/usage.py ``UsageRow``):
the usage queries filtered by user or tag answer from here, so the hourly rollups stay
keyed as they are, with no unbounded label in them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Protocol
from uuid import UUID

import orjson
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.utils import get_topic

from domain.request_record import NO_COUNTS, RequestRecord, record_facts
from domain.slots_init import slots_init
from projections.hourly import add_to, hour_of
from projections.memory import InMemoryStore, MemoryTransaction
from projections.store import SqlStore, SqlTransaction
from projections.usage import UsageCounts, UsageKey, UsageRow
from projections.usage import _row as usage_row

REQUESTS_TABLE = "th_rm_request_log"
TAGS_TABLE = "th_rm_request_tags"
METADATA_TABLE = "th_rm_request_metadata"
Pair = tuple[str, str]


@slots_init  # one built per request recorded: domain/slots_init.py
@dataclass(frozen=True, slots=True)
class RequestRow:
    request_id: UUID
    at: datetime
    account_id: UUID | None
    api_key_id: UUID | None
    provider: str
    model: str
    upstream_model: str
    endpoint: str
    outcome: str
    status: int
    error_code: str | None
    stream: bool
    latency_ms: float
    ttfb_ms: float | None
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    reasoning_tokens: int
    usage_source: str | None
    charge: int
    cost: int
    price_book_version: int | None
    images: int = 0
    end_user: str | None = None  # the caller's ``user`` (domain/attribution.py)
    tags: tuple[str, ...] = ()
    metadata: tuple[Pair, ...] = ()

    def matches(self, user: str | None = None, tag: str | None = None, metadata: Pair | None = None) -> bool:
        """Whether the row has this end user, this tag and this metadata pair (None: any)."""
        return (
            (user is None or self.end_user == user)
            and (tag is None or tag in self.tags)
            and (metadata is None or metadata in self.metadata)
        )


COLUMNS = tuple(f.name for f in fields(RequestRow))


@lru_cache(maxsize=4096)  # a few accounts and keys make most requests: each id parsed once, not per row
def _uuid(value: str | None) -> UUID | None:
    return UUID(value) if value else None


def row_of(event: DomainEventProtocol[Any]) -> RequestRow:
    assert isinstance(event, (RequestRecord.Completed, RequestRecord.Failed))
    d = record_facts(event.details)
    input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, images = d.counts or NO_COUNTS
    attribution = d.attribution
    return RequestRow(
        request_id=event.originator_id,
        at=event.timestamp,
        account_id=_uuid(d.account_id),
        api_key_id=_uuid(d.api_key_id),
        provider=d.provider,
        model=d.model,
        upstream_model=d.upstream_model,
        endpoint=d.endpoint,
        outcome=d.outcome,
        status=d.status,
        error_code=d.error_code,
        stream=d.stream,
        latency_ms=d.latency_ms,
        ttfb_ms=d.ttfb_ms,
        input_tokens=input_tokens,
        cached_input_tokens=cached_input_tokens,
        output_tokens=output_tokens,
        reasoning_tokens=reasoning_tokens,
        usage_source=d.source,
        charge=d.charge,
        cost=d.cost,
        price_book_version=d.price_book_version,
        images=images,
        end_user=attribution.user if attribution else None,
        tags=attribution.tags if attribution else (),
        metadata=attribution.metadata if attribution else (),
    )


def usage_of(
    rows: Iterable[RequestRow], since: datetime | None = None, until: datetime | None = None
) -> list[UsageRow]:
    """The rows summed as the usage rollup sums their records (projections/usage.py
    ``counts_of``, ``fold_usage``), in its buckets with ``since <= hour < until``, in its order."""
    buckets: dict[UsageKey, UsageCounts] = {}
    for row in rows:
        hour = hour_of(row.at)
        if (since is not None and hour < since) or (until is not None and hour >= until):
            continue
        key = (row.account_id.hex if row.account_id else "", row.api_key_id.hex if row.api_key_id else "")
        counts = UsageCounts(
            requests=1,
            failed_requests=int(row.outcome != "completed"),
            input_tokens=row.input_tokens,
            cached_input_tokens=row.cached_input_tokens,
            output_tokens=row.output_tokens,
            reasoning_tokens=row.reasoning_tokens,
            images=row.images,
            charge=row.charge,
            cost=row.cost,
            estimated_requests=int(row.usage_source == "estimated"),
        )
        add_to(buckets, (*key, row.provider, row.model, hour), counts)
    ordered = sorted(buckets.items(), key=lambda item: (item[0][4], *item[0][:4]))
    return [usage_row(key, counts) for key, counts in ordered]


def hours_window(since: datetime | None, until: datetime | None) -> tuple[datetime | None, datetime | None]:
    """The request times (``since <= at < until``) whose hours can fall in ``since <= hour < until``."""
    return (None if since is None else hour_of(since), None if until is None else until + timedelta(hours=1))


class RequestLogView(Protocol):
    def get_request(self, request_id: UUID) -> RequestRow | None: ...

    def list_requests(
        self,
        account_id: UUID | None = None,
        model: str | None = None,
        status: int | None = None,
        limit: int = 100,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        usage_source: str | None = None,
        user: str | None = None,
        tag: str | None = None,
        metadata: Pair | None = None,
    ) -> list[RequestRow]:
        """Newest first; ``since <= at < until``; ``usage_source`` ``"estimated"`` or ``"provider"``;
        ``user``, ``tag``, ``metadata`` (a key and its value): the attribution's, exactly."""

    def iter_requests(
        self,
        since: datetime | None,
        until: datetime | None,
        batch: int = 10_000,
        *,
        account_id: UUID | None = None,
        user: str | None = None,
        tag: str | None = None,
        metadata: Pair | None = None,
    ) -> Iterator[RequestRow]:
        """Every row with ``since <= at < until`` (and the filters, as ``list_requests``'),
        oldest first (ties by request id), read in batches."""

    def apply(self, tx: Any, rows: list[RequestRow]) -> None: ...

    def clear(self, tx: Any) -> None: ...


class RequestLogProjection:
    name = "request_log"
    schema_version = 2  # 2: images, end_user, tags, metadata, and the tags and metadata tables
    topics = frozenset(get_topic(cls) for cls in (RequestRecord.Completed, RequestRecord.Failed))

    def __init__(self, view: RequestLogView) -> None:
        self.view = view

    def process(self, tx: Any, events: Iterable[DomainEventProtocol[Any]]) -> None:
        self.view.apply(tx, [row_of(event) for event in events])

    def clear(self, tx: Any) -> None:
        self.view.clear(tx)


def _newest_first(row: RequestRow) -> tuple[datetime, str]:
    return row.at, row.request_id.hex


class InMemoryRequestLogView:
    def __init__(self, store: InMemoryStore) -> None:
        self._lock = store.lock
        self._rows: dict[UUID, RequestRow] = {}

    def get_request(self, request_id: UUID) -> RequestRow | None:
        with self._lock:
            return self._rows.get(request_id)

    def list_requests(
        self,
        account_id: UUID | None = None,
        model: str | None = None,
        status: int | None = None,
        limit: int = 100,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        usage_source: str | None = None,
        user: str | None = None,
        tag: str | None = None,
        metadata: Pair | None = None,
    ) -> list[RequestRow]:
        with self._lock:
            rows = [
                r
                for r in self._rows.values()
                if (account_id is None or r.account_id == account_id)
                and (model is None or r.model == model)
                and (status is None or r.status == status)
                and (since is None or r.at >= since)
                and (until is None or r.at < until)
                and (usage_source is None or r.usage_source == usage_source)
                and r.matches(user, tag, metadata)
            ]
        return sorted(rows, key=_newest_first, reverse=True)[:limit]

    def iter_requests(
        self,
        since: datetime | None,
        until: datetime | None,
        batch: int = 10_000,
        *,
        account_id: UUID | None = None,
        user: str | None = None,
        tag: str | None = None,
        metadata: Pair | None = None,
    ) -> Iterator[RequestRow]:
        with self._lock:
            rows = [
                r
                for r in self._rows.values()
                if (since is None or r.at >= since)
                and (until is None or r.at < until)
                and (account_id is None or r.account_id == account_id)
                and r.matches(user, tag, metadata)
            ]
        return iter(sorted(rows, key=_newest_first))

    def apply(self, tx: MemoryTransaction, rows: list[RequestRow]) -> None:
        tx.on_commit(lambda: self._rows.update((r.request_id, r) for r in rows))

    def clear(self, tx: MemoryTransaction) -> None:
        tx.on_commit(self._rows.clear)


class SqlRequestLogView:
    DDL = (
        f"CREATE TABLE IF NOT EXISTS {REQUESTS_TABLE} ("
        " request_id TEXT PRIMARY KEY, at TIMESTAMPTZ NOT NULL, account_id TEXT, api_key_id TEXT,"
        " provider TEXT NOT NULL, model TEXT NOT NULL, upstream_model TEXT NOT NULL, endpoint TEXT NOT NULL,"
        " outcome TEXT NOT NULL, status INTEGER NOT NULL, error_code TEXT, stream BOOLEAN NOT NULL,"
        " latency_ms DOUBLE PRECISION NOT NULL, ttfb_ms DOUBLE PRECISION,"
        " input_tokens BIGINT NOT NULL, cached_input_tokens BIGINT NOT NULL, output_tokens BIGINT NOT NULL,"
        " reasoning_tokens BIGINT NOT NULL, usage_source TEXT, charge BIGINT NOT NULL, cost BIGINT NOT NULL,"
        " price_book_version BIGINT, images BIGINT NOT NULL, end_user TEXT, tags TEXT, metadata TEXT)",
        f"CREATE INDEX IF NOT EXISTS {REQUESTS_TABLE}_at ON {REQUESTS_TABLE} (at)",
        f"CREATE INDEX IF NOT EXISTS {REQUESTS_TABLE}_account_at ON {REQUESTS_TABLE} (account_id, at)",
        f"CREATE INDEX IF NOT EXISTS {REQUESTS_TABLE}_end_user ON {REQUESTS_TABLE} (end_user, at)",
        f"CREATE TABLE IF NOT EXISTS {TAGS_TABLE} ("
        " tag TEXT NOT NULL, request_id TEXT NOT NULL, PRIMARY KEY (tag, request_id))",
        f"CREATE TABLE IF NOT EXISTS {METADATA_TABLE} ("
        " key TEXT NOT NULL, value TEXT NOT NULL, request_id TEXT NOT NULL, PRIMARY KEY (key, value, request_id))",
    )
    TABLES = (REQUESTS_TABLE, TAGS_TABLE, METADATA_TABLE)

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        # SQLite stores a bool as the integer it is, but binds a bool only after looking for an
        # adapter (about 3,000 instructions); PostgreSQL's column is BOOLEAN and needs the bool.
        self._stream: type[int] = int if store.kind == "sqlite" else bool

    def get_request(self, request_id: UUID) -> RequestRow | None:
        rows = self.store.query(
            f"SELECT {', '.join(COLUMNS)} FROM {REQUESTS_TABLE} WHERE request_id = ?", (request_id.hex,)
        )
        return self._row(rows[0]) if rows else None

    def list_requests(
        self,
        account_id: UUID | None = None,
        model: str | None = None,
        status: int | None = None,
        limit: int = 100,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        usage_source: str | None = None,
        user: str | None = None,
        tag: str | None = None,
        metadata: Pair | None = None,
    ) -> list[RequestRow]:
        filters = [
            ("account_id = ?", None if account_id is None else account_id.hex),
            ("model = ?", model),
            ("status = ?", status),
            ("at >= ?", self.store.to_db_time(since)),
            ("at < ?", self.store.to_db_time(until)),
            ("usage_source = ?", usage_source),
        ]
        clauses, params = self._where(filters, user, tag, metadata)
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        rows = self.store.query(
            f"SELECT {', '.join(COLUMNS)} FROM {REQUESTS_TABLE}{where} ORDER BY at DESC, request_id DESC LIMIT ?",
            [*params, int(limit)],
        )
        return [self._row(row) for row in rows]

    def iter_requests(
        self,
        since: datetime | None,
        until: datetime | None,
        batch: int = 10_000,
        *,
        account_id: UUID | None = None,
        user: str | None = None,
        tag: str | None = None,
        metadata: Pair | None = None,
    ) -> Iterator[RequestRow]:
        filters = [
            ("at >= ?", self.store.to_db_time(since)),
            ("at < ?", self.store.to_db_time(until)),
            ("account_id = ?", None if account_id is None else account_id.hex),
        ]
        bounds = self._where(filters, user, tag, metadata)
        after: tuple[Any, str] | None = None
        while True:
            clauses, params = list(bounds[0]), list(bounds[1])
            if after is not None:  # keyset: strictly after the last row read
                clauses.append("(at > ? OR (at = ? AND request_id > ?))")
                params += [after[0], after[0], after[1]]
            where = " WHERE " + " AND ".join(clauses) if clauses else ""
            rows = self.store.query(
                f"SELECT {', '.join(COLUMNS)} FROM {REQUESTS_TABLE}{where} ORDER BY at, request_id LIMIT ?",
                [*params, batch],
            )
            for row in rows:
                yield self._row(row)
            if len(rows) < batch:
                return
            after = (rows[-1][1], rows[-1][0])

    def apply(self, tx: SqlTransaction, rows: list[RequestRow]) -> None:
        tx.executemany(
            f"INSERT INTO {REQUESTS_TABLE} ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
            [self._params(row) for row in rows],
        )
        tx.executemany(
            f"INSERT INTO {TAGS_TABLE} (tag, request_id) VALUES (?, ?)",
            [(tag, row.request_id.hex) for row in rows for tag in row.tags],
        )
        tx.executemany(
            f"INSERT INTO {METADATA_TABLE} (key, value, request_id) VALUES (?, ?, ?)",
            [(key, value, row.request_id.hex) for row in rows for key, value in row.metadata],
        )

    def clear(self, tx: SqlTransaction) -> None:
        for table in self.TABLES:
            tx.execute(f"DELETE FROM {table}")

    def _where(
        self, filters: list[tuple[str, Any]], user: str | None, tag: str | None, metadata: Pair | None
    ) -> tuple[list[str], list[Any]]:
        """The clauses and parameters of the filters that are set, attribution's included."""
        filters = [*filters, ("end_user = ?", user)]
        if tag is not None:
            filters.append((f"request_id IN (SELECT request_id FROM {TAGS_TABLE} WHERE tag = ?)", tag))
        used = [(clause, [value]) for clause, value in filters if value is not None]
        if metadata is not None:
            clause = f"request_id IN (SELECT request_id FROM {METADATA_TABLE} WHERE key = ? AND value = ?)"
            used.append((clause, list(metadata)))
        return [clause for clause, _ in used], [value for _, values in used for value in values]

    def _params(self, row: RequestRow) -> tuple[Any, ...]:
        """The row's values in ``COLUMNS`` order, as stored (``astuple`` deep-copies: slow)."""
        account, api_key = row.account_id, row.api_key_id
        return (
            row.request_id.hex,
            self.store.to_db_time(row.at),
            account.hex if account else None,
            api_key.hex if api_key else None,
            row.provider,
            row.model,
            row.upstream_model,
            row.endpoint,
            row.outcome,
            row.status,
            row.error_code,
            self._stream(row.stream),
            row.latency_ms,
            row.ttfb_ms,
            row.input_tokens,
            row.cached_input_tokens,
            row.output_tokens,
            row.reasoning_tokens,
            row.usage_source,
            row.charge,
            row.cost,
            row.price_book_version,
            row.images,
            row.end_user,
            ",".join(row.tags) if row.tags else None,  # a tag holds no comma
            orjson.dumps(dict(row.metadata)).decode() if row.metadata else None,
        )

    def _row(self, values: tuple[Any, ...]) -> RequestRow:
        row = dict(zip(COLUMNS, values, strict=True))
        row.update(
            request_id=UUID(row["request_id"]),
            at=self.store.from_db_time(row["at"]),
            account_id=_uuid(row["account_id"]),
            api_key_id=_uuid(row["api_key_id"]),
            stream=bool(row["stream"]),
            tags=tuple(row["tags"].split(",")) if row["tags"] else (),
            metadata=tuple(orjson.loads(row["metadata"]).items()) if row["metadata"] else (),
        )
        return RequestRow(**row)
