"""``tallyhub serve`` under uvicorn: one process, or a supervisor of ``--workers`` processes,
each stopping gracefully on SIGTERM (application/shutdown.py has the policy).

On SIGTERM (or SIGINT) a serving process closes its listening socket and its idle
connections at once (uvicorn), its app starts the drain (adapters/http/drain.py), the
requests in flight get ``TALLYHUB_SHUTDOWN_GRACE_SECONDS`` to finish, the ones left are cut,
then the app's lifespan stops the account writer (flushing every settlement) and the
process exits 0. uvicorn's own ``timeout_graceful_shutdown`` is set ``FORCE_AFTER_SECONDS``
later, a backstop for a request the cut could not end.

The supervisor of ``--workers N`` also closes its copy of the listening socket at the
signal, so new connections are refused at once instead of waiting in the backlog of a
socket no process accepts on any more; it then signals each worker and waits for them.
"""

import math
import sys
from collections.abc import Generator
from contextlib import contextmanager

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from adapters.settings import Settings

FORCE_AFTER_SECONDS = 15  # after the grace: uvicorn cancels what is still running and stops
APP = "adapters.http.asgi:create_app_from_env"


def run_gateway(settings: Settings, *, host: str, port: int, workers: int) -> None:
    config = uvicorn.Config(
        APP,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level=settings.log_level,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_seconds) + FORCE_AFTER_SECONDS,
    )
    if config.workers > 1:
        _Supervisor(config, sockets=[config.bind_socket()]).run()
        return
    server = _Server(config)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    if not server.started:
        sys.exit(STARTUP_FAILURE)


class _Server(uvicorn.Server):
    """uvicorn's server, but a SIGTERM or SIGINT it stopped on gracefully is not raised again
    once it has stopped (uvicorn re-raises it, so the process would die of the signal): the
    graceful stop is the process's normal end, exit status 0."""

    @contextmanager
    def capture_signals(self) -> Generator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()


class _Supervisor(Multiprocess):
    def handle_term(self) -> None:
        self._stop_listening()
        super().handle_term()

    def handle_int(self) -> None:
        self._stop_listening()
        super().handle_int()

    def _stop_listening(self) -> None:
        """Close this process's copy of the listener; the workers close theirs at the signal
        that follows, and then the kernel refuses new connections."""
        for sock in self.sockets:
            sock.close()
