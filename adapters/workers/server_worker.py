"""``tallyhub worker``: server mode's background process. It keeps the read models up to date
and runs the periodic sweeps, so the ``serve`` processes spend their CPU on requests.

Invariants: projections are applied only by :class:`projections.runner.ProjectionRunner`
(each batch and its tracked position in one PostgreSQL transaction, under the projection's
advisory lock), so any number of workers — and the catch-up reads of ``serve`` and the
CLI — may run at once and every event is applied exactly once; a worker killed at any
point loses nothing and the next one resumes from the tracked positions. The Redis wake-up
only shortens the wait: without it (Redis down, a message lost) the fallback poll still
catches up within ``poll_seconds``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from adapters.services import Services
from adapters.settings import Settings, SettingsError
from adapters.workers.deliveries import DramatiqDeliveries, dispatcher_for, dramatiq_namespace
from adapters.workers.grant_notices import notice_expiring_grants
from adapters.workers.hold_sweeper import sweep
from adapters.workers.jobs import DramatiqJobs
from adapters.workers.wake import RedisWakeListener, wake_channel
from application.readiness import Check, CheckResult, Readiness, read_models_check, running_check, store_check
from application.shutdown import DEFAULT_GRACE_SECONDS

log = logging.getLogger("tallyhub.worker")

POLL_SECONDS = 1.0  # fallback when a wake-up is lost or Redis is down


def require_server_mode(settings: Settings) -> None:
    """Raise SettingsError, saying why, unless this is a server-mode deployment."""
    if not settings.redis_url:
        raise SettingsError(
            "TALLYHUB_REDIS_URL is not set: `tallyhub worker` is for server mode (PostgreSQL and Redis); "
            "in embedded mode `tallyhub serve` runs the projections and sweeps in-process"
        )
    if settings.database.kind != "postgres":
        raise SettingsError(
            "the store is SQLite: `tallyhub worker` needs TALLYHUB_DATABASE_URL=postgresql://… shared with "
            "the serve processes; on SQLite (embedded mode) `tallyhub serve` runs the projections and sweeps "
            "in-process"
        )


@dataclass
class WorkerReport:
    wakes: int = 0
    sweeps: int = 0
    released_holds: int = 0
    expired_grants: int = 0
    seconds: float = 0.0
    positions: dict[str, int] = field(default_factory=dict)
    cut: bool = False  # a thread was still busy when the shutdown grace ran out (left to a restart)


class ServerWorker:
    """The projections (woken through Redis, polling as a fallback) and the sweeps, until ``stop``."""

    def __init__(self, services: Services, *, poll_seconds: float = POLL_SECONDS) -> None:
        settings = services.settings
        require_server_mode(settings)
        assert settings.redis_url is not None
        self.services = services
        self.runner = services.read_models.runner
        self.runner.poll_interval = poll_seconds
        self.sweep_seconds = float(settings.sweep_interval_seconds)
        self.listener = RedisWakeListener(settings.redis_url, wake_channel(settings.redis_prefix), self.runner.wake)
        # webhook deliveries: dramatiq actors on Redis, and a poller re-enqueueing due rows (the table is the truth)
        self.deliveries = DramatiqDeliveries(
            settings.redis_url, dispatcher_for(services), namespace=dramatiq_namespace(settings.redis_prefix)
        )
        services.deliveries.queued = self.deliveries.enqueue  # notices this worker publishes wake an actor at once
        # background exports and replays: an actor on the same broker (declared before its worker starts)
        self.jobs = DramatiqJobs(self.deliveries.broker, services.jobs, poll_seconds=poll_seconds)
        self.report = WorkerReport()
        self._sweeper: threading.Thread | None = None
        self._stop: threading.Event | None = None  # set by SIGTERM: /ready answers 503 from then on

    @property
    def sweeps_running(self) -> bool:
        return self._sweeper is not None and self._sweeper.is_alive()

    def readiness(self) -> Readiness:
        """The worker's checks (``--health-port``): the store answers, the projection runner and
        the sweeps run, no projection stopped or further behind than TALLYHUB_READY_MAX_LAG_EVENTS."""
        runner, ledger = self.runner, self.services.ledger
        return Readiness(
            [
                store_check(ledger.recorder),
                running_check("projections", runner, "the projection runner"),
                running_check("sweeps", _Sweeps(self), "the sweeps thread"),
                read_models_check(runner, self.services.settings.ready_max_lag_events),
                Check("shutdown", self._shutdown_state, "the shutdown state cannot be checked"),
            ]
        )

    def _shutdown_state(self) -> CheckResult:
        if self._stop is not None and self._stop.is_set():
            return CheckResult(False, "shutting down")
        return CheckResult(True)

    def run(self, stop: threading.Event, *, grace_seconds: float = DEFAULT_GRACE_SECONDS) -> WorkerReport:
        """Until ``stop``; then the batch or sweep under way gets up to ``grace_seconds`` to end
        (each batch and each hold release is one transaction: one cut short is rolled back and
        done again by the next worker)."""
        started = time.monotonic()
        self._stop = stop
        self._sweeper = threading.Thread(target=self._sweeps, args=(stop,), name="tallyhub-sweeps", daemon=True)
        threads = [
            threading.Thread(target=self.listener.run, args=(stop,), name="tallyhub-wake-listener", daemon=True),
            self._sweeper,
            threading.Thread(
                target=self.deliveries.run,
                args=(stop,),
                kwargs={"grace_seconds": grace_seconds},
                name="tallyhub-webhook-deliveries",
                daemon=True,
            ),
            threading.Thread(target=self.jobs.run, args=(stop,), name="tallyhub-background-jobs", daemon=True),
        ]
        self.runner.start()
        for thread in threads:
            thread.start()
        log.info(
            "worker started: projections %s; sweeps every %.0f s",
            ", ".join(self.runner.projections),
            self.sweep_seconds,
        )
        try:
            while not stop.wait(0.5):
                pass
        finally:
            stop.set()
            deadline = time.monotonic() + grace_seconds
            self.runner.stop(timeout=grace_seconds)
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))
            self.report.cut = self.sweeps_running  # the listener only listens: nothing of it is cut
            if self.report.cut:
                log.warning("stopping after the %g s grace with work under way: it resumes on restart", grace_seconds)
        self.report.wakes = self.listener.wakes
        self.report.seconds = round(time.monotonic() - started, 3)
        self.report.positions = self.services.read_models.store.positions()
        log.info("worker stopped")
        return self.report

    def _sweeps(self, stop: threading.Event) -> None:
        """One sweep at start (holds a crashed serve left behind), then every interval."""
        while not stop.is_set():
            try:
                done = sweep(self.services)
            except Exception:  # a failed sweep must not stop the next one
                log.exception("sweep failed")
            else:
                self.report.sweeps += 1
                self.report.released_holds += done["released"]
                self.report.expired_grants += done["expired_grants"]
            try:  # rotated credentials whose grace period ended: recorded, and their secrets deleted
                self.services.provider_registry.retire_due_credentials()
            except Exception:
                log.exception("retiring rotated credentials failed")
            self.services.responses.purge_if_due()  # stored responses past the retention; logs its own failure
            notice_expiring_grants(self.services)  # grant.expiring notices; logs its own failure
            stop.wait(self.sweep_seconds)


class _Sweeps:
    """The sweeps thread as readiness sees it (application/readiness.py ``Running``)."""

    def __init__(self, worker: ServerWorker) -> None:
        self.worker = worker

    @property
    def running(self) -> bool:
        return self.worker.sweeps_running
