"""``tallyhub worker --health-port N``: ``GET /health`` and ``GET /ready`` for the worker, on
a small stdlib HTTP server in a thread of its own (the worker has no event loop).

``/health``: 200 ``{"status": "ok"}`` while the process answers. ``/ready``: 200 when the
worker's checks pass — the event store answers, the projection runner and the sweeps run,
no projection is stopped or more than ``TALLYHUB_READY_MAX_LAG_EVENTS`` behind — else 503,
in the same JSON shape as ``serve``'s (application/readiness.py). No key; nothing secret.
``/metrics``: the Prometheus gauges the worker can tell (projection lag and stops, open holds,
credentials cooling or disabled: adapters/metrics.py ``scrape_exposition``), behind
``TALLYHUB_METRICS_TOKEN`` when it is set, as ``serve``'s ``/metrics`` is.
It listens on 127.0.0.1 unless ``--health-host`` says otherwise.
"""

import hmac
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from application.readiness import Readiness

HEALTHY = orjson.dumps({"status": "ok"})
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
Exposition = Callable[[], bytes]


class HealthServer:
    def __init__(
        self,
        host: str,
        port: int,
        readiness: Readiness,
        metrics: Exposition | None = None,
        metrics_token: str | None = None,
    ) -> None:
        """Binds at once: OSError when the address cannot be had. ``metrics``: the Prometheus
        text of ``/metrics`` (None: no such route); ``metrics_token``: the bearer it asks for."""
        # a function kept on the class must not become a method of the handler
        exposition = None if metrics is None else staticmethod(metrics)
        handler = type(
            "_Handler", (_Handler,), {"readiness": readiness, "metrics": exposition, "metrics_token": metrics_token}
        )
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
    metrics: Exposition | None
    metrics_token: str | None
    server_version = "tallyhub-worker"
    sys_version = ""

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, *, body: bool) -> None:
        path = self.path.split("?", 1)[0]
        content_type = "application/json"
        if path == "/health":
            status, payload = 200, HEALTHY
        elif path == "/ready":
            report = self.readiness.evaluate_blocking()
            status, payload = (200 if report.ok else 503), orjson.dumps(report.to_dict())
        elif path == "/metrics" and self.metrics is not None:
            if self._metrics_allowed():
                status, payload, content_type = 200, self.metrics(), PROMETHEUS_TEXT
            else:
                message = "GET /metrics needs 'Authorization: Bearer <TALLYHUB_METRICS_TOKEN>'"
                error = {"message": message, "type": "authentication_error", "param": None, "code": "invalid_api_key"}
                status, payload = 401, orjson.dumps({"error": error})
        else:
            status, payload = 404, orjson.dumps({"status": "not_found"})
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(payload)))
        self.send_header("cache-control", "no-store")
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def _metrics_allowed(self) -> bool:
        if self.metrics_token is None:
            return True
        scheme, _, presented = (self.headers.get("authorization") or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            presented.strip().encode(), self.metrics_token.encode()
        )

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a load balancer polls it: no line per poll
