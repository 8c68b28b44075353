"""Background jobs: an export or a replay's ``apply`` run off the request that asked for it,
with its state readable (``queued`` → ``running`` → ``succeeded`` with the result the
synchronous answer gives, or ``failed`` with the error it would have answered).

A job is a row beside the events (adapters/persistence/job_store.py); the row is the truth
and any queue (a dramatiq message in server mode, the in-process wake-up in embedded mode)
only says "look at it".

Invariants kept here:
- a job is run only by the runner that claimed its row: one statement moves it from
  ``queued`` (or ``running`` under a lease that ran out: its runner died) to ``running``
  under a fresh token, and its outcome is written only under that token; any number of
  runners, threads or processes run each attempt once;
- a running job's lease is renewed while it runs, so only a dead runner's job is claimed
  again; after ``max_attempts`` claims a job whose runner keeps dying ends ``failed``;
- a job runs as the admin actor who submitted it (application/acting.py), so the events it
  records name who asked, as the synchronous request's would;
- a replay applied again by a job retried after a crash posts nothing twice: the replay
  log makes ``apply`` idempotent by content (application/replay.py);
- a job's input is checked when it is submitted (bad input is refused at once, in the
  API's shape, and no job is recorded); what only the run can find fails the job.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from application.acting import acting_as, current_actor
from domain.errors import InvalidRequest, NotFound, TallyhubError

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED)
LEASE_SECONDS = 60.0  # a running job's claim; renewed every third of it while the job runs
MAX_ATTEMPTS = 3  # claims of a job whose runner keeps dying before it ends failed
MAX_LISTED = 1000
Doc = dict[str, Any] | None  # a job's result or error: a JSON document, or none

log = logging.getLogger("tallyhub.jobs")


@dataclass(frozen=True)
class Job:
    job_id: str  # the dashed UUID
    kind: str  # "export" | "replay"
    params: dict[str, Any]  # what the handler runs (JSON)
    actor: str | None  # who submitted it (application/acting.py)
    status: str
    attempts: int  # claims so far
    created_at: float  # seconds since the epoch
    started_at: float | None = None  # the latest claim
    finished_at: float | None = None
    result: dict[str, Any] | None = None  # succeeded: the synchronous answer's document
    error: dict[str, Any] | None = None  # failed: {"message", "code", "param"}


class JobRows(Protocol):
    """Job rows, claimed atomically (adapters/persistence/job_store.py)."""

    def create_table(self) -> None: ...

    def add(self, job: Job) -> None: ...

    def claim(self, job_id: str, *, now: float, token: str, lease_until: float, max_attempts: int) -> Job | None:
        """Move ``job_id`` to running under ``token`` if it is queued, or running under an
        ended lease with fewer than ``max_attempts`` claims; the claimed job, else None."""
        ...

    def renew(self, job_id: str, token: str, lease_until: float) -> bool: ...

    def finish(self, job_id: str, token: str, *, status: str, finished_at: float, result: Doc, error: Doc) -> bool:
        """Record the outcome, only while ``token`` holds the claim."""
        ...

    def abandon(self, *, now: float, max_attempts: int, error: dict[str, Any]) -> int:
        """Fail the running jobs whose lease ended after ``max_attempts`` claims; how many."""
        ...

    def get(self, job_id: str) -> Job | None: ...

    def list_jobs(self, *, status: str | None = None, limit: int = 100) -> list[Job]:
        """Newest first."""
        ...

    def claimable(self, *, now: float, limit: int) -> list[str]:
        """Queued jobs and running ones whose lease ended, oldest first."""
        ...


@dataclass(frozen=True)
class JobHandler:
    """A kind of job: ``check`` refuses bad parameters at submission (raises a TallyhubError),
    ``run`` does the work and returns the document the synchronous request answers with."""

    check: Callable[[dict[str, Any]], None]
    run: Callable[[dict[str, Any]], dict[str, Any]]


def error_of(exc: BaseException) -> dict[str, Any]:
    """What a failed job shows: a deliberate error's message, code and param as the API
    would answer them; anything else an internal error that says nothing of it (it is logged)."""
    if isinstance(exc, TallyhubError):
        return {"message": str(exc), "code": exc.code, "param": getattr(exc, "param", None)}
    return {"message": "internal error: the job failed unexpectedly", "code": "internal_error", "param": None}


class Jobs:
    """Submit, run, and read background jobs."""

    def __init__(
        self,
        rows: JobRows,
        handlers: Mapping[str, JobHandler],
        *,
        now: Callable[[], float] = time.time,
        lease_seconds: float = LEASE_SECONDS,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self.rows = rows
        self.handlers = dict(handlers)
        self.now = now
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.queued: Callable[[list[str]], None] | None = None  # the runner's wake-up, set by who runs jobs

    def submit(self, kind: str, params: dict[str, Any]) -> Job:
        """Check ``params`` and record the job, queued, as the current actor's."""
        handler = self.handlers.get(kind)
        if handler is None:
            raise InvalidRequest(f"no job kind {kind!r} (have: {', '.join(sorted(self.handlers))})", param="kind")
        handler.check(params)
        job = Job(
            job_id=str(uuid.uuid4()),
            kind=kind,
            params=params,
            actor=current_actor(),
            status=QUEUED,
            attempts=0,
            created_at=self.now(),
        )
        self.rows.add(job)
        if self.queued is not None:
            try:
                self.queued([job.job_id])
            except Exception:  # the row is the truth: a lost wake-up only waits for the next poll
                log.warning("could not wake a job runner for %s: the poll finds it", job.job_id, exc_info=True)
        return job

    def run(self, job_id: str) -> Job | None:
        """Claim ``job_id`` and run it to its end; the job as it ended, None if it was not
        claimable (done, or another runner holds it)."""
        token = uuid.uuid4().hex
        now = self.now()
        self._abandon(now)
        job = self.rows.claim(
            job_id, now=now, token=token, lease_until=now + self.lease_seconds, max_attempts=self.max_attempts
        )
        if job is None:
            return None
        result: Doc = None
        error: Doc = None
        with _Lease(self, job_id, token):
            try:
                handler = self.handlers.get(job.kind)
                if handler is None:
                    raise InvalidRequest(f"no job kind {job.kind!r} on this server")
                with acting_as(job.actor):
                    result = handler.run(job.params)
            except Exception as exc:
                error = error_of(exc)
                if not isinstance(exc, TallyhubError):
                    log.exception("job %s (%s) failed", job_id, job.kind)
        status = FAILED if error is not None else SUCCEEDED
        finished = self.rows.finish(job_id, token, status=status, finished_at=self.now(), result=result, error=error)
        if not finished:
            log.warning("job %s: the claim ended before its outcome was recorded", job_id)
        log.info("job %s (%s): %s after %d attempt(s)", job_id, job.kind, status, job.attempts)
        return self.rows.get(job_id)

    def run_due(self, *, limit: int = 100) -> int:
        """Run the claimable jobs one after another; how many this runner ran."""
        done = 0
        for job_id in self.claimable(limit=limit):
            if self.run(job_id) is not None:
                done += 1
        return done

    def claimable(self, *, limit: int = 100) -> list[str]:
        """A read (an idle poll writes nothing): queued jobs and running ones whose runner died."""
        return self.rows.claimable(now=self.now(), limit=limit)

    def get_job(self, job_id: str) -> Job:
        try:
            wanted = str(uuid.UUID(job_id))
        except ValueError:
            raise NotFound(f"no job {job_id}") from None
        job = self.rows.get(wanted)
        if job is None:
            raise NotFound(f"no job {job_id}")
        return job

    def list_jobs(self, *, status: str | None = None, limit: int = 100) -> list[Job]:
        if status is not None and status not in STATUSES:
            raise InvalidRequest(f"no job status {status!r} (have: {', '.join(STATUSES)})", param="status")
        if not 1 <= limit <= MAX_LISTED:
            raise InvalidRequest(f"limit must be between 1 and {MAX_LISTED}", param="limit")
        return self.rows.list_jobs(status=status, limit=limit)

    def _abandon(self, now: float) -> None:
        error = {
            "message": f"the job's runner stopped before it ended, {self.max_attempts} times; not tried again",
            "code": "job_abandoned",
            "param": None,
        }
        self.rows.abandon(now=now, max_attempts=self.max_attempts, error=error)


class _Lease:
    """Renews a running job's claim every third of the lease until the job ends."""

    def __init__(self, jobs: Jobs, job_id: str, token: str) -> None:
        self.jobs, self.job_id, self.token = jobs, job_id, token
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"tallyhub-job-lease-{job_id}", daemon=True)

    def __enter__(self) -> None:
        self._thread.start()

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()

    def _renew(self) -> None:
        jobs = self.jobs
        while not self._stop.wait(jobs.lease_seconds / 3):
            try:
                if not jobs.rows.renew(self.job_id, self.token, jobs.now() + jobs.lease_seconds):
                    log.warning("job %s: its claim was lost while it ran", self.job_id)
                    return
            except Exception:  # the store is down for a moment: the next renewal tries again
                log.warning("job %s: renewing its claim failed", self.job_id, exc_info=True)
