"""What each kind of export contains, read from the read models, and the totals its
manifest states. Money columns end in ``_nanocredits`` and are integers.

- ``ledger``: every movement of every account in the window, in event-position order,
  with its running balance (projections/ledger_entries.py). The window cuts the ledger
  at the first movement (in position order) at or after each bound, for all accounts at
  once, so per account ``opening + sum(amounts) == closing`` and the rows of consecutive
  windows join without gap or overlap.
- ``usage``: the hourly rollups whose hour starts in the window.
- ``requests``: the request log rows recorded in the window, oldest first.

Ids are dashed UUIDs, as the API and the CLI show them, and every row carries its
account's name (``account``) beside ``account_id``, from the balances read model.
``ledger_rows(..., layout=1)`` gives the rows as exports of layout 1 wrote them (hex
ids, no name), so ``verify`` can compare those with the ledger too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from adapters.exports.formats import LAYOUT
from adapters.presenters import id_text
from projections.ledger_entries import KINDS, LedgerEntry, plain_entry
from projections.request_log import RequestRow
from projections.usage import COUNTERS

_MONEY = {"amount", "balance", "uncollected", "held", "charge", "cost"}


def _column(name: str) -> str:
    return f"{name}_nanocredits" if name in _MONEY else name


LEDGER_FIELDS = (
    "position",
    "at",
    "account_id",
    "account",
    "kind",
    "amount",
    "balance",
    "request_id",
    "reason",
    "idempotency_key",
    "uncollected",
    "held",
)
USAGE_FIELDS = ("hour", "account_id", "account", "api_key_id", "provider", "model", *COUNTERS)
REQUEST_FIELDS = (
    "request_id",
    "at",
    "account_id",
    "account",
    "api_key_id",
    "provider",
    "model",
    "upstream_model",
    "endpoint",
    "outcome",
    "status",
    "error_code",
    "stream",
    "latency_ms",
    "ttfb_ms",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "usage_source",
    "charge",
    "cost",
    "price_book_version",
)
# Free text that came from someone (operators' reasons and keys, names, models, providers'
# error codes): the columns a CSV export escapes (adapters/exports/formats.py). Kinds,
# outcomes and usage sources are the code's own words, but cost nothing to include.
LEDGER_TEXT = ("account", "kind", "reason", "idempotency_key")
USAGE_TEXT = ("account", "provider", "model")
REQUEST_TEXT = ("account", "provider", "model", "upstream_model", "endpoint", "outcome", "error_code", "usage_source")
Names = dict[str, str]  # account id (32 hex digits) -> account name


def account_names(read_models: Any) -> Names:
    """Every account's name, from the balances read model."""
    return {row.account_id.hex: row.name for row in read_models.balances.list_balances()}


@dataclass
class LedgerDataset:
    """Reads the ledger-entries view; ``start``/``stop`` are the window's positions."""

    view: Any
    since: datetime | None
    until: datetime | None
    names: Names = field(default_factory=dict)
    kind: str = "ledger"
    projection: str = "ledger_entries"
    columns: tuple[str, ...] = tuple(_column(name) for name in LEDGER_FIELDS)
    text_columns: tuple[str, ...] = LEDGER_TEXT
    first_position: int | None = None
    last_position: int | None = None
    totals: dict[str, Any] = field(default_factory=dict)
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def rows(self) -> Iterator[dict[str, Any]]:
        kinds = {kind: {"count": 0, "amount": 0} for kind in KINDS}
        net = uncollected = 0
        start, stop = self.view.window_positions(self.since, self.until)
        for row in ledger_rows(self.view, start, stop, self.names):
            position, account_id, kind, amount, balance = (
                row["position"],
                row["account_id"],
                row["kind"],
                row["amount_nanocredits"],
                row["balance_nanocredits"],
            )
            if self.first_position is None:
                self.first_position = position
            self.last_position = position
            totals = kinds.setdefault(kind, {"count": 0, "amount": 0})
            totals["count"] += 1
            totals["amount"] += amount
            net += amount
            uncollected += row["uncollected_nanocredits"]
            account = self.accounts.get(account_id)
            if account is None:
                account = self.accounts[account_id] = {"name": row["account"], "opening": balance - amount, "rows": 0}
            account["closing"] = balance
            account["rows"] += 1
            yield row
        self.totals = {"kinds": kinds, "net": net, "uncollected": uncollected, "accounts": len(self.accounts)}


_LEDGER_COLUMNS = tuple(_column(name) for name in LEDGER_FIELDS)
_LAYOUT_1_COLUMNS = tuple(name for name in _LEDGER_COLUMNS if name != "account")


def ledger_rows(
    view: Any, start: int, stop: int, names: Names | None = None, *, layout: int = LAYOUT
) -> Iterator[dict[str, Any]]:
    """The ledger-entries view's rows with ``start <= position < stop`` as export rows (in
    the export's column order, of ``layout``), read plain: no ids or times parsed only to
    be printed. ``names``: the account names (``account_names``)."""
    if layout == 1:
        return (_layout_1_row(plain) for plain in view.iter_plain_entries(start, stop))
    known = names or {}
    return (_export_row(plain, known) for plain in view.iter_plain_entries(start, stop))


def ledger_row(entry: LedgerEntry, names: Names | None = None) -> dict[str, Any]:
    """One ledger entry as an export row (what ``ledger_rows`` yields for it)."""
    return _export_row(plain_entry(entry), names or {})


def _export_row(p: tuple[Any, ...], names: Names) -> dict[str, Any]:
    # plain rows come in the view's column order: position, account_id, at, kind, ...
    return dict(
        zip(
            _LEDGER_COLUMNS,
            (
                p[0],
                p[2],
                id_text(p[1]),
                names.get(p[1]),
                p[3],
                p[4],
                p[5],
                id_text(p[6]) or None,
                p[7],
                p[8],
                p[9],
                p[10],
            ),
            strict=True,
        )
    )


def _layout_1_row(p: tuple[Any, ...]) -> dict[str, Any]:
    return dict(
        zip(_LAYOUT_1_COLUMNS, (p[0], p[2], p[1], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10]), strict=True)
    )


@dataclass
class UsageDataset:
    view: Any
    since: datetime | None
    until: datetime | None
    names: Names = field(default_factory=dict)
    kind: str = "usage"
    projection: str = "usage"
    columns: tuple[str, ...] = tuple(_column(name) for name in USAGE_FIELDS)
    text_columns: tuple[str, ...] = USAGE_TEXT
    first_position: int | None = None
    last_position: int | None = None
    totals: dict[str, Any] = field(default_factory=dict)
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def rows(self) -> Iterator[dict[str, Any]]:
        sums = dict.fromkeys(COUNTERS, 0)
        for row in self.view.list_usage(None, self.since, self.until):
            values = {
                "hour": row.hour.isoformat(),
                "account_id": id_text(row.account_id),
                "account": _name(self.names, row.account_id),
                "api_key_id": id_text(row.api_key_id),
                "provider": row.provider,
                "model": row.model,
            }
            for name in COUNTERS:
                values[_column(name)] = getattr(row, name)
                sums[name] += getattr(row, name)
            yield values
        self.totals = {_column(name): total for name, total in sums.items()}


@dataclass
class RequestsDataset:
    view: Any
    since: datetime | None
    until: datetime | None
    names: Names = field(default_factory=dict)
    kind: str = "requests"
    projection: str = "request_log"
    columns: tuple[str, ...] = tuple(_column(name) for name in REQUEST_FIELDS)
    text_columns: tuple[str, ...] = REQUEST_TEXT
    first_position: int | None = None
    last_position: int | None = None
    totals: dict[str, Any] = field(default_factory=dict)
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def rows(self) -> Iterator[dict[str, Any]]:
        sums = {
            "requests": 0,
            "completed": 0,
            "failed": 0,
            "estimated": 0,
            "charge_nanocredits": 0,
            "cost_nanocredits": 0,
            "input_tokens": 0,
            "output_tokens": 0,
        }
        for row in self.view.iter_requests(self.since, self.until):
            sums["requests"] += 1
            sums["completed" if row.outcome == "completed" else "failed"] += 1
            sums["estimated"] += row.usage_source == "estimated"
            sums["charge_nanocredits"] += row.charge
            sums["cost_nanocredits"] += row.cost
            sums["input_tokens"] += row.input_tokens
            sums["output_tokens"] += row.output_tokens
            yield request_row(row, self.names)
        self.totals = sums


def request_row(row: RequestRow, names: Names | None = None) -> dict[str, Any]:
    values = {}
    for name in REQUEST_FIELDS:
        if name == "account":
            values[name] = _name(names or {}, row.account_id)
            continue
        value = getattr(row, name)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif name in ("account_id", "api_key_id", "request_id"):
            value = id_text(value)
        values[_column(name)] = value
    return values


def _name(names: Names, account_id: Any) -> str | None:
    return names.get(account_id.hex) if account_id is not None else None


def dataset(kind: str, read_models: Any, since: datetime | None, until: datetime | None) -> Any:
    names = account_names(read_models)
    if kind == "ledger":
        return LedgerDataset(read_models.ledger, since, until, names)
    if kind == "usage":
        return UsageDataset(read_models.usage, since, until, names)
    return RequestsDataset(read_models.requests, since, until, names)
