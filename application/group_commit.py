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
  alone with the ordinary optimistic retry, so no command is lost or applied twice;
- the writer keeps the accounts it saved for its next batches instead of reading and
  copying them again, but uses a kept account only after the store confirms it holds no
  newer event of it (one indexed read): a command never decides — a 402, "nothing to
  release" — on state another process or a one-by-one redo has moved past.
"""

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from application.hold_gate import HoldGate

log = logging.getLogger("tallyhub.group_commit")
Change = Callable[[Any], Sequence[Aggregate] | None]
KEPT_ACCOUNTS = 10_000  # accounts kept between batches (all forgotten when it would be passed)


@dataclass
class _Command:
    account_id: UUID
    change: Change
    waiter: threading.Event | None = None  # set when finished, for a thread waiting on it
    finished: bool = False
    result: bool = False
    error: BaseException | None = None
    answer: Callable[["_Command"], None] | None = None  # called on the writer thread once finished

    def finish(self, result: bool = False, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self.finished = True
        if self.waiter is not None:
            self.waiter.set()
        if self.answer is not None:
            self.answer(self)


class _BatchSpoiled(Exception):
    """A command failed after it had already changed the account: redo the batch one by one."""


class AccountWriter:
    def __init__(self, load: Callable[[UUID], Any], save: Callable[..., Any],
                 change_alone: Callable[[UUID, Change], bool], *, max_batch: int = 512,
                 latest_version: Callable[[UUID], int | None] | None = None,
                 gate: HoldGate | None = None) -> None:
        self._load, self._save, self._change_alone = load, save, change_alone
        self._latest_version = latest_version  # None: never keep accounts
        self._gate = gate  # told what each saved batch left of its accounts
        self._queue: queue.SimpleQueue[_Command | None] = queue.SimpleQueue()
        self._max_batch = max_batch
        self._kept: dict[UUID, Any] = {}  # accounts as this writer last saved them
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
        waiter = threading.Event()
        command = _Command(account_id, change, waiter=waiter)
        self._queue.put(command)
        waiter.wait()
        if command.error is not None:
            raise command.error
        return command.result

    def submit_async(self, account_id: UUID, change: Change) -> "asyncio.Future[bool]":
        """``submit`` for the event loop: the future resolves once the change is durable
        (or fails with its error), without a thread waiting for it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()

        def answer(command: _Command) -> None:
            try:
                loop.call_soon_threadsafe(_resolve, future, command)
            except RuntimeError:  # the loop is closed (shutdown): nobody is left to answer
                log.warning("an account change finished after its event loop closed")

        self._queue.put(_Command(account_id, change, answer=answer))
        return future

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
                    if not command.finished:
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
            self._forget(accounts)
            self._one_by_one(batch)
            return
        if not applied:
            self._forget(accounts)  # their changes were undone by errors: read them afresh
            return
        try:
            self._save(*accounts.values(), *others)
        except IntegrityError:
            self._forget(accounts)
            self._one_by_one(applied)
            return
        if self._gate is not None:
            self._gate.saved(accounts.values())
        if self._latest_version is not None:
            if len(self._kept) + len(accounts) > KEPT_ACCOUNTS:
                self._kept.clear()
            self._kept.update(accounts)
        for command in applied:
            command.finish(True)

    def _forget(self, accounts: dict[UUID, Any]) -> None:
        for account_id in accounts:
            self._kept.pop(account_id, None)
        if self._gate is not None:
            self._gate.forget(accounts)

    def _apply(self, command: _Command, accounts: dict[UUID, Any], others: list[Aggregate]) -> bool:
        """Apply one command to the batch's state; False when it is already answered."""
        try:
            account = accounts.get(command.account_id)
            if account is None:
                account = self._kept.pop(command.account_id, None)
                if account is None or account.pending_events or self._latest_version is None \
                        or self._latest_version(command.account_id) != account.version:
                    account = self._load(command.account_id)
                accounts[command.account_id] = account
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
            if command.finished:
                continue
            try:
                command.finish(self._change_alone(command.account_id, command.change))
            except BaseException as exc:
                command.finish(error=exc)


def _resolve(future: "asyncio.Future[bool]", command: _Command) -> None:
    if future.done():
        return  # its caller stopped waiting (cancelled): the change happened all the same
    if command.error is not None:
        future.set_exception(command.error)
    else:
        future.set_result(command.result)
