"""The exports of one kind (ledger, usage or requests), each linked to the one before.

Every row of an export file carries a link of a SHA-256 hash chain that starts at the
previous export's last link (``head``); the log records each export's digest, row count
and last link. Invariants kept here:
- entries are appended, never edited, and an export's ``chain_seed`` is the ``head`` of
  the log when it is recorded, so the exports of a kind form one unbroken chain;
- two exports written against the same head cannot both be recorded: the second save
  collides on the log's version and is written again on the new head.
"""

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain import ids
from domain.errors import InvalidRequest

EXPORT_KINDS = ("ledger", "usage", "requests")
GENESIS = "0" * 64  # the seed of a kind's first export


class ExportLog(Aggregate):
    class Opened(Aggregate.Created):
        kind: str

    class ExportRecorded(Aggregate.Event):
        entry: dict[str, Any]

    @staticmethod
    def create_id(kind: str) -> UUID:
        return ids.export_log_id(kind)

    @event(Opened)
    def __init__(self, kind: str) -> None:
        if kind not in EXPORT_KINDS:
            raise InvalidRequest(f"no export kind {kind!r} (have: {', '.join(EXPORT_KINDS)})", param="kind")
        self.kind = kind
        self.exports: list[dict[str, Any]] = []

    @property
    def head(self) -> str:
        return self.exports[-1]["chain_head"] if self.exports else GENESIS

    def find(self, export_id: str) -> dict[str, Any] | None:
        return next((entry for entry in self.exports if entry["export_id"] == export_id), None)

    def record(
        self,
        *,
        export_id: str,
        file_format: str,
        since: datetime | None,
        until: datetime | None,
        rows: int,
        sha256: str,
        chain_seed: str,
        chain_head: str,
        first_position: int | None,
        last_position: int | None,
        as_of_position: int,
        path: str,
        at: datetime,
    ) -> None:
        if chain_seed != self.head:
            raise InvalidRequest(f"export {export_id} starts its chain at {chain_seed[:12]}…, not at the log's head")
        if self.find(export_id) is not None:
            raise InvalidRequest(f"export {export_id} is recorded already")
        self._export_recorded(
            entry={
                "export_id": export_id,
                "format": file_format,
                "from": since,
                "to": until,
                "rows": rows,
                "sha256": sha256,
                "chain_seed": chain_seed,
                "chain_head": chain_head,
                "first_position": first_position,
                "last_position": last_position,
                "as_of_position": as_of_position,
                "path": path,
                "recorded_at": at,
            }
        )

    @event(ExportRecorded)
    def _export_recorded(self, entry: dict[str, Any]) -> None:
        self.exports.append(entry)
