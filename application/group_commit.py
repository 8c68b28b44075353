"""Group commit of account changes: one writer thread per process applies queued
account commands one after another to in-memory account state and saves the events
of a whole batch — many requests' holds and settlements — in one transaction.

Invariants:
- every command sees the state its predecessors in the batch left (one writer, in
  order), so the account's guards (no overdraft, one settlement per hold) hold as if
  the commands had been saved one by one;
- a caller is answered only after its events are durable (or with its own error,
  which moved nothing);
- when the store refuses the batch (another process wrote one of its accounts first,
  or a record already exists), nothing of it was saved, and each command is re-run
  alone with the ordinary optimistic retry, so no command is lost or applied twice.
"""

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

log = logging.getLogger("tallyhub.group_commit")
Change = Callable[[Any], Sequence[Aggregate] | None]


@dataclass
class _Command:
    account_id: UUID
    change: Change
    done: threading.Event = field(default_factory=threading.Event)
    result: bool = False
    error: BaseException | None = None

    def finish(self, result: bool = False, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self.done.set()


class _BatchSpoiled(Exception):
    """A command failed after it had already changed the account: redo the batch one by one."""


class AccountWriter:
    def __init__(self, load: Callable[[UUID], Any], save: Callable[..., Any],
                 change_alone: Callable[[UUID, Change], bool], *, max_batch: int = 512) -> None:
        self._load, self._save, self._change_alone = load, save, change_alone
        self._queue: queue.SimpleQueue[_Command | None] = queue.SimpleQueue()
        self._max_batch = max_batch
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.commands = 0

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tallyhub-account-writer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10)
            self._thread = None

    def submit(self, account_id: UUID, change: Change) -> bool:
        """Run ``change`` in the next batch; returns once it is durable (or raises its error)."""
        command = _Command(account_id, change)
        self._queue.put(command)
        command.done.wait()
        if command.error is not None:
            raise command.error
        return command.result

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    command = self._queue.get_nowait()
                except queue.Empty:
                    break
                if command is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(command)
            self.batches += 1
            self.commands += len(batch)
            try:
                self._commit(batch)
            except BaseException as exc:  # never leave a caller waiting
                log.exception("group commit failed")
                for command in batch:
                    if not command.done.is_set():
                        command.finish(error=exc)

    def _commit(self, batch: list[_Command]) -> None:
        accounts: dict[UUID, Any] = {}
        others: list[Aggregate] = []
        applied: list[_Command] = []
        try:
            for command in batch:
                if self._apply(command, accounts, others):
                    applied.append(command)
        except _BatchSpoiled:
            self._one_by_one(batch)
            return
        if not applied:
            return
        try:
            self._save(*accounts.values(), *others)
        except IntegrityError:
            self._one_by_one(applied)
            return
        for command in applied:
            command.finish(True)

    def _apply(self, command: _Command, accounts: dict[UUID, Any], others: list[Aggregate]) -> bool:
        """Apply one command to the batch's state; False when it is already answered."""
        try:
            account = accounts.get(command.account_id)
            if account is None:
                account = accounts[command.account_id] = self._load(command.account_id)
        except BaseException as exc:
            command.finish(error=exc)
            return False
        pending = len(account.pending_events)
        try:
            out = command.change(account)
        except BaseException as exc:
            if len(account.pending_events) != pending:
                raise _BatchSpoiled() from exc
            command.finish(error=exc)
            return False
        if out is None:
            command.finish(False)
            return False
        others.extend(out)
        return True

    def _one_by_one(self, commands: list[_Command]) -> None:
        for command in commands:
            if command.done.is_set():
                continue
            try:
                command.finish(self._change_alone(command.account_id, command.change))
            except BaseException as exc:
                command.finish(error=exc)
