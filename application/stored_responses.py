"""Stored responses (``TALLYHUB_RESPONSES_STORE=on``): what ``POST /v1/responses`` answered
with ``store: true``, and the conversation that led to it, kept so that ``GET``/``DELETE
/v1/responses/{id}`` and ``previous_response_id`` work.

This is not ledger data: a stored response is conversation content, kept apart from the
immutable event history (one row per response in the event store's database,
adapters/persistence/response_store.py), and the request's billing events are the same
whether it is stored or not.

Invariants kept here:
- a row holds nothing in plaintext but its response id, its account id and when it was
  written: the response and its conversation are sealed (AES-256-GCM envelope under the
  master key ring, application/ports.py ``KeyVault``) with the account and the response id
  bound as associated data, so a row moved to another account or id does not open;
- only the account that created a response reads, continues or deletes it: every read is
  scoped by account, and another account's response is "not found", exactly like an
  unknown one (nothing says it exists);
- a row older than the retention (``TALLYHUB_RESPONSES_RETENTION_DAYS``) is never returned,
  and is deleted by ``purge_expired`` (run by the sweeps, and at most every ``PURGE_EVERY``
  by a process that stores); a deleted row is gone from the table;
- a row whose envelope no configured master key opens (its key retired, or the row
  tampered with) is treated as gone, and the reason logged;
- master-key rotation covers the rows (application/key_management.py ``rotate_master``):
  ``reseal`` gives every row not under the newest key a fresh data key under it, and
  ``sealed_under`` tells ``secrets status`` which keys the rows still need, so a key is
  never called retirable while a stored response depends on it.
"""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID

import anyio
import orjson

from application.ports import Clock, KeyVault
from domain.errors import InvalidRequest, NotFound, SecretError

log = logging.getLogger("tallyhub.responses")
SECONDS_PER_DAY = 86_400
PURGE_EVERY = 600.0  # seconds between the purges a storing process runs itself (the sweeps run one too)
MAX_ID_LENGTH = 200
STORE_SETTING = "TALLYHUB_RESPONSES_STORE"


class ResponseNotFound(NotFound):
    """``GET``/``DELETE /v1/responses/{id}`` of a response this account cannot see."""

    code = "response_not_found"


class ResponsesStoreOff(NotFound):
    """``GET``/``DELETE /v1/responses/{id}`` while storage is off."""

    code = "responses_store_off"

    def __init__(self) -> None:
        super().__init__(
            f"this gateway does not store responses ({STORE_SETTING}=off), so there is no stored "
            f"response to read or delete; the operator can turn storage on with {STORE_SETTING}=on"
        )


class PreviousResponseNotFound(InvalidRequest):
    """A ``previous_response_id`` this account cannot continue."""

    code = "previous_response_not_found"


class PreviousResponseStoreOff(InvalidRequest):
    """A ``previous_response_id`` while storage is off."""

    code = "responses_store_off"


@dataclass(frozen=True)
class StoredRow:
    """One row of the response store: only the envelope carries content."""

    response_id: str
    account_id: UUID
    created_at: float  # seconds since the epoch
    envelope: dict[str, str] = field(repr=False)

    @property
    def kid(self) -> str:
        return self.envelope.get("kid", "")


class ResponseRows(Protocol):
    """The rows (adapters/persistence/response_store.py): in memory, SQLite or PostgreSQL."""

    def create_table(self) -> None: ...

    def add(self, row: StoredRow) -> bool:
        """Write a new row; False (and the row kept as it was) when its id has one already."""
        ...

    def get(self, response_id: str, account_id: UUID, *, not_before: float) -> StoredRow | None:
        """The account's row written at or after ``not_before``; None otherwise."""
        ...

    def delete(self, response_id: str, account_id: UUID) -> bool: ...

    def purge(self, *, before: float) -> int:
        """Delete every row written before ``before``; how many went."""
        ...

    def all(self) -> list[StoredRow]: ...

    def replace(self, row: StoredRow, envelope: dict[str, str]) -> bool:
        """Put ``envelope`` in place of ``row``'s, unless the row is gone or changed meanwhile."""
        ...


def sealing_context(account_id: UUID, response_id: str) -> bytes:
    """The associated data of a stored response's envelope: its account and its id."""
    return f"tallyhub:stored-response:{account_id}:{response_id}".encode()


@dataclass(frozen=True)
class Opened:
    response: dict[str, Any]
    items: list[dict[str, Any]]


class StoredResponses:
    """The response store as ``POST /v1/responses`` and ``/v1/responses/{id}`` use it. Its
    async methods run the database and the sealing in a worker thread."""

    def __init__(
        self,
        rows: ResponseRows,
        vault: KeyVault,
        clock: Clock,
        *,
        enabled: bool,
        retention_days: int = 30,
    ) -> None:
        if retention_days <= 0:
            raise ValueError("retention_days must be positive")
        self.rows = rows
        self.vault = vault
        self.clock = clock
        self.enabled = enabled
        self.retention_days = retention_days
        self._last_purge = float("-inf")  # time.monotonic() of this process's last purge
        self._purge_lock = threading.Lock()

    # --- what POST /v1/responses uses -------------------------------------------------

    async def items_before(self, account_id: UUID, response_id: str) -> list[dict[str, Any]]:
        """The conversation up to and including ``response_id`` (earlier inputs and outputs,
        as Responses input items, oldest first); InvalidRequest on ``previous_response_id``
        when storage is off or this account has no such response."""
        if not self.enabled:
            raise PreviousResponseStoreOff(
                f"previous_response_id needs stored responses, and this gateway does not store them "
                f"({STORE_SETTING}=off): send the whole conversation as input instead",
                param="previous_response_id",
            )
        opened = await anyio.to_thread.run_sync(self._open, account_id, response_id)
        if opened is None:
            raise PreviousResponseNotFound(
                f"no stored response {_shown(response_id)!r} to continue: it does not exist, was deleted, "
                f"or is older than the retention ({self.retention_days} days)",
                param="previous_response_id",
            )
        return opened.items

    async def keep(self, account_id: UUID, response: dict[str, Any], items: list[dict[str, Any]]) -> None:
        """Store ``response`` (as answered; its ``id`` is ``resp_…``) with the whole conversation
        ``items``. Nothing happens when storage is off."""
        if not self.enabled:
            return
        await anyio.to_thread.run_sync(self.keep_now, account_id, response, items)

    # --- what /v1/responses/{id} uses ---------------------------------------------------

    async def get(self, account_id: UUID, response_id: str) -> dict[str, Any] | None:
        if not self.enabled:
            return None
        opened = await anyio.to_thread.run_sync(self._open, account_id, response_id)
        return opened.response if opened is not None else None

    async def input_items(self, account_id: UUID, response_id: str) -> list[dict[str, Any]] | None:
        """The items the response answered (the conversation without its own output), oldest first."""
        if not self.enabled:
            return None
        opened = await anyio.to_thread.run_sync(self._open, account_id, response_id)
        return input_items_of(opened.response, opened.items) if opened is not None else None

    async def delete(self, account_id: UUID, response_id: str) -> bool:
        if not self.enabled or not _valid_id(response_id):
            return False
        return await anyio.to_thread.run_sync(self.rows.delete, response_id, account_id)

    # --- synchronous work (worker threads, the sweeps) ----------------------------------

    def keep_now(self, account_id: UUID, response: dict[str, Any], items: list[dict[str, Any]]) -> None:
        response_id = response.get("id")
        if not isinstance(response_id, str) or not _valid_id(response_id):
            raise ValueError(f"a stored response needs an id of 1 to {MAX_ID_LENGTH} characters")
        plaintext = orjson.dumps({"response": response, "items": items})
        envelope = self.vault.seal(plaintext, context=sealing_context(account_id, response_id))
        row = StoredRow(response_id, account_id, self.clock.now().timestamp(), envelope)
        if not self.rows.add(row):
            log.warning("response %s was stored already; the first one is kept", _shown(response_id))
        self.purge_if_due()

    def purge_expired(self) -> int:
        """Delete every row older than the retention; how many went."""
        self._last_purge = time.monotonic()
        purged = self.rows.purge(before=self._oldest_kept())
        if purged:
            log.info("purged %d stored response(s) older than %d days", purged, self.retention_days)
        return purged

    def purge_if_due(self) -> int:
        """``purge_expired`` unless this process ran one in the last ``PURGE_EVERY`` seconds
        (the sweeps call it at each sweep, a storing request after each write). Never raises:
        a failed purge is logged, and the next one retries."""
        if time.monotonic() - self._last_purge < PURGE_EVERY or not self._purge_lock.acquire(blocking=False):
            return 0
        try:
            return self.purge_expired()
        except Exception:  # a failed purge must not fail a request or a sweep
            log.exception("purging expired stored responses failed")
            return 0
        finally:
            self._purge_lock.release()

    # --- master-key rotation (application/key_management.py) ----------------------------

    def sealed_under(self) -> dict[str, int]:
        """How many rows each master key (by the kid its envelope names) sealed, whether
        storage is on or not: rows written while it was on stay until purged or deleted."""
        counts: dict[str, int] = {}
        for row in self.rows.all():
            counts[row.kid] = counts.get(row.kid, 0) + 1
        return counts

    def reseal(self, is_newest: Callable[[str], bool]) -> tuple[int, int]:
        """Re-encrypt every row whose kid ``is_newest`` refuses with a fresh data key under the
        vault's newest master key, opening it in full first. Returns (resealed, unreadable): a
        row no configured key opens is left as it is (it is already treated as gone) and logged."""
        resealed = unreadable = 0
        for row in self.rows.all():
            if is_newest(row.kid):
                continue
            context = sealing_context(row.account_id, row.response_id)
            try:
                plaintext = self.vault.open(row.envelope, context=context)
            except SecretError as error:
                unreadable += 1
                log.warning("stored response %s cannot be opened, left as it is: %s", _shown(row.response_id), error)
                continue
            if self.rows.replace(row, self.vault.seal(plaintext, context=context)):
                resealed += 1
        return resealed, unreadable

    def _oldest_kept(self) -> float:
        return self.clock.now().timestamp() - self.retention_days * SECONDS_PER_DAY

    def _open(self, account_id: UUID, response_id: str) -> Opened | None:
        if not _valid_id(response_id):
            return None
        row = self.rows.get(response_id, account_id, not_before=self._oldest_kept())
        if row is None or row.account_id != account_id:
            return None
        try:
            plaintext = self.vault.open(row.envelope, context=sealing_context(account_id, response_id))
            stored = orjson.loads(plaintext)
        except SecretError as error:
            log.warning("stored response %s cannot be opened, treated as gone: %s", _shown(response_id), error)
            return None
        return Opened(response=stored["response"], items=stored["items"])


def input_items_of(response: dict[str, Any], items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``items`` without the response's own output at their end: the output items are found by
    their ids when they carry them, else by their number (an assistant message or a call is
    output; a user, system or developer message or a call's output is input)."""
    output = response.get("output")
    outputs: list[Any] = output if isinstance(output, list) else []
    count = len(outputs)
    ids = {item.get("id") for item in outputs if isinstance(item, dict)} - {None}
    end = len(items)
    while end > 0 and len(items) - end < count and _is_output(items[end - 1], ids):
        end -= 1
    return items[:end]


def _is_output(item: dict[str, Any], output_ids: set[Any]) -> bool:
    if not isinstance(item, dict):
        return False
    if output_ids and item.get("id") is not None:
        return item["id"] in output_ids
    if item.get("role") in ("user", "system", "developer"):
        return False
    kind = item.get("type")
    return not (isinstance(kind, str) and kind.endswith("_output"))


def _valid_id(response_id: object) -> bool:
    return isinstance(response_id, str) and 0 < len(response_id) <= MAX_ID_LENGTH


def _shown(response_id: str) -> str:
    return response_id[:MAX_ID_LENGTH]


__all__ = [
    "PreviousResponseNotFound",
    "PreviousResponseStoreOff",
    "ResponseNotFound",
    "ResponseRows",
    "ResponsesStoreOff",
    "StoredResponses",
    "StoredRow",
    "input_items_of",
    "sealing_context",
]
