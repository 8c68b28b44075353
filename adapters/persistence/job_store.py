"""Background job rows (application/jobs.py): ``background_jobs``, in the same database as
the event store (SQLite in embedded mode, the deployment's schema on PostgreSQL), or in
memory for the in-memory event store.

Invariants kept here:
- a claim is one UPDATE that changes the row only while it is ``queued``, or ``running``
  under a lease that ended with fewer than the allowed claims (PostgreSQL re-checks the
  condition after a concurrent claim commits; SQLite's write lock orders them), so two
  runners never hold one job; a renewal and an outcome are written only under the
  claim's token;
- the table is created by ``tallyhub init`` or by the first job submitted (a read of a
  store without it finds nothing and creates nothing); PostgreSQL creates it under a
  transaction-scoped advisory lock (adapters/persistence/side_tables.py);
- parameters, results and errors are JSON text; no secret is ever in them (an export's or
  a replay's parameters and answers hold none).
"""

import json
import threading
from dataclasses import replace
from typing import Any
from weakref import WeakKeyDictionary

from adapters.persistence.side_tables import PostgresSideTable, SideTable, SqliteSideTable, side_rows_for
from application.jobs import FAILED, QUEUED, RUNNING, Doc, Job, JobRows

TABLE = "background_jobs"
COLUMNS = "job_id, kind, params, actor, status, attempts, created_at, started_at, finished_at, result, error"
_FIELDS = [name.strip() for name in COLUMNS.split(",")]
_JSON_FIELDS = ("params", "result", "error")
_IN_MEMORY: "WeakKeyDictionary[Any, JobRows]" = WeakKeyDictionary()

# the claimable condition, shared by claim and claimable ({p}: the driver's placeholder)
_CLAIMABLE = "(status = 'queued' OR (status = 'running' AND claimed_until <= {p}))"
_CLAIM = (
    "UPDATE {table} SET status = 'running', attempts = attempts + 1, started_at = {p}, claim_token = {p}, "
    "claimed_until = {p} WHERE job_id = {p} AND attempts < {p} AND " + _CLAIMABLE + " RETURNING " + COLUMNS
)
_RENEW = "UPDATE {table} SET claimed_until = {p} WHERE job_id = {p} AND status = 'running' AND claim_token = {p}"
_FINISH = (
    "UPDATE {table} SET status = {p}, finished_at = {p}, result = {p}, error = {p}, claim_token = NULL, "
    "claimed_until = 0 WHERE job_id = {p} AND status = 'running' AND claim_token = {p}"
)
_ABANDON = (
    "UPDATE {table} SET status = 'failed', finished_at = {p}, error = {p}, claim_token = NULL, claimed_until = 0 "
    "WHERE status = 'running' AND claimed_until <= {p} AND attempts >= {p}"
)
_INSERT = f"INSERT INTO {{table}} ({COLUMNS}) VALUES ({', '.join('{p}' for _ in _FIELDS)})"


def job_rows_for(recorder: Any) -> JobRows:
    """The rows beside ``recorder``'s events: same database, same connections."""
    return side_rows_for(recorder, SqliteJobRows, PostgresJobRows, InMemoryJobRows, _IN_MEMORY)


def _text(value: Doc) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True)


def _values(job: Job) -> tuple[Any, ...]:
    return tuple(_text(getattr(job, name)) if name in _JSON_FIELDS else getattr(job, name) for name in _FIELDS)


def _job(found: Any) -> Job:
    """A row read by column name (SQLite's ``sqlite3.Row``, PostgreSQL's dict row)."""
    values = {name: found[name] for name in _FIELDS}
    for name in _JSON_FIELDS:
        if values[name] is not None:
            values[name] = json.loads(values[name])
    for name in ("created_at", "started_at", "finished_at"):
        if values[name] is not None:
            values[name] = float(values[name])
    values["attempts"] = int(values["attempts"])
    return Job(**values)


class InMemoryJobRows:
    """For the in-memory event store: rows in a dict, gone with the process (as its events are)."""

    def __init__(self) -> None:
        self._rows: dict[str, Job] = {}
        self._claims: dict[str, tuple[str | None, float]] = {}  # job id -> (token, claimed until)
        self._lock = threading.Lock()

    def create_table(self) -> None:
        pass

    def add(self, job: Job) -> None:
        with self._lock:
            self._rows[job.job_id] = job

    def _claimable(self, job: Job, now: float) -> bool:
        return job.status == QUEUED or (job.status == RUNNING and self._claims.get(job.job_id, (None, 0.0))[1] <= now)

    def _holds(self, job_id: str, token: str) -> bool:
        job = self._rows.get(job_id)
        return job is not None and job.status == RUNNING and self._claims.get(job_id, (None, 0.0))[0] == token

    def claim(self, job_id: str, *, now: float, token: str, lease_until: float, max_attempts: int) -> Job | None:
        with self._lock:
            job = self._rows.get(job_id)
            if job is None or job.attempts >= max_attempts or not self._claimable(job, now):
                return None
            job = self._rows[job_id] = replace(job, status=RUNNING, attempts=job.attempts + 1, started_at=now)
            self._claims[job_id] = (token, lease_until)
            return job

    def renew(self, job_id: str, token: str, lease_until: float) -> bool:
        with self._lock:
            if not self._holds(job_id, token):
                return False
            self._claims[job_id] = (token, lease_until)
            return True

    def finish(self, job_id: str, token: str, *, status: str, finished_at: float, result: Doc, error: Doc) -> bool:
        with self._lock:
            if not self._holds(job_id, token):
                return False
            self._claims.pop(job_id)
            self._rows[job_id] = replace(
                self._rows[job_id], status=status, finished_at=finished_at, result=result, error=error
            )
            return True

    def abandon(self, *, now: float, max_attempts: int, error: dict[str, Any]) -> int:
        with self._lock:
            ended = [
                job
                for job in self._rows.values()
                if job.status == RUNNING and job.attempts >= max_attempts and self._claimable(job, now)
            ]
            for job in ended:
                self._claims.pop(job.job_id, None)
                self._rows[job.job_id] = replace(job, status=FAILED, finished_at=now, error=error)
            return len(ended)

    def get(self, job_id: str) -> Job | None:
        return self._rows.get(job_id)

    def list_jobs(self, *, status: str | None = None, limit: int = 100) -> list[Job]:
        rows = [job for job in self._rows.values() if status is None or job.status == status]
        return sorted(rows, key=lambda job: (job.created_at, job.job_id), reverse=True)[:limit]

    def claimable(self, *, now: float, limit: int) -> list[str]:
        with self._lock:
            rows = sorted(self._rows.values(), key=lambda job: (job.created_at, job.job_id))
            return [job.job_id for job in rows if self._claimable(job, now)][:limit]


class _SqlJobRows(SideTable):
    """The rows in SQLite or PostgreSQL: each statement written once (adapters/persistence/side_tables.py)."""

    name = TABLE
    indexes = (("status", "status, created_at"),)

    def _changed(self, statement: str, parameters: tuple[Any, ...]) -> int:
        if not self._exists():
            return 0
        with self.datastore.transaction(commit=True) as c:
            c.execute(self._sql(statement), parameters)
            return self._changes(c)

    def add(self, job: Job) -> None:
        self._ensure()
        with self.datastore.transaction(commit=True) as c:
            c.execute(self._sql(_INSERT), _values(job))

    def claim(self, job_id: str, *, now: float, token: str, lease_until: float, max_attempts: int) -> Job | None:
        if not self._exists():
            return None
        with self.datastore.transaction(commit=True) as c:
            c.execute(self._sql(_CLAIM), (now, token, lease_until, job_id, max_attempts, now))
            found = c.fetchone()
            return None if found is None else _job(found)

    def renew(self, job_id: str, token: str, lease_until: float) -> bool:
        return self._changed(_RENEW, (lease_until, job_id, token)) == 1

    def finish(self, job_id: str, token: str, *, status: str, finished_at: float, result: Doc, error: Doc) -> bool:
        parameters = (status, finished_at, _text(result), _text(error), job_id, token)
        return self._changed(_FINISH, parameters) == 1

    def abandon(self, *, now: float, max_attempts: int, error: dict[str, Any]) -> int:
        return self._changed(_ABANDON, (now, _text(error), now, max_attempts))

    def get(self, job_id: str) -> Job | None:
        if not self._exists():
            return None
        with self.datastore.transaction(commit=False) as c:
            c.execute(self._sql(f"SELECT {COLUMNS} FROM {{table}} WHERE job_id = {{p}}"), (job_id,))
            found = c.fetchone()
            return None if found is None else _job(found)

    def list_jobs(self, *, status: str | None = None, limit: int = 100) -> list[Job]:
        if not self._exists():
            return []
        where, parameters = ("WHERE status = {p}", (status,)) if status is not None else ("", ())
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                self._sql(f"SELECT {COLUMNS} FROM {{table}} {where} ORDER BY created_at DESC, job_id DESC LIMIT {{p}}"),
                (*parameters, limit),
            )
            return [_job(found) for found in c.fetchall()]

    def claimable(self, *, now: float, limit: int) -> list[str]:
        if not self._exists():
            return []
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                self._sql(f"SELECT job_id FROM {{table}} WHERE {_CLAIMABLE} ORDER BY created_at, job_id LIMIT {{p}}"),
                (now, limit),
            )
            return [str(found["job_id"]) for found in c.fetchall()]


class SqliteJobRows(_SqlJobRows, SqliteSideTable):
    definition = (
        "job_id TEXT PRIMARY KEY, kind TEXT NOT NULL, "
        "params TEXT NOT NULL, actor TEXT, status TEXT NOT NULL, attempts INTEGER NOT NULL, "
        "created_at REAL NOT NULL, started_at REAL, finished_at REAL, result TEXT, error TEXT, "
        "claim_token TEXT, claimed_until REAL NOT NULL DEFAULT 0"
    )


class PostgresJobRows(_SqlJobRows, PostgresSideTable):
    definition = (
        "job_id text PRIMARY KEY, kind text NOT NULL, "
        "params text NOT NULL, actor text, status text NOT NULL, attempts integer NOT NULL, "
        "created_at double precision NOT NULL, started_at double precision, "
        "finished_at double precision, result text, error text, claim_token text, "
        "claimed_until double precision NOT NULL DEFAULT 0"
    )


__all__ = ["InMemoryJobRows", "PostgresJobRows", "SqliteJobRows", "job_rows_for"]
