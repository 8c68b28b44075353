"""Group commit of account changes: one writer thread per process applies queued
account commands one after another to in-memory account state and saves the events
of a whole batch — many requests' holds and settlements — in one transaction.

Invariants:
- every command sees the state its predecessors in the batch left (one writer, in
  order), so the account's guards (no overdraft, one settlement per hold) hold as if
  the commands had been saved one by one;
- a caller is answered only once the batch it was decided in is durable, with its
  own outcome: saved, nothing to do, or its own error (which moved nothing); a
  command refused on the state a batch left is not answered unless that batch lands
  (the callers on an event loop all at once, with one wake-up of their loop per batch);
- when the store refuses the batch, nothing of it was saved. If another process wrote
  one of its accounts first, the whole batch is decided again on fresh state (at most
  ``BATCH_REDOS`` times: re-run one by one, each command would race that process's
  batches alone, and two processes on one hot account would keep refusing each other
  until a command ran out of retries); otherwise (a record already exists), and after
  the last redo, each command is re-run alone with the ordinary optimistic retry (and a
  last try fenced under the store's insert lock: application/ledger.py ``change``). Either
  way no command is lost or applied twice: a command is answered only by a save that
  landed, and every re-run starts from the store's state;
- when saving fails for a reason one command may carry (a value the store cannot
  encode or refuses), nothing of it was saved either: the batch is split in halves,
  each applied afresh and saved in order, down to the command that breaks the save,
  which alone gets the error. The commands around it are saved and answered as if it
  had never been sent; order per account is kept (halves go in batch order). Failures
  of the store itself (connection lost, a missing table) are not split: they would
  fail every part alike, and a lost connection may have committed (a retry could
  apply a change twice), so every caller of the batch gets that error;
- the writer keeps the accounts it saved for its next batches instead of reading and
  copying them again, and no command is answered on a kept account the store has moved
  past (another process or a one-by-one redo wrote a newer event): a kept account with
  events in the batch is proven fresh by its save itself (its next version is taken if
  the store moved on, and the batch is refused and redone); one without (every command on
  it refused — a 402, "nothing to release" — or did nothing) is checked with one indexed
  read before the batch is saved, and the batch is redone if it moved.
  The hot account of a busy batch thus costs no read before its save.
"""

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
)

from application.hold_gate import HoldGate

log = logging.getLogger("tallyhub.group_commit")
Change = Callable[[Any], Sequence[Aggregate] | None]
KEPT_ACCOUNTS = 10_000  # accounts kept between batches (all forgotten when it would be passed)
BATCH_REDOS = 3  # times a batch another process beat to an account is decided again whole
# Save failures of the store or its connection, not of any one command's events.
STORE_FAILURES: tuple[type[BaseException], ...] = (
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
)


@dataclass
class _Command:
    account_id: UUID
    change: Change
    waiter: threading.Event | None = None  # set when finished, for a thread waiting on it
    finished: bool = False
    result: bool = False
    error: BaseException | None = None
    future: "asyncio.Future[bool] | None" = None  # resolved on its event loop once finished (``_wake``)
    loop: asyncio.AbstractEventLoop | None = None
    woken: bool = False  # its future's resolution is handed to its loop

    def finish(self, result: bool = False, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self.finished = True
        if self.waiter is not None:
            self.waiter.set()


class _BatchSpoiled(Exception):
    """A command failed after it had already changed the account: redo the batch one by one."""


class AccountWriter:
    def __init__(
        self,
        load: Callable[[UUID], Any],
        save: Callable[..., Any],
        change_alone: Callable[[UUID, Change], bool],
        *,
        max_batch: int = 512,
        latest_version: Callable[[UUID], int | None] | None = None,
        gate: HoldGate | None = None,
    ) -> None:
        self._load, self._save, self._change_alone = load, save, change_alone
        self._latest_version = latest_version  # None: never keep accounts
        self._gate = gate  # told what each saved batch left of its accounts
        self._queue: queue.SimpleQueue[_Command | None] = queue.SimpleQueue()
        self._max_batch = max_batch
        self._kept: dict[UUID, Any] = {}  # accounts as this writer last saved them
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.commands = 0
        # told each batch's size and the seconds it took to apply and save (the metrics); never raises into the writer
        self.on_batch: Callable[[int, float], None] | None = None

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
        self._queue.put(_Command(account_id, change, future=future, loop=loop))
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
            started = time.perf_counter()
            try:
                self._commit(batch)
            except BaseException as exc:  # never leave a caller waiting
                log.exception("group commit failed")
                for command in batch:
                    if not command.finished:
                        command.finish(error=exc)
            self._wake(batch)
            if self.on_batch is not None:
                self._tell(len(batch), time.perf_counter() - started)

    def _tell(self, size: int, seconds: float) -> None:
        assert self.on_batch is not None
        try:
            self.on_batch(size, seconds)
        except Exception:  # noqa: BLE001 - a metric must never stop the writer
            self.on_batch = None  # told once in the log, not on every batch
            log.exception("the group-commit batch hook failed; it is no longer called")

    def _commit(self, batch: list[_Command], redo: int = 0) -> None:
        accounts: dict[UUID, Any] = {}
        others: list[Aggregate] = []
        outcomes: list[_Outcome] = []
        kept: set[UUID] = set()  # accounts taken as this writer last saved them, not read again
        taken: dict[UUID, int] = {}  # each account's version as the batch took it
        try:
            for command in batch:
                outcomes.append(self._apply(command, accounts, others, kept, taken))
        except _BatchSpoiled:
            self._forget(accounts)
            self._one_by_one(batch)
            return
        if self._moved_on(kept, accounts):
            self._forget(accounts)
            self._redo(batch, redo, moved=True)
            return
        if not any(outcome.saves for outcome in outcomes):
            self._forget(accounts)  # their changes were undone by errors: read them afresh
            _answer(outcomes)
            return
        try:
            self._save(*accounts.values(), *others)
        except IntegrityError:
            self._forget(accounts)
            self._redo(batch, redo, moved=self._store_moved(taken))
            return
        except Exception as exc:  # noqa: BLE001 - sorted by _split
            self._forget(accounts)  # their events were taken by the failed save: read them afresh
            self._split(batch, exc)
            return
        self._saved(accounts)
        _answer(outcomes)

    def _redo(self, batch: list[_Command], redo: int, *, moved: bool) -> None:
        """The store refused the batch, or holds newer events of an account it took. When
        another process wrote one of its accounts meanwhile (``moved``), the whole batch is decided again
        on fresh state (``BATCH_REDOS`` times at most): one by one, each command would meet that
        process's batches alone, one transaction each, and on a hot account both processes
        would keep refusing each other. Otherwise (a record already saved, or the accounts
        unchanged) each command is re-run alone, where the one at fault meets its error."""
        if moved and redo < BATCH_REDOS:
            self._commit(batch, redo + 1)
        else:
            self._one_by_one(batch)

    def _store_moved(self, taken: dict[UUID, int]) -> bool:
        """Whether the store holds a newer event of an account than the batch took; a read
        that fails counts as not moved (the redo one by one meets the failure)."""
        latest_version = self._latest_version
        if latest_version is None:
            return False
        try:
            return any(latest_version(account_id) != version for account_id, version in taken.items())
        except Exception:  # noqa: BLE001 - logged; the commands are redone one by one
            log.exception("could not read the accounts of a refused batch: redoing it one by one")
            return False

    def _split(self, batch: list[_Command], exc: Exception) -> None:
        """A save failed, and saved nothing: find the command that breaks it."""
        if len(batch) == 1 or isinstance(exc, STORE_FAILURES):
            if len(batch) > 1:
                log.error("saving a batch of %d account changes failed: %r", len(batch), exc)
            for command in batch:
                command.finish(error=exc)
            return
        log.warning("saving a batch of %d account changes failed (%r): retrying it in halves", len(batch), exc)
        half = len(batch) // 2
        self._commit(batch[:half])
        self._commit(batch[half:])

    def _saved(self, accounts: dict[UUID, Any]) -> None:
        """Bookkeeping after a durable batch; a failure here must not turn it into errors."""
        try:
            if self._gate is not None:
                self._gate.saved(accounts.values())
            if self._latest_version is not None:
                if len(self._kept) + len(accounts) > KEPT_ACCOUNTS:
                    self._kept.clear()
                self._kept.update(accounts)
        except Exception:  # noqa: BLE001 - logged; the batch is durable all the same
            log.exception("could not keep the accounts of a saved batch")
            self._forget(accounts)

    def _forget(self, accounts: dict[UUID, Any]) -> None:
        for account_id in accounts:
            self._kept.pop(account_id, None)
        if self._gate is not None:
            self._gate.forget(accounts)

    def _moved_on(self, kept: set[UUID], accounts: dict[UUID, Any]) -> bool:
        """Whether the store holds a newer event of a kept account that has nothing to save
        in this batch (one with events is checked by its save). A read that fails counts as
        moved: the batch is redone one by one, where each command meets the failure alone."""
        latest_version = self._latest_version
        if latest_version is None:
            return False
        try:
            return any(
                latest_version(account_id) != accounts[account_id].version
                for account_id in kept
                if not accounts[account_id].pending_events
            )
        except Exception:  # noqa: BLE001 - logged; the redo answers each command with its own outcome
            log.exception("could not check the kept accounts of a batch: redoing it one by one")
            return True

    def _apply(
        self,
        command: _Command,
        accounts: dict[UUID, Any],
        others: list[Aggregate],
        kept: set[UUID],
        taken: dict[UUID, int],
    ) -> "_Outcome":
        """Apply one command to the batch's state; its outcome is answered once the batch is saved."""
        try:
            account = accounts.get(command.account_id)
            if account is None:
                account = self._kept.pop(command.account_id, None)
                if account is None or account.pending_events:
                    account = self._load(command.account_id)
                else:
                    kept.add(command.account_id)
                accounts[command.account_id] = account
                taken[command.account_id] = account.version
        except BaseException as exc:
            return _Outcome(command, saves=False, error=exc)
        pending = len(account.pending_events)
        try:
            out = command.change(account)
        except BaseException as exc:
            if len(account.pending_events) != pending:
                raise _BatchSpoiled() from exc
            return _Outcome(command, saves=False, error=exc)
        if out is None:
            return _Outcome(command, saves=False)
        others.extend(out)
        return _Outcome(command, saves=True)

    def _one_by_one(self, commands: list[_Command]) -> None:
        for command in commands:
            if command.finished:
                continue
            try:
                command.finish(self._change_alone(command.account_id, command.change))
            except BaseException as exc:
                command.finish(error=exc)
            self._wake([command])  # each answered as it lands, not after the whole redo

    @staticmethod
    def _wake(commands: list[_Command]) -> None:
        """Hand the finished commands' futures to their event loops: one wake-up of each loop
        per batch (each ``call_soon_threadsafe`` writes to the loop's wake-up pipe)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[_Command]] = {}
        for command in commands:
            if command.loop is not None and command.finished and not command.woken:
                command.woken = True
                by_loop.setdefault(command.loop, []).append(command)
        for loop, finished in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve_all, finished)
            except RuntimeError:  # the loop is closed (shutdown): nobody is left to answer
                log.warning("%d account changes finished after their event loop closed", len(finished))


@dataclass
class _Outcome:
    """What a command did in a batch: ``saves`` when it has events to save; else nothing
    to do (answered False) or ``error``."""

    command: _Command
    saves: bool
    error: BaseException | None = None


def _answer(outcomes: list[_Outcome]) -> None:
    for outcome in outcomes:
        outcome.command.finish(outcome.saves, outcome.error)


def _resolve_all(commands: list[_Command]) -> None:
    for command in commands:
        future = command.future
        assert future is not None
        if future.done():
            continue  # its caller stopped waiting (cancelled): the change happened all the same
        if command.error is not None:
            future.set_exception(command.error)
        else:
            future.set_result(command.result)
