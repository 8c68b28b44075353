"""A PostgreSQL transaction sent in one write, with one Sync.

psycopg's pipeline mode hands each statement to libpq and flushes it at once: a batch of
BEGIN, eventsourcing's two lock statements, NOTIFY, INSERT and COMMIT cost the writer eight
``sendto`` calls (the Sync and a Flush request included). libpq itself keeps a pipeline's
messages in its output buffer until the Sync (or until 64 KiB wait), so here the statements
go to libpq's pipeline directly (psycopg's ``pq`` wrapper) and the Sync sends them in one
write; the results are then read back in order.

What ``run_transaction`` keeps:
- the statements run in the order given, between BEGIN and COMMIT, in one transaction; the
  server skips everything after a failing statement up to the Sync, so a failure commits
  nothing, and the failed transaction is rolled back before this returns;
- every result up to the Sync is read before anything is raised; the first failing
  statement's error is raised as psycopg raises it (``psycopg.errors``), so callers map
  errors as before (a version already taken: ``UniqueViolation``, an ``IntegrityError``);
- the connection leaves pipeline mode idle, or, if it failed part-way (lost, interrupted),
  is closed so that the pool discards it;
- the statements are prepared on each connection in the write of their first use there
  (Parse costs nothing extra then; later batches send only Bind and Execute). psycopg drops
  every prepared statement of a connection (``DEALLOCATE ALL``) after a rollback through it:
  a batch refused for a statement the server no longer knows is run once more, its
  statements prepared again.
"""

import hashlib
import select
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import errors, pq

ExecStatus = pq.ExecStatus
BINARY = pq.Format.BINARY


@dataclass(frozen=True)
class Statement:
    """One SQL statement, prepared under a name derived from its text and parameter types."""

    query: bytes
    param_types: tuple[int, ...] = ()
    name: bytes = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.blake2b(self.query + repr(self.param_types).encode(), digest_size=12).hexdigest()
        object.__setattr__(self, "name", f"tallyhub_{digest}".encode())


BEGIN = Statement(b"BEGIN")
COMMIT = Statement(b"COMMIT")

# the statements prepared on each open connection, as far as this process knows
_prepared_on: "weakref.WeakKeyDictionary[psycopg.Connection[Any], set[bytes]]" = weakref.WeakKeyDictionary()


def run_transaction(
    conn: psycopg.Connection[Any], calls: Sequence[tuple[Statement, Sequence[bytes]]]
) -> list[pq.abc.PGresult]:
    """Runs ``calls`` (each a statement and its parameters, in binary) between BEGIN and COMMIT
    in one write and one Sync; returns each call's result, in order."""
    if conn.pgconn.transaction_status != pq.TransactionStatus.IDLE:
        raise psycopg.ProgrammingError("a transaction in one write needs an idle connection")
    try:
        return _run_once(conn, calls)
    except errors.InvalidSqlStatementName:
        _prepared_on.pop(conn, None)  # dropped by a DEALLOCATE ALL since: prepare them again
        return _run_once(conn, calls)


def _run_once(
    conn: psycopg.Connection[Any], calls: Sequence[tuple[Statement, Sequence[bytes]]]
) -> list[pq.abc.PGresult]:
    pgconn = conn.pgconn
    prepared = _prepared_on.setdefault(conn, set())
    to_prepare = {statement.name: statement for statement in _statements(calls) if statement.name not in prepared}
    finished = False
    pgconn.enter_pipeline_mode()
    try:
        for statement in to_prepare.values():
            pgconn.send_prepare(statement.name, statement.query, statement.param_types or None)
        for statement, params in ((BEGIN, ()), *calls, (COMMIT, ())):
            pgconn.send_query_prepared(statement.name, params or None, [BINARY] * len(params) or None)
        pgconn.pipeline_sync()
        _flush(pgconn)
        parsed = [_result_of_one(pgconn) for _ in to_prepare]
        prepared.update(
            name for name, result in zip(to_prepare, parsed, strict=True) if result.status == ExecStatus.COMMAND_OK
        )
        results = [_result_of_one(pgconn) for _ in range(len(calls) + 2)]
        _until_sync(pgconn)
        failed = next((result for result in (*parsed, *results) if result.status == ExecStatus.FATAL_ERROR), None)
        if failed is not None and pgconn.transaction_status == pq.TransactionStatus.INERROR:
            _roll_back(pgconn)
        finished = True
    finally:
        if finished:
            pgconn.exit_pipeline_mode()
        else:  # lost or interrupted part-way: results may be pending; the pool discards a closed connection
            conn.close()
    if failed is not None:
        raise errors.error_from_result(failed, encoding=conn.info.encoding)
    return results[1:-1]


def _statements(calls: Sequence[tuple[Statement, Sequence[bytes]]]) -> list[Statement]:
    return [BEGIN, *(statement for statement, _ in calls), COMMIT]


def _roll_back(pgconn: pq.abc.PGconn) -> None:
    pgconn.send_query_params(b"ROLLBACK", None)  # not through psycopg, which would drop our statements
    pgconn.pipeline_sync()
    _flush(pgconn)
    _result_of_one(pgconn)
    _until_sync(pgconn)


def _flush(pgconn: pq.abc.PGconn) -> None:
    while pgconn.flush():  # more to send: the socket is full; read meanwhile, or the server may block on us
        if _wait(pgconn, select.POLLIN | select.POLLOUT) & select.POLLIN:
            pgconn.consume_input()


def _next_result(pgconn: pq.abc.PGconn) -> pq.abc.PGresult | None:
    while pgconn.is_busy():
        _wait(pgconn, select.POLLIN)
        pgconn.consume_input()
    return pgconn.get_result()


def _result_of_one(pgconn: pq.abc.PGconn) -> pq.abc.PGresult:
    """One pipelined command's result (its last, if several), and the None that ends it."""
    result = _next_result(pgconn)
    if result is None:
        raise psycopg.InternalError("a pipelined command without a result")
    while (more := _next_result(pgconn)) is not None:
        result = more
    return result


def _until_sync(pgconn: pq.abc.PGconn) -> None:
    result = _next_result(pgconn)
    if result is None or result.status != ExecStatus.PIPELINE_SYNC:
        raise psycopg.InternalError(f"expected the pipeline's Sync, got {result and result.status}")


def _wait(pgconn: pq.abc.PGconn, events: int) -> int:
    """Blocks (without the interpreter lock) until the connection's socket is ready."""
    poller = select.poll()
    poller.register(pgconn.socket, events)
    while not (ready := poller.poll()):
        continue
    return ready[0][1]
