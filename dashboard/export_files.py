"""The Exports page's files: the recorded exports found in ``$TALLYHUB_DATA_DIR/exports/``,
and snapshots of a window built from the read models.

Invariants kept here:
- a snapshot's rows, columns, cell encoding and hash-chain links are adapters/exports's
  own (``datasets`` picks and shapes the rows, ``formats`` encodes and links them), so for
  the same window and read-model position a snapshot's rows are byte for byte those of
  ``tallyhub export``; only the chain's seed differs;
- a snapshot is *not* recorded in the ledger's export log: its chain starts from the
  genesis seed (64 zeros), its manifest says ``"recorded": false``, has no ``export_id``
  and names the command that makes a recorded, chained export; ``tallyhub verify``
  refuses it as an export;
- a manifest's ``rows``, ``totals`` and ``sha256`` are computed from exactly the bytes
  offered for download;
- nothing here writes: recorded exports are read from their files (never the event
  store), and a snapshot lives only in memory and in the browser's download.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import streamlit as st

from adapters.exports.datasets import dataset
from adapters.exports.exporter import MANIFEST_SUFFIX, manifest_of
from adapters.exports.formats import FORMATS, ChainedRows
from adapters.settings import Settings
from dashboard.windows import Window
from domain.export_log import GENESIS

MAX_ROWS = 200_000
MAX_DOWNLOAD_BYTES = 512 * 2**20
KINDS = {
    "ledger": "Ledger: every movement, with running balances",
    "usage": "Usage: hourly rollups",
    "requests": "Request log",
}
NOT_RECORDED = (
    "A snapshot built by the dashboard from the read models. It is **not recorded** in the ledger's "
    "export log: its hash chain starts from a seed of 64 zeros instead of the previous export's last "
    "link, no later export chains onto it, and `tallyhub verify` does not vouch for it. Its columns "
    "and row encoding are those of `tallyhub export`."
)


def exports_folder(settings: Settings) -> Path:
    """Where ``POST /admin/v1/exports`` writes its exports."""
    return settings.data_dir / "exports"


@dataclass(frozen=True)
class RecordedExport:
    path: Path
    manifest: dict[str, Any]
    size: int
    modified_ns: int

    @property
    def recorded(self) -> bool:
        """Written by ``tallyhub export`` or the admin API (which record it), not a dashboard snapshot."""
        return bool(self.manifest.get("export_id")) and self.manifest.get("recorded", True) is not False

    @property
    def export_id(self) -> str:
        """The manifest's export id as the API shows it (dashed: older manifests give its hex)."""
        value = self.manifest.get("export_id")
        if not isinstance(value, str):
            return ""
        try:
            return str(UUID(value))
        except ValueError:
            return value

    @property
    def manifest_path(self) -> Path:
        return self.path.with_name(self.path.name + MANIFEST_SUFFIX)


def recorded_exports(folder: Path) -> tuple[list[RecordedExport], list[str]]:
    """Every file in ``folder`` with a manifest beside it, newest first, and what could not be read."""
    found: list[RecordedExport] = []
    problems: list[str] = []
    if not folder.is_dir():
        return found, problems
    for manifest_file in sorted(folder.glob(f"*{MANIFEST_SUFFIX}")):
        path = manifest_file.with_name(manifest_file.name[: -len(MANIFEST_SUFFIX)])
        try:
            manifest = json.loads(manifest_file.read_text())
            stat = path.stat()
        except FileNotFoundError:
            problems.append(f"{manifest_file.name}: its file {path.name} is missing")
            continue
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            problems.append(f"{manifest_file.name}: cannot be read ({error})")
            continue
        if not isinstance(manifest, dict):
            problems.append(f"{manifest_file.name}: not a manifest")
            continue
        found.append(RecordedExport(path, manifest, stat.st_size, stat.st_mtime_ns))
    found.sort(key=lambda export: (str(export.manifest.get("created_at") or ""), export.path.name), reverse=True)
    return found, problems


@st.cache_data(show_spinner="Computing the file's SHA-256…", max_entries=64)
def file_sha256(path: str, size: int, modified_ns: int) -> str:
    """The digest of the file's bytes (cached per size and modification time)."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


@dataclass(frozen=True)
class Snapshot:
    data: bytes
    manifest: dict[str, Any]
    rows_per_day: dict[date, int]

    @property
    def file_name(self) -> str:
        return str(self.manifest["file"])


def snapshot(
    kind: str,
    views: Any,
    window: Window,
    file_format: str,
    positions: dict[str, int],
    *,
    now: datetime | None = None,
    max_rows: int = MAX_ROWS,
) -> Snapshot | None:
    """The ``kind`` export of ``window`` from ``views`` (``ledger``, ``usage``, ``requests``
    read models), not recorded; None when it has more than ``max_rows`` rows."""
    rows = dataset(kind, views, window.since, window.until)
    fmt = FORMATS[file_format](rows.text_columns)
    chained = ChainedRows(fmt, GENESIS)
    data = bytearray(fmt.header(rows.columns))
    per_day: Counter[date] = Counter()
    time_column = "hour" if kind == "usage" else "at"
    for row in rows.rows():
        if chained.rows == max_rows:
            return None
        data += chained.line(row)
        per_day[datetime.fromisoformat(row[time_column]).astimezone(UTC).date()] += 1
    content = bytes(data)
    written = {"rows": chained.rows, "sha256": hashlib.sha256(content).hexdigest(), "head": chained.head}
    manifest = manifest_of(
        rows,
        export_id=None,
        file_format=file_format,
        file_name=file_name(kind, window, file_format),
        created_at=now or datetime.now(UTC),
        seed=GENESIS,
        written=written,
        previous=None,
        as_of=positions.get(rows.projection, 0),
    )
    manifest = {
        "export_id": None,
        "recorded": False,
        **manifest,
        "note": NOT_RECORDED.replace("**", ""),
        "record_with": record_command(kind, window, file_format),
    }
    return Snapshot(content, manifest, dict(per_day))


def media_type(file_format: Any) -> str | None:
    fmt = FORMATS.get(file_format) if isinstance(file_format, str) else None
    return fmt.media_type if fmt is not None else None


def record_command(kind: str, window: Window, file_format: str) -> str:
    """The command that writes the recorded, chained export of the same window."""
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    return (
        f"tallyhub export {kind} --from {window.since.strftime(stamp)} --to {window.until.strftime(stamp)} "
        f"--format {file_format} --out {kind}-{window.since:%Y%m%dT%H}-{window.until:%Y%m%dT%H}.{file_format}"
    )


def file_name(kind: str, window: Window, file_format: str) -> str:
    return f"tallyhub-{kind}-{window.since:%Y%m%dT%H}-{window.until:%Y%m%dT%H}-snapshot.{file_format}"
