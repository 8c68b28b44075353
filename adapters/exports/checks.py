"""Checking an export file against its manifest, its hash chain, the ledger's export
log and (for ledger exports) the ledger-entries read model. Used by ``tallyhub verify``.

Every problem names where it is: the file, or ``row N`` (1-based, header excluded) and
for ledger rows the event position. A row whose bytes were edited breaks its own link
(and only its own: each row is checked against the link stored in the row before it);
a file whose every link was recomputed after an edit no longer ends at the head the
export log recorded; a ledger row whose amount or balance was changed differs from the
ledger itself.

Links are recomputed from the bytes as written, so exports of every layout (formats.py)
verify; ledger rows are compared with the ledger in their manifest's layout. A manifest
that is not what an export writes (not an object, a seed that is not 64 hex digits, a
number that is not an integer) is a problem named as such, never a crash; numbers in
the rows are read exactly, however large.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from adapters.exports.datasets import LEDGER_TEXT, account_names, ledger_rows
from adapters.exports.exporter import manifest_path
from adapters.exports.formats import FORMATS, LAYOUTS, CsvFormat, FormatError, exact_json, link, unescaped
from adapters.services import Services
from domain import ids
from domain.export_log import ExportLog

MAX_ROW_PROBLEMS = 20
_NO_POSITION = 2**63 - 1  # positions are 64-bit in every store


def check_export(services: Services, path: Path) -> list[str]:
    """The problems of the export at ``path`` (empty when it verifies)."""
    path = Path(path)
    problems: list[str] = []
    try:
        manifest = exact_json(manifest_path(path).read_bytes())
    except OSError as exc:
        return [f"{path}: cannot read its manifest {manifest_path(path).name}: {exc.strerror}"]
    except (ValueError, RecursionError):
        return [f"{path}: its manifest is not JSON"]
    shape = _manifest_shape(manifest)
    if shape:
        return [f"{path}: its manifest {shape}"]
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
    export_id = manifest.get("export_id")
    entry = log.find(export_id) if isinstance(log, ExportLog) and isinstance(export_id, str) else None
    if entry is None:
        return [f"{path}: export {manifest.get('export_id')} is not in the ledger's {kind} export log"]
    recorded = {
        "sha256": entry["sha256"],
        "rows": entry["rows"],
        "seed": entry["chain_seed"],
        "head": entry["chain_head"],
    }
    stated = {
        "sha256": manifest.get("sha256"),
        "rows": manifest.get("rows"),
        "seed": manifest.get("chain", {}).get("seed"),
        "head": manifest.get("chain", {}).get("head"),
    }
    return [
        f"{path}: the manifest's {name} is not what the export log recorded"
        for name in recorded
        if recorded[name] != stated[name]
    ]


def _check_rows(services: Services, path: Path, manifest: dict[str, Any]) -> list[str]:
    format_name = manifest.get("format")
    fmt = FORMATS.get(format_name) if isinstance(format_name, str) else None
    if fmt is None:
        return [f"{path}: unknown format {manifest.get('format')!r} in the manifest"]
    layout = manifest.get("layout", 1)
    ledger = manifest.get("kind") == "ledger"
    encoder = fmt(LEDGER_TEXT if ledger and layout >= 2 else ())
    columns = manifest.get("columns", [])
    previous = manifest.get("chain", {}).get("seed", "")
    expected = _ledger_rows(services, manifest, layout) if ledger else None
    problems: list[str] = []
    count, net = 0, 0
    try:
        with open(path, "rb") as stream:
            for row in encoder.read(stream, columns):
                count += 1
                where = f"{path}: row {row.number}" + (
                    f" (position {row.values.get('position')})" if "position" in row.values else ""
                )
                if len(row.chain) != 64 or link(previous, row.content) != row.chain:
                    problems.append(
                        f"{where}: its hash-chain link does not follow from the row before — "
                        "this row (or the link before it) was changed"
                    )
                previous = row.chain
                if expected is not None:
                    net += _int(row.values.get("amount_nanocredits"))
                    problems += expected.compare(where, row, encoder, layout)
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
            problems.append(
                f"{path}: the ledger has a movement at position {leftover['position']} in the exported "
                "range that the file lacks"
            )
        if net != manifest.get("totals", {}).get("net"):
            problems.append(
                f"{path}: the rows sum to {net} nanocredits, but the manifest's net is "
                f"{manifest.get('totals', {}).get('net')}"
            )
    return problems


def _manifest_shape(manifest: Any) -> str | None:
    """What makes ``manifest`` something no export wrote (None when it has an export's shape)."""
    if not isinstance(manifest, dict):
        return "is not a JSON object"
    for name in ("chain", "events", "totals"):
        if not isinstance(manifest.get(name, {}), dict):
            return f"has a {name!r} that is not an object"
    columns = manifest.get("columns", [])
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        return "has columns that are not a list of names"
    for name in ("seed", "head"):
        link_ = manifest.get("chain", {}).get(name)
        if not (isinstance(link_, str) and len(link_) == 64 and all(c in "0123456789abcdef" for c in link_)):
            return f"has a chain {name} that is not 64 hex digits"
    if not _is_int(manifest.get("rows")):
        return "has a row count that is not a whole number"
    if manifest.get("totals", {}).get("net") is not None and not _is_int(manifest["totals"]["net"]):
        return "has a net total that is not a whole number"
    events = manifest.get("events", {})
    for name in ("first_position", "last_position"):
        if events.get(name) is not None and not (_is_int(events[name]) and 0 <= events[name] < _NO_POSITION):
            return f"has an events.{name} that is not an event position"
    layout = manifest.get("layout", 1)
    if not _is_int(layout) or layout not in LAYOUTS:
        return f"names layout {layout!r}, not one of {', '.join(map(str, LAYOUTS))}"
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _ledger_rows(services: Services, manifest: dict[str, Any], layout: int) -> _LedgerRows:
    events = manifest.get("events", {})
    first, last = events.get("first_position"), events.get("last_position")
    if first is None or last is None:
        return _LedgerRows(iter(()))
    services.read_models.runner.catch_up()
    names = account_names(services.read_models) if layout >= 2 else None
    return _LedgerRows(ledger_rows(services.read_models.ledger, first, last + 1, names, layout=layout))


class _LedgerRows:
    """The ledger's rows of the exported range, matched to the file's rows by position."""

    def __init__(self, rows: Any) -> None:
        self._rows = rows
        self._next = next(rows, None)

    def compare(self, where: str, row: Any, encoder: Any, layout: int) -> list[str]:
        position = _int(row.values.get("position"))
        problems: list[str] = []
        while self._next is not None and self._next["position"] < position:
            if len(problems) < MAX_ROW_PROBLEMS:  # a planted huge position would name every row after it
                problems.append(
                    f"{where}: the ledger's movement at position {self._next['position']} is missing before it"
                )
            self._next = next(self._rows, None)
        truth = self._next
        if truth is None or truth["position"] != position:
            return problems + [f"{where}: the ledger has no movement at this position"]
        self._next = next(self._rows, None)
        if encoder.content(truth) == row.content:
            return problems
        escaped = isinstance(encoder, CsvFormat) and layout >= 2
        differing = [
            name
            for name, value in truth.items()
            if _text(value) != _text(_value(row.values.get(name), escaped and name in LEDGER_TEXT))
        ]
        return problems + [
            f"{where}: {', '.join(differing) or 'its encoding'} differ(s) from the ledger "
            f"(ledger: {', '.join(f'{name}={truth[name]}' for name in differing)})"
        ]

    def leftover(self) -> dict[str, Any] | None:
        return self._next


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _value(cell: Any, escaped: bool) -> Any:
    return unescaped(cell) if escaped and isinstance(cell, str) else cell


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
