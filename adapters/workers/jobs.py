"""Running background jobs (application/jobs.py): the export and replay handlers the admin
API submits, the embedded-mode in-process loop, and server mode's dramatiq actor and poller.

Invariants kept here:
- the handlers are the synchronous admin requests' own code (``export_now``,
  ``run_replay``): a job's result is the document the synchronous answer gives;
- the row is the truth, a dramatiq message only a wake-up: the poller enqueues claimable
  rows (queued, or running under a lease that ended), so a lost message delays a job but
  never loses it, and a duplicated message finds the row claimed or done and does nothing;
- server mode declares its actor on the broker ``tallyhub worker`` already runs for the
  webhook deliveries (adapters/workers/deliveries.py): one broker, one dramatiq worker;
- ``serve`` only records jobs in server mode; the workers run them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio

from adapters.files import private_dir
from adapters.time_window import optional_instant
from application.jobs import JobHandler, Jobs
from domain.errors import InvalidRequest

if TYPE_CHECKING:
    from adapters.services import Services

log = logging.getLogger("tallyhub.jobs")
POLL_SECONDS = 1.0
QUEUE_NAME = "jobs"
ACTOR_NAME = "tallyhub_run_job"
TIME_LIMIT_MS = 24 * 3600 * 1000  # dramatiq's default (10 minutes) would cut a long export short
EXPORT, REPLAY = "export", "replay"


def export_params(kind: str, since: str | None, until: str | None, file_format: str) -> dict[str, Any]:
    """An export's parameters as a job keeps them; the window checked and in UTC ISO 8601."""
    window = optional_instant(since, "from"), optional_instant(until, "to")
    return {
        "kind": kind,
        "from": window[0].isoformat() if window[0] else None,
        "to": window[1].isoformat() if window[1] else None,
        "format": file_format,
    }


def export_now(services: Services, params: dict[str, Any]) -> dict[str, Any]:
    """Write the export into ``$TALLYHUB_DATA_DIR/exports/``; its manifest."""
    from adapters.exports.exporter import create_export

    kind, file_format = params["kind"], params["format"]
    folder = services.settings.data_dir / "exports"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = folder / f"{kind}-{stamp}-{secrets.token_hex(4)}.{file_format}"
    private_dir(folder)
    return create_export(
        services, kind, optional_instant(params["from"], "from"), optional_instant(params["to"], "to"), file_format, out
    )


def _check_export(params: dict[str, Any]) -> None:
    from adapters.exports.formats import FORMATS
    from domain.export_log import EXPORT_KINDS

    if params["kind"] not in EXPORT_KINDS:
        raise InvalidRequest(f"no export kind {params['kind']!r} (have: {', '.join(EXPORT_KINDS)})", param="kind")
    if params["format"] not in FORMATS:
        raise InvalidRequest(f"no export format {params['format']!r} (have: {', '.join(FORMATS)})", param="format")
    since, until = optional_instant(params["from"], "from"), optional_instant(params["to"], "to")
    if since is not None and until is not None and since >= until:
        raise InvalidRequest("the export window's start must be before its end", param="from")


def replay_params(price_text: str, since: str | None, until: str | None, account: str | None) -> dict[str, Any]:
    """A replay's parameters as a job keeps them (the price file's text, the window in UTC)."""
    window = optional_instant(since, "from"), optional_instant(until, "to")
    return {
        "prices": price_text,
        "from": window[0].isoformat() if window[0] else None,
        "to": window[1].isoformat() if window[1] else None,
        "account": account,
    }


def _check_replay(services: Services, params: dict[str, Any]) -> None:
    """What the replay can refuse before it reads history: the price file, the window, the account."""
    from application.pricing_input import parse_price_file
    from application.replay import ReplayPlan

    prices, _ = parse_price_file(params["prices"])
    if params["account"]:
        services.ledger.get_account(params["account"])
    ReplayPlan(prices, optional_instant(params["from"], "from"), optional_instant(params["to"], "to"))
    services.ledger.check_models_known(prices)


def _apply_replay(services: Services, params: dict[str, Any]) -> dict[str, Any]:
    from adapters.cli.replay_commands import run_replay

    return run_replay(
        services,
        params["prices"],
        since=optional_instant(params["from"], "from"),
        until=optional_instant(params["to"], "to"),
        account=params["account"],
        apply=True,
    )


def job_handlers(services: Services) -> dict[str, JobHandler]:
    return {
        EXPORT: JobHandler(check=_check_export, run=lambda params: export_now(services, params)),
        REPLAY: JobHandler(
            check=lambda params: _check_replay(services, params),
            run=lambda params: _apply_replay(services, params),
        ),
    }


def build_jobs(services: Services, *, now: Callable[[], float] = time.time) -> Jobs:
    """The jobs beside ``services``' events, running its exports and replays."""
    from adapters.persistence.job_store import job_rows_for

    recorder = services.ledger.recorder if services.ledger is not None else None  # None: a read-only test's
    return Jobs(job_rows_for(recorder), job_handlers(services), now=now)


async def run_jobs(jobs: Jobs, *, poll_seconds: float = POLL_SECONDS) -> None:
    """Embedded mode: the in-process runner, started by the server's lifespan and cancelled
    with it; a submitted job wakes it at once, the poll finds what a crash left behind."""
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()

    def queued(_ids: list[str]) -> None:
        loop.call_soon_threadsafe(wake.set)

    jobs.queued = queued
    try:
        while True:
            wake.clear()
            try:
                await anyio.to_thread.run_sync(jobs.run_due)
            except Exception:  # a failed round must not stop the next one
                log.exception("running background jobs failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), poll_seconds)
    finally:
        jobs.queued = None


class DramatiqJobs:
    """Server mode: a dramatiq actor runs each job; a poller enqueues the claimable rows."""

    def __init__(
        self, broker: Any, jobs: Jobs, *, poll_seconds: float = POLL_SECONDS, requeue_seconds: float = 30.0
    ) -> None:
        import dramatiq  # imported here: only server mode needs it

        self.jobs = jobs
        self.poll_seconds = poll_seconds
        self.requeue_seconds = requeue_seconds
        self.actor = dramatiq.actor(
            broker=broker, actor_name=ACTOR_NAME, queue_name=QUEUE_NAME, time_limit=TIME_LIMIT_MS
        )(self._run)
        self._enqueued: dict[str, float] = {}  # id -> when the poller last enqueued it

    def _run(self, job_id: str) -> None:
        self.jobs.run(job_id)

    def enqueue(self, job_ids: list[str]) -> None:
        """Wake a dramatiq worker for each job; a failure only delays them to the next poll."""
        try:
            for job_id in job_ids:
                self.actor.send(job_id)
        except Exception:
            log.warning("could not enqueue background jobs: the poller sends them", exc_info=True)

    def poll_once(self) -> int:
        """Enqueue the claimable jobs not enqueued in the last ``requeue_seconds``; how many."""
        now = self.jobs.now()
        due = self.jobs.claimable(limit=1000)
        fresh = [found for found in due if now - self._enqueued.get(found, float("-inf")) >= self.requeue_seconds]
        self._enqueued = {found: self._enqueued.get(found, now) for found in due}
        for job_id in fresh:
            self._enqueued[job_id] = now
        self.enqueue(fresh)
        return len(fresh)

    def run(self, stop: threading.Event) -> None:
        """The poller until ``stop`` (the deliveries' dramatiq worker consumes the actor's queue)."""
        while not stop.is_set():
            try:
                self.poll_once()
            except Exception:
                log.exception("polling background jobs failed")
            stop.wait(self.poll_seconds)
