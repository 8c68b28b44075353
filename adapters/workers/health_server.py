"""``tallyhub worker --health-port N``: ``GET /health`` and ``GET /ready`` for the worker, on
a small stdlib HTTP server in a thread of its own (the worker has no event loop).

``/health``: 200 ``{"status": "ok"}`` while the process answers. ``/ready``: 200 when the
worker's checks pass — the event store answers, the projection runner and the sweeps run,
no projection is stopped or more than ``TALLYHUB_READY_MAX_LAG_EVENTS`` behind — else 503,
in the same JSON shape as ``serve``'s (application/readiness.py). No key; nothing secret.
It listens on 127.0.0.1 unless ``--health-host`` says otherwise.
"""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from application.readiness import Readiness

HEALTHY = orjson.dumps({"status": "ok"})


class HealthServer:
    def __init__(self, host: str, port: int, readiness: Readiness) -> None:
        """Binds at once: OSError when the address cannot be had."""
        handler = type("_Handler", (_Handler,), {"readiness": readiness})
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> "HealthServer":
        self._thread = threading.Thread(target=self.server.serve_forever, name="tallyhub-health", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join(5)
        self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    readiness: Readiness
    server_version = "tallyhub-worker"
    sys_version = ""

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, *, body: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/health":
            status, payload = 200, HEALTHY
        elif path == "/ready":
            report = self.readiness.evaluate_blocking()
            status, payload = (200 if report.ok else 503), orjson.dumps(report.to_dict())
        else:
            status, payload = 404, orjson.dumps({"status": "not_found"})
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.send_header("cache-control", "no-store")
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a load balancer polls it: no line per poll
