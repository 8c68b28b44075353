"""Where the ``tallyhub.*`` loggers write in a ``serve`` worker process: uvicorn configures
only its own loggers, so without this a ``tallyhub`` line reached stderr only through
logging's last resort, at WARNING and above, with no time or level (the INFO line that
says Redis answers again was lost). The root logger is left alone: libraries' INFO lines
(one per HTTP call, for some) stay out of the gateway's output. ``tallyhub.access`` keeps
its own bare JSON lines (adapters/access_log.py)."""

import logging
import sys

LOGGER = "tallyhub"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _ServeLines(logging.StreamHandler):  # type: ignore[type-arg]  # StreamHandler[TextIO] at runtime
    """stderr, one line per record, as ``tallyhub worker`` writes them."""


def log_tallyhub_lines(level: str) -> None:
    """``tallyhub.*`` records at ``level`` (``TALLYHUB_LOG_LEVEL``: debug, info, warning, …)
    and above to stderr; calling it again changes nothing but the level."""
    logger = logging.getLogger(LOGGER)
    logger.setLevel(getattr(logging, level.upper(), logging.INFO))
    if not any(isinstance(handler, _ServeLines) for handler in logger.handlers):
        handler = _ServeLines(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        logger.addHandler(handler)
    logger.propagate = False
