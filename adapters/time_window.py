"""Instants given by callers: the ``since``/``until`` and ``from``/``to`` query parameters
of the HTTP API and the CLI's ``--from``/``--to``/``--expires`` options, parsed by one rule.

An instant is ISO 8601 text (``2030-01-01``, ``2030-01-01T10:00:00Z``, ``…+02:00``); one
that names no zone is UTC. It is returned in UTC, so an instant whose UTC form is outside
the years 1–9999 (``0001-01-01T00:00:00+14:00``) is refused as a bad parameter naming
``param``, never an overflow deeper down (a plain-text 500 before).
"""

from datetime import UTC, datetime

from domain.errors import InvalidRequest

_SHOWN = 64  # characters of a refused value quoted back


def parse_instant(text: str, param: str) -> datetime:
    """``text`` as an aware UTC datetime; InvalidRequest naming ``param`` when it is not one."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidRequest(f"'{param}' is not an ISO 8601 time: {text[:_SHOWN]!r}", param=param) from None
    return utc_instant(value, param)


def optional_instant(text: str | None, param: str) -> datetime | None:
    return None if text is None or text == "" else parse_instant(text, param)


def utc_instant(value: datetime, param: str) -> datetime:
    """``value`` in UTC (UTC assumed when it names no zone), refused when UTC cannot hold it."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    try:
        return aware.astimezone(UTC)
    except OverflowError:
        raise InvalidRequest(f"'{param}' is out of range once in UTC: {value.isoformat()}", param=param) from None
