"""Checking an export file against its manifest, its hash chain, the ledger's export
log and (for ledger exports) the ledger-entries read model. Used by ``tallyhub verify``.

Every problem names where it is: the file, or ``row N`` (1-based, header excluded) and
for ledger rows the event position. A row whose bytes were edited breaks its own link
(and only its own: each row is checked against the link stored in the row before it);
a file whose every link was recomputed after an edit no longer ends at the head the
export log recorded; a ledger row whose amount or balance was changed differs from the
ledger itself.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from adapters.exports.datasets import ledger_rows
from adapters.exports.exporter import manifest_path
from adapters.exports.formats import FORMATS, FormatError, link
from adapters.services import Services
from domain import ids
from domain.export_log import ExportLog

MAX_ROW_PROBLEMS = 20


def check_export(services: Services, path: Path) -> list[str]:
    """The problems of the export at ``path`` (empty when it verifies)."""
    path = Path(path)
    problems: list[str] = []
    try:
        manifest = json.loads(manifest_path(path).read_text())
    except OSError as exc:
        return [f"{path}: cannot read its manifest {manifest_path(path).name}: {exc.strerror}"]
    except json.JSONDecodeError:
        return [f"{path}: its manifest is not JSON"]
    try:
        data = path.read_bytes()
    except OSError as exc:
        return [f"{path}: cannot read the file: {exc.strerror}"]
    if hashlib.sha256(data).hexdigest() != manifest.get("sha256"):
        problems.append(f"{path}: the file's SHA-256 is not the manifest's (the file was changed)")
    problems += _check_log(services, path, manifest)
    problems += _check_rows(services, path, manifest)
    return problems


def _check_log(services: Services, path: Path, manifest: dict[str, Any]) -> list[str]:
    kind = manifest.get("kind")
    log = services.ledger.find(ids.export_log_id(kind)) if kind in ("ledger", "usage", "requests") else None
    entry = log.find(manifest.get("export_id")) if isinstance(log, ExportLog) else None
    if entry is None:
        return [f"{path}: export {manifest.get('export_id')} is not in the ledger's {kind} export log"]
    recorded = {"sha256": entry["sha256"], "rows": entry["rows"], "seed": entry["chain_seed"],
                "head": entry["chain_head"]}
    stated = {"sha256": manifest.get("sha256"), "rows": manifest.get("rows"),
              "seed": manifest.get("chain", {}).get("seed"), "head": manifest.get("chain", {}).get("head")}
    return [f"{path}: the manifest's {name} is not what the export log recorded" for name in recorded
            if recorded[name] != stated[name]]


def _check_rows(services: Services, path: Path, manifest: dict[str, Any]) -> list[str]:
    fmt = FORMATS.get(manifest.get("format", ""))
    if fmt is None:
        return [f"{path}: unknown format {manifest.get('format')!r} in the manifest"]
    encoder = fmt()
    columns = manifest.get("columns", [])
    previous = manifest.get("chain", {}).get("seed", "")
    expected = _ledger_rows(services, manifest) if manifest.get("kind") == "ledger" else None
    problems: list[str] = []
    count, net = 0, 0
    try:
        with open(path, "rb") as stream:
            for row in encoder.read(stream, columns):
                count += 1
                where = f"{path}: row {row.number}" + (f" (position {row.values.get('position')})"
                                                       if "position" in row.values else "")
                if len(row.chain) != 64 or link(previous, row.content) != row.chain:
                    problems.append(f"{where}: its hash-chain link does not follow from the row before — "
                                    "this row (or the link before it) was changed")
                previous = row.chain
                if expected is not None:
                    net += _int(row.values.get("amount_nanocredits"))
                    problems += expected.compare(where, row, encoder)
                if len(problems) >= MAX_ROW_PROBLEMS:
                    problems.append(f"{path}: stopped after {MAX_ROW_PROBLEMS} problems")
                    return problems
    except FormatError as exc:
        return problems + [f"{path}: {exc}"]
    except OSError as exc:
        return problems + [f"{path}: cannot read the file: {exc.strerror}"]
    if count != manifest.get("rows"):
        problems.append(f"{path}: {count} rows, but the manifest says {manifest.get('rows')}")
    if previous != manifest.get("chain", {}).get("head"):
        problems.append(f"{path}: the chain ends at {previous[:12]}…, not at the manifest's head")
    if expected is not None:
        leftover = expected.leftover()
        if leftover is not None:
            problems.append(f"{path}: the ledger has a movement at position {leftover['position']} in the exported "
                            "range that the file lacks")
        if net != manifest.get("totals", {}).get("net"):
            problems.append(f"{path}: the rows sum to {net} nanocredits, but the manifest's net is "
                            f"{manifest.get('totals', {}).get('net')}")
    return problems


def _ledger_rows(services: Services, manifest: dict[str, Any]) -> _LedgerRows:
    events = manifest.get("events", {})
    first, last = events.get("first_position"), events.get("last_position")
    if first is None or last is None:
        return _LedgerRows(iter(()))
    services.read_models.runner.catch_up()
    return _LedgerRows(ledger_rows(services.read_models.ledger, int(first), int(last) + 1))


class _LedgerRows:
    """The ledger's rows of the exported range, matched to the file's rows by position."""

    def __init__(self, rows: Any) -> None:
        self._rows = rows
        self._next = next(rows, None)

    def compare(self, where: str, row: Any, encoder: Any) -> list[str]:
        position = _int(row.values.get("position"))
        problems = []
        while self._next is not None and self._next["position"] < position:
            problems.append(f"{where}: the ledger's movement at position {self._next['position']} is missing before it")
            self._next = next(self._rows, None)
        truth = self._next
        if truth is None or truth["position"] != position:
            return problems + [f"{where}: the ledger has no movement at this position"]
        self._next = next(self._rows, None)
        if encoder.content(truth) == row.content:
            return problems
        differing = [name for name, value in truth.items() if _text(value) != _text(row.values.get(name))]
        return problems + [f"{where}: {', '.join(differing) or 'its encoding'} differ(s) from the ledger "
                           f"(ledger: {', '.join(f'{name}={truth[name]}' for name in differing)})"]

    def leftover(self) -> dict[str, Any] | None:
        return self._next


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
