"""CSV / JSONL files of two read models (hourly usage, request log) with a manifest.

Invariants kept here:
- amounts are integer nanocredits in the file (column names end in ``_nanocredits``);
  times are UTC ISO 8601; ids are hex text;
- the manifest's ``rows`` and ``totals`` are computed from the very rows written, and its
  ``sha256`` is the digest of the file's bytes;
- these are read-model snapshots for analysis. The auditable ledger export (event
  positions, running balances, a hash chain ``tallyhub verify`` checks) is another thing,
  and the manifest says so.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import datetime, timezone
from typing import Any, Iterable

import pandas as pd

from dashboard.windows import Window
from projections.usage import COUNTERS

MAX_ROWS = 200_000
MONEY = {"charge": "charge_nanocredits", "cost": "cost_nanocredits"}
USAGE_FIELDS = ("hour", "account_id", "api_key_id", "provider", "model", *(MONEY.get(c, c) for c in COUNTERS))
REQUEST_FIELDS = ("request_id", "at", "account_id", "api_key_id", "provider", "model", "upstream_model", "endpoint",
                  "outcome", "status", "error_code", "stream", "latency_ms", "ttfb_ms", "input_tokens",
                  "cached_input_tokens", "output_tokens", "reasoning_tokens", "usage_source", "charge_nanocredits",
                  "cost_nanocredits", "price_book_version")
DATASETS = {
    "usage": ("th_rm_usage_hourly", USAGE_FIELDS),
    "requests": ("th_rm_request_log", REQUEST_FIELDS),
}
NOTE = ("A snapshot of a read model, for analysis. Not the ledger export: it carries no event positions, "
        "running balances or hash chain (see `tallyhub export ledger` and `tallyhub verify`).")


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat()
    if hasattr(value, "item"):  # numpy scalars to Python
        value = value.item()
    if isinstance(value, float) and value != value:  # a missing float (NaN) is written as null / empty
        return None
    return value


def records(dataset: str, frame: pd.DataFrame) -> list[dict[str, Any]]:
    _, fields = DATASETS[dataset]
    renamed = frame.rename(columns=MONEY)
    return [{name: _plain(row[name]) for name in fields} for row in renamed.to_dict("records")]


def to_csv(dataset: str, rows: Iterable[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(DATASETS[dataset][1]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue().encode()


def to_jsonl(rows: Iterable[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row, sort_keys=True, separators=(",", ":")) + "\n" for row in rows).encode()


def totals(dataset: str, rows: list[dict[str, Any]]) -> dict[str, int]:
    if dataset == "usage":
        names = [MONEY.get(c, c) for c in COUNTERS]
    else:
        names = ["input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens", "charge_nanocredits",
                 "cost_nanocredits"]
    sums = {name: sum(int(row[name] or 0) for row in rows) for name in names}
    if dataset == "requests":
        sums["failed_requests"] = sum(1 for row in rows if row["outcome"] != "completed")
    return sums


def build(dataset: str, frame: pd.DataFrame, window: Window, fmt: str, positions: dict[str, int],
          *, now: datetime | None = None) -> tuple[bytes, dict[str, Any]]:
    """The file's bytes and its manifest."""
    rows = records(dataset, frame)
    data = to_csv(dataset, rows) if fmt == "csv" else to_jsonl(rows)
    table, _ = DATASETS[dataset]
    manifest = {
        "dataset": dataset,
        "source_table": table,
        "format": fmt,
        "file_name": file_name(dataset, window, fmt),
        "window": {"since": window.since.isoformat(), "until": window.until.isoformat()},
        "rows": len(rows),
        "totals": totals(dataset, rows),
        "sha256": hashlib.sha256(data).hexdigest(),
        "read_model_positions": dict(sorted(positions.items())),
        "generated_at": (now or datetime.now(timezone.utc)).isoformat(),
        "note": NOTE,
    }
    return data, manifest


def file_name(dataset: str, window: Window, fmt: str) -> str:
    return f"tallyhub-{dataset}-{window.since:%Y%m%dT%H}-{window.until:%Y%m%dT%H}.{fmt}"
