"""Deterministic aggregate ids. Uniqueness by identity: a second aggregate with the
same natural key collides with the first in the event store, so duplicates are
refused by the store itself rather than by a check-then-write."""

from functools import lru_cache
from uuid import UUID, uuid5

NAMESPACE = UUID("6f1d3c2a-58b4-4a57-9a8e-0c7e3b1d2f40")


def account_id(name: str) -> UUID:
    return uuid5(NAMESPACE, f"account:{name}")


@lru_cache(maxsize=1024)  # looked up on every request (routing); a SHA-1 each time otherwise
def provider_id(name: str) -> UUID:
    return uuid5(NAMESPACE, f"provider:{name}")


@lru_cache(maxsize=16_384)  # likewise for every authenticated request; digests are not secrets
def api_key_id(key_digest: str) -> UUID:
    return uuid5(NAMESPACE, f"api-key:{key_digest}")


def receipt_id(account: UUID, kind: str, idempotency_key: str) -> UUID:
    """One id per (account, kind of movement, idempotency key): grants, adjustments,
    payments and refunds each have their own key space."""
    return uuid5(NAMESPACE, f"{kind}:{account.hex}:{idempotency_key}")


PRICE_BOOK_ID = uuid5(NAMESPACE, "price-book")
DEPLOYMENT_ID = uuid5(NAMESPACE, "deployment")
CATALOG_ID = uuid5(NAMESPACE, "catalog")
REPLAY_LOG_ID = uuid5(NAMESPACE, "replay-log")


def export_log_id(kind: str) -> UUID:
    return uuid5(NAMESPACE, f"export-log:{kind}")
