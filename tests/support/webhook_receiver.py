"""A webhook receiver on 127.0.0.1 for delivery tests: it verifies each request's
``Tallyhub-Signature`` the way docs/operations.md tells receivers to (HMAC-SHA256 of
``"<t>." + body``, constant-time compare), counts deliveries by event id, and answers
with the statuses a test scripts (``fail_first`` failures, or ``always`` one status).
"""

import hashlib
import hmac
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def signature_is_valid(secret: str, body: bytes, header: str, *, tolerance: int = 300) -> bool:
    """The documented receiver check (docs/operations.md, "Deliveries and signatures")."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    timestamp = parts.get("t", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > tolerance:
        return False
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))


@dataclass
class Received:
    event_id: str
    headers: dict[str, str]
    body: bytes
    signature_valid: bool

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    secret: str = "whsec_test"
    fail_first: int = 0  # answer 500 to this many requests, then 200
    always: int | None = None  # answer every request with this status
    redirect_to: str | None = None  # answer 302 with this Location
    received: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> "WebhookReceiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {key.lower(): value for key, value in self.headers.items()}
                status = receiver._record(headers, body)
                self.send_response(status)
                if status == 302 and receiver.redirect_to:
                    self.send_header("Location", receiver.redirect_to)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"no" if status >= 300 else b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def _record(self, headers: dict[str, str], body: bytes) -> int:
        valid = signature_is_valid(self.secret, body, headers.get("tallyhub-signature", ""))
        with self._lock:
            self.received.append(Received(headers.get("tallyhub-event-id", ""), headers, body, valid))
            if self.redirect_to:
                return 302
            if self.always is not None:
                return self.always
            return 500 if len(self.received) <= self.fail_first else 200

    def counts(self) -> Counter[str]:
        with self._lock:
            return Counter(item.event_id for item in self.received)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
