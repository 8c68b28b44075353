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
from adapters.workers.hold_sweeper import sweep
from adapters.workers.wake import RedisWakeListener, wake_channel
from application.readiness import Readiness, read_models_check, running_check, store_check

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
        self.report = WorkerReport()
        self._sweeper: threading.Thread | None = None

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
            ]
        )

    def run(self, stop: threading.Event) -> WorkerReport:
        started = time.monotonic()
        self._sweeper = threading.Thread(target=self._sweeps, args=(stop,), name="tallyhub-sweeps", daemon=True)
        threads = [
            threading.Thread(target=self.listener.run, args=(stop,), name="tallyhub-wake-listener", daemon=True),
            self._sweeper,
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
            self.runner.stop()
            for thread in threads:
                thread.join(10)
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
            stop.wait(self.sweep_seconds)


class _Sweeps:
    """The sweeps thread as readiness sees it (application/readiness.py ``Running``)."""

    def __init__(self, worker: ServerWorker) -> None:
        self.worker = worker

    @property
    def running(self) -> bool:
        return self.worker.sweeps_running
