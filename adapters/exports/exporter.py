"""Writing an export: the file, its manifest beside it (``PATH.manifest.json``), and its
entry in the ledger's export log.

Invariants kept here:
- the file is written under a temporary name and renamed into place whole; the
  manifest's ``sha256`` is the digest of exactly the bytes renamed, ``rows`` and
  ``totals`` are computed from exactly the rows written;
- the chain's seed is the export log's head when the file is written, and the export
  is recorded in the log with that seed: if another export of the same kind was
  recorded meanwhile, the file is written again on the new head, so the exports of a
  kind form one chain with no fork;
- the read model is caught up before reading, and the manifest names the event
  position it was caught up to (``as_of_position``);
- the file and its manifest are created 0600 (adapters/files.py): only their owner reads them.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

from eventsourcing.persistence import IntegrityError

from adapters.exports.datasets import dataset
from adapters.exports.formats import FORMATS, LAYOUT, ChainedRows
from adapters.files import open_private, write_private
from adapters.presenters import id_text, money_fields
from adapters.services import Services
from domain import ids
from domain.errors import InvalidRequest
from domain.export_log import EXPORT_KINDS, ExportLog

MAX_WRITE_ATTEMPTS = 3
MANIFEST_SUFFIX = ".manifest.json"
CHAIN_RULE = "link = sha256(bytes.fromhex(previous link) + row content); the first row's previous link is chain.seed"


def manifest_path(path: Path) -> Path:
    return path.with_name(path.name + MANIFEST_SUFFIX)


def create_export(
    services: Services, kind: str, since: datetime | None, until: datetime | None, file_format: str, out: Path
) -> dict[str, Any]:
    """Write the ``kind`` export of ``[since, until)`` to ``out``; returns its manifest."""
    if kind not in EXPORT_KINDS:
        raise InvalidRequest(f"no export kind {kind!r} (have: {', '.join(EXPORT_KINDS)})", param="kind")
    if file_format not in FORMATS:
        raise InvalidRequest(f"no export format {file_format!r} (have: {', '.join(FORMATS)})", param="format")
    since, until = _utc(since), _utc(until)
    if since is not None and until is not None and since >= until:
        raise InvalidRequest("the export window's start must be before its end", param="from")
    out = Path(out)
    if out.is_dir():
        raise InvalidRequest(f"{out} is a directory; give the export file's path", param="out")
    if not out.parent.is_dir():
        raise InvalidRequest(f"no directory {out.parent} to write the export into", param="out")
    read_models = services.read_models
    read_models.runner.catch_up()
    for _ in range(MAX_WRITE_ATTEMPTS):
        log = services.ledger.find(ids.export_log_id(kind))
        log = log if isinstance(log, ExportLog) else ExportLog(kind)
        previous = id_text(log.exports[-1]["export_id"]) if log.exports else None
        rows = dataset(kind, read_models, since, until)
        as_of = read_models.store.positions().get(rows.projection, 0)
        written = _write(rows, FORMATS[file_format](rows.text_columns), log.head, out)
        now = services.ledger.clock.now()
        manifest = manifest_of(
            rows,
            export_id=str(uuid4()),
            file_format=file_format,
            file_name=out.name,
            created_at=now,
            seed=log.head,
            written=written,
            previous=previous,
            as_of=as_of,
        )
        log.record(
            export_id=manifest["export_id"],
            file_format=file_format,
            since=since,
            until=until,
            rows=written["rows"],
            sha256=written["sha256"],
            chain_seed=log.head,
            chain_head=written["head"],
            first_position=rows.first_position,
            last_position=rows.last_position,
            as_of_position=as_of,
            path=str(out.resolve()),
            at=now,
        )
        os.replace(written["temporary"], out)
        write_private(manifest_path(out), (json.dumps(manifest, indent=2) + "\n").encode())
        try:
            services.ledger.save(log)
        except IntegrityError:
            continue  # another export of this kind was recorded on the same head: chain onto it
        return manifest
    raise InvalidRequest(f"other {kind} exports kept being recorded at the same time; try again")


def manifest_of(
    rows: Any,
    *,
    export_id: str | None,
    file_format: str,
    file_name: str,
    created_at: datetime,
    seed: str,
    written: dict[str, Any],
    previous: str | None,
    as_of: int,
) -> dict[str, Any]:
    """The manifest of ``rows`` (a dataset whose rows were all written: ``written`` holds
    ``rows``, ``sha256`` and the chain's ``head``)."""
    manifest = {
        "export_id": export_id,
        "kind": rows.kind,
        "format": file_format,
        "layout": LAYOUT,
        "file": file_name,
        "from": rows.since.isoformat() if rows.since else None,
        "to": rows.until.isoformat() if rows.until else None,
        "created_at": created_at.isoformat(),
        "columns": list(rows.columns),
        "rows": written["rows"],
        "sha256": written["sha256"],
        "chain": {"rule": CHAIN_RULE, "seed": seed, "head": written["head"]},
        "previous_export": previous,
        "events": {"first_position": rows.first_position, "last_position": rows.last_position, "as_of_position": as_of},
        "totals": rows.totals,
    }
    if rows.kind == "ledger":
        manifest["totals"] = _ledger_totals(rows.totals)
        manifest["accounts"] = {
            account: money_fields(dict(values), "opening", "closing")
            for account, values in sorted(rows.accounts.items())
        }
    return manifest


def list_exports(services: Services) -> list[dict[str, Any]]:
    """Every recorded export, of every kind, oldest first."""
    found = []
    for kind in EXPORT_KINDS:
        log = services.ledger.find(ids.export_log_id(kind))
        if isinstance(log, ExportLog):
            found += [{"kind": kind, **entry, "export_id": id_text(entry["export_id"])} for entry in log.exports]
    return sorted(found, key=lambda entry: entry["recorded_at"])


def _write(rows: Any, fmt: Any, seed: str, out: Path) -> dict[str, Any]:
    temporary = out.with_name(f".{out.name}.{uuid4().hex[:8]}.partial")
    digest = hashlib.sha256()
    chained = ChainedRows(fmt, seed)
    with open_private(temporary, buffering=1 << 20) as file:
        header = fmt.header(rows.columns)
        file.write(header)
        digest.update(header)
        for row in rows.rows():
            line = chained.line(row)
            file.write(line)
            digest.update(line)
        file.flush()
        os.fsync(file.fileno())
    return {"temporary": temporary, "rows": chained.rows, "sha256": digest.hexdigest(), "head": chained.head}


def _ledger_totals(totals: dict[str, Any]) -> dict[str, Any]:
    kinds = {kind: money_fields(dict(values), "amount") for kind, values in totals["kinds"].items()}
    return money_fields(
        {"kinds": kinds, "net": totals["net"], "uncollected": totals["uncollected"], "accounts": totals["accounts"]},
        "net",
        "uncollected",
    )


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
