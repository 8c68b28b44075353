"""The access log (``TALLYHUB_ACCESS_LOG=json``, the default; ``off``): one JSON line per
recorded request on the ``tallyhub.access`` logger, written to stderr.

A line is written when the request's record is durably saved (a ``RequestObserver``), so
every request the request log holds has exactly one line, whether it completed, failed or
was refused (402 for credit, 429 for a rate limit). A request under ``/v1/`` answered
without a record (401 bad key, 400 unreadable body, 404 unknown model, 413 too large, 429
too many failed authentications) gets its line from the HTTP edge when it is answered
(adapters/http/access_log.py ``AccessLogMiddleware``), with ``"recorded": false`` and what the edge knows: id, route,
status, latency; no key or account (none was authenticated).

A line holds ids (dashed UUIDs), operator-defined names and figures: never a body, a secret,
an API key or an account's name.

While the logger's one handler is the bare ``StderrLines`` it installs (no filter, nothing
else listening), a line is written straight to stderr under that handler's lock: what
``logging`` would write, without building a ``LogRecord`` per request (it looks up the
caller's frame, the thread and the process: about a third of a line's cost). Any other
set-up (a handler added, a filter, the level raised, ``logging.disable``) goes through
``logging`` as before.
"""

import logging
import sys
import threading
from datetime import UTC, datetime
from uuid import UUID

import orjson

from domain.money import format_credits
from domain.request_record import RequestDetails

LOGGER = "tallyhub.access"


def access_logger() -> logging.Logger:
    """The ``tallyhub.access`` logger, writing bare lines to stderr (its handler added once)."""
    logger = logging.getLogger(LOGGER)
    if not any(isinstance(handler, StderrLines) for handler in logger.handlers):
        logger.addHandler(StderrLines())
    logger.setLevel(logging.INFO)
    logger.propagate = False  # the line as it is, not again through the root's format
    return logger


class StderrLines(logging.Handler):
    """Each message as one line on the stderr of the moment (not the one at creation)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(record.getMessage() + "\n")
        except Exception:  # noqa: BLE001 - logging's own rule: report, never raise
            self.handleError(record)


class JsonAccessLog:
    """Writes each recorded request as one JSON line (a ``RequestObserver``), and, through
    ``AccessLogMiddleware``, each request under ``/v1/`` answered without a record."""

    RECENT = 65_536  # ids of recorded requests the edge has not yet looked for (bounded)

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        # request ids (their ``int``: a UUID's own hash is a Python call), insertion-ordered: the oldest dropped first
        self._recent: dict[int, None] = {}
        self._lock = threading.Lock()  # records are saved on the event loop and on threads

    def recorded(self, request_id: UUID, details: RequestDetails, failed_attempts: int) -> None:
        with self._lock:
            self._recent[request_id.int] = None
            if len(self._recent) > self.RECENT:  # a record the edge never looked for (its answer went first)
                del self._recent[next(iter(self._recent))]
        if self.logger.isEnabledFor(logging.INFO):
            self._write(access_line(request_id, details, failed_attempts))

    def answered(self, request_id: UUID, path: str, status: int, latency_ms: float) -> None:
        """The edge answered ``request_id``: write its line unless its record wrote one."""
        with self._lock:
            if self._recent.pop(request_id.int, False) is None:
                return
        if 200 <= status < 300 or not self.logger.isEnabledFor(logging.INFO):
            return  # a served request is always recorded (maybe after its answer: a stream left early)
        self._write(edge_line(request_id, path, status, latency_ms))

    def _write(self, line: str) -> None:
        """``logger.info(line)``; straight to stderr while only the bare handler listens (the
        module docstring). Called only when the logger is enabled for INFO."""
        handler = _only_bare_handler(self.logger)
        lock = handler.lock if handler is not None else None
        if handler is None or lock is None:
            self.logger.info(line)
            return
        with lock:  # as Handler.handle holds it: lines of two threads never interleave
            try:
                sys.stderr.write(line + "\n")
            except Exception:  # noqa: BLE001 - logging's own rule: report, never raise
                handler.handleError(logging.makeLogRecord({"name": self.logger.name, "msg": line}))


def _only_bare_handler(logger: logging.Logger) -> "StderrLines | None":
    """The logger's ``StderrLines`` when it is all that would see a line: its only handler, no
    filter on either, the handler's level lets INFO through, and nothing above the logger is
    told (it does not propagate, as ``access_logger`` sets it)."""
    handlers = logger.handlers
    if len(handlers) != 1 or logger.filters or logger.propagate:
        return None
    handler = handlers[0]
    if type(handler) is not StderrLines or handler.filters or handler.level > logging.INFO:
        return None
    return handler


def access_line(request_id: UUID, details: RequestDetails, failed_attempts: int) -> str:
    usage = details.usage
    fields = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "request_id": request_id,  # orjson writes a UUID as its dashed text, as str() does
        "key_id": _dashed(details.api_key_id),
        "account_id": _dashed(details.account_id),
        "route": details.endpoint,
        "model": details.model,
        "provider": details.provider,
        "stream": details.stream,
        "outcome": details.outcome,
        "status": details.status,
        "error_code": details.error_code,
        "latency_ms": details.latency_ms,
        "ttfb_ms": details.ttfb_ms,
        "failed_attempts": failed_attempts,
        "input_tokens": usage.input_tokens if usage else 0,
        "cached_input_tokens": usage.cached_input_tokens if usage else 0,
        "output_tokens": usage.output_tokens if usage else 0,
        "reasoning_tokens": usage.reasoning_tokens if usage else 0,
        "charge_nanocredits": details.charge,
        "charge_credits": format_credits(details.charge),
    }
    return orjson.dumps(fields).decode()


def _dashed(hex_id: str | None) -> str | None:
    """``str(UUID(hex=hex_id))`` for the 32 hex digits a record keeps, without parsing them again."""
    if hex_id is None:
        return None
    h = hex_id
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


ROUTES = {
    "/v1/chat/completions": "chat.completions",
    "/v1/messages": "messages",
    "/v1/messages/count_tokens": "messages.count_tokens",
    "/v1/responses": "responses",
    "/v1/embeddings": "embeddings",
    "/v1/images/generations": "images.generations",
}


def edge_line(request_id: UUID, path: str, status: int, latency_ms: float) -> str:
    fields = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "request_id": request_id,
        "key_id": None,
        "account_id": None,
        "route": ROUTES.get(path, path),
        "recorded": False,
        "status": status,
        "latency_ms": latency_ms,
    }
    return orjson.dumps(fields).decode()
