"""The access log (``TALLYHUB_ACCESS_LOG=json``, the default; ``off``): one JSON line per
recorded request on the ``tallyhub.access`` logger, written to stderr.

A line is written when the request's record is durably saved (a ``RequestObserver``), so
every request the request log holds has exactly one line, whether it completed, failed or
was refused for credit (402). Requests refused before a record exists (401, 400, 413, 429 of
a rate limit) have none: the request log does not hold them either.

A line holds ids (dashed UUIDs), operator-defined names and figures: never a body, a secret,
an API key or an account's name.
"""

import logging
import sys
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
    """Writes each recorded request as one JSON line (a ``RequestObserver``)."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def recorded(self, request_id: UUID, details: RequestDetails, failed_attempts: int) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        self.logger.info(access_line(request_id, details, failed_attempts))


def access_line(request_id: UUID, details: RequestDetails, failed_attempts: int) -> str:
    usage = details.usage
    fields = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "request_id": str(request_id),
        "key_id": str(UUID(hex=details.api_key_id)),
        "account_id": str(UUID(hex=details.account_id)),
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
