"""The command line's argument types and the limits its help texts name, importable without
the application: the command table (adapters/cli/table.py) is built on every start, so
nothing here may import eventsourcing, the stores or a command's module.

Invariant: each constant here equals the one its owner keeps (named beside it);
tests/unit/test_cli_table.py compares them, so a change on one side fails there."""

import argparse
from datetime import datetime
from decimal import Decimal, InvalidOperation

from adapters.time_window import parse_instant
from domain.errors import InvalidRequest

MAX_CREDENTIAL_WEIGHT = 1_000_000  # domain.provider.MAX_CREDENTIAL_WEIGHT
MAX_GRACE_SECONDS = 30 * 24 * 3600  # application.api_keys.MAX_GRACE
EXPORT_KINDS = ("ledger", "usage", "requests")  # domain.export_log.EXPORT_KINDS
EXPORT_FORMATS = ("csv", "jsonl")  # adapters.exports.formats.FORMATS, in its order
UNRECORDED = "unrecorded"  # projections.audit.UNRECORDED
DEFAULT_LINK_TTL_HOURS = 1  # application.portal.DEFAULT_LINK_TTL
GENAI_PRICES = "genai-prices"  # adapters.catalogs.GENAI_PRICES
WEBHOOK_EVENT_TYPES = (  # domain.webhook.EVENT_TYPES
    "balance.low",
    "balance.exhausted",
    "spend_cap.reached",
    "credential.disabled",
    "credential.restored",
    "grant.expiring",
    "price.missing",
)
MAX_AUDIT_LIMIT = 10_000
MAX_DRIFT_DAYS = 3660


def iso_timestamp(text: str) -> datetime:
    """An ISO 8601 time from the command line, in UTC (UTC when it names no zone); refused
    by argparse, naming the option, when it is not one or falls outside UTC's years."""
    try:
        return parse_instant(text, "time")
    except InvalidRequest as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("'time' ", "", 1)) from None


def seconds_or_default(text: str) -> float | str:
    """A number of seconds, or ``default`` (the domain checks the range)."""
    if text == "default":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds or 'default', got {text!r}") from None


def grace_seconds(text: str) -> int:
    """``--grace-seconds``: whole seconds, 0 to the longest grace period (30 days)."""
    seconds = int(text) if text.isascii() and text.isdigit() and len(text) < 12 else -1
    if not 0 <= seconds <= MAX_GRACE_SECONDS:
        raise argparse.ArgumentTypeError(f"a grace period is 0 to {MAX_GRACE_SECONDS} seconds")
    return seconds


def audit_limit(text: str) -> int:
    """``audit --limit``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= MAX_AUDIT_LIMIT:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_AUDIT_LIMIT}, got {value}")
    return value


def requests_limit(text: str) -> int:
    """``requests --limit``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= 100_000:
        raise argparse.ArgumentTypeError("must be from 1 to 100000")
    return value


def deliveries_limit(text: str) -> int:
    """``webhooks deliveries --limit``."""
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise argparse.ArgumentTypeError(f"--limit must be a whole number from 1 to 1000, not {text!r}")
    return int(text)


def percent(text: str) -> Decimal:
    return _decimal(text, "a percentage")


def positive(text: str) -> Decimal:
    return _decimal(text, "a number")


def _decimal(text: str, what: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not value.is_finite():
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def drift_days(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_DRIFT_DAYS:
        raise argparse.ArgumentTypeError(f"expected a number of days from 1 to {MAX_DRIFT_DAYS}, got {text!r}")
    return int(text)


def model_list(text: str) -> list[str]:
    return [model.strip() for model in text.split(",") if model.strip()]
