"""What every answer of the gateway must be, whoever asked and whatever they sent:
no 5xx but an upstream's 502/503/504 on the routes that call one, errors in OpenAI's
shape (Anthropic's on ``/v1/messages``), no traceback text, no secret."""

import logging
from typing import Any

import orjson

from application.event_scan import scan
from application.verify import HOLD_SETTLED
from tests.fuzz.conftest import error_shape_problem, leaked_secret

# The routes that call a provider: a 502/503/504 there is the provider's failure, told honestly.
UPSTREAM_PATHS = frozenset(
    {
        "/v1/chat/completions",
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/responses",
        "/v1/embeddings",
        "/v1/images/generations",
    }
)
# The routes that answer errors in Anthropic's shape.
ANTHROPIC_PATHS = frozenset({"/v1/messages", "/v1/messages/count_tokens"})
UPSTREAM_STATUSES = frozenset({502, 503, 504})
TRACEBACK_MARKS = ("Traceback (most recent call last)", 'File "/', "site-packages/")


def answer_problem(path: str, status: int, headers: Any, body: bytes, secrets: list[str]) -> str | None:
    """Why this answer breaks a rule, or None."""
    text = body.decode("utf-8", errors="replace")
    if status >= 500 and not (path in UPSTREAM_PATHS and status in UPSTREAM_STATUSES):
        return f"status {status}: {text[:300]}"
    if any(mark in text for mark in TRACEBACK_MARKS):
        return f"traceback text in a {status} answer: {text[:300]}"
    leaked = leaked_secret(text + " " + " ".join(f"{k}: {v}" for k, v in headers.items()), secrets)
    if leaked:
        return f"secret {leaked} in a {status} answer"
    if status >= 400:
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            return f"{status} answer is not JSON: {text[:300]}"
        return error_shape_problem(status, document, anthropic=path in ANTHROPIC_PATHS)
    return None


def settled_charges(services: Any) -> tuple[int, list[dict[str, Any]]]:
    """How many holds were settled, and those that charged more than they held (credits mode;
    a charge made after its hold expired, ``held`` 0, is left out)."""
    settled = [event.state for event in scan(services.ledger.recorder, [HOLD_SETTLED])]
    over = [state for state in settled if state["held"] and state["amount"] + state["uncollected"] > state["held"]]
    return len(settled), over


class ExceptionLog(logging.Handler):
    """Collects log records that carry an exception (a traceback in the server's log)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "aiohttp.server":
            return  # the fake upstream's own server (the gateway serves with uvicorn, or in process)
        if record.exc_info and record.exc_info[0] is not None:
            self.records.append(record)

    def summary(self) -> list[str]:
        return [
            f"{r.name}: {r.getMessage()[:200]} ({r.exc_info[0].__name__ if r.exc_info and r.exc_info[0] else ''}: "
            f"{r.exc_info[1] if r.exc_info else ''})"
            for r in self.records
        ]

    def __enter__(self) -> "ExceptionLog":
        logging.getLogger().addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger().removeHandler(self)
