"""The ``Tallyhub-Signature`` scheme, one implementation for both directions: the inbound
payment webhook verifies it (adapters/http/payments.py) and outbound webhook deliveries
carry it (adapters/workers/deliveries.py).

The header is ``t=<unix seconds>,v1=<hex>`` where ``<hex>`` is HMAC-SHA256 under the shared
secret of ``"<t>." + raw body``. A receiver refuses a timestamp further than its tolerance
from now, so a captured request cannot be replayed later.
"""

import hashlib
import hmac

from domain.errors import InvalidRequest

SIGNATURE_HEADER = "tallyhub-signature"


class InvalidSignature(InvalidRequest):
    code = "invalid_signature"


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The header value a sender puts on ``body``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, body: bytes, header: str | None, *, tolerance: int, now: float) -> None:
    """Raise InvalidSignature unless ``header`` signs ``body`` under ``secret`` within ``tolerance`` s of ``now``."""
    parts = dict(item.split("=", 1) for item in (header or "").split(",") if "=" in item)
    stamp = parts.get("t", "").strip()
    # Unix seconds: 12 ASCII digits reach past the year 30000; longer text is refused unread.
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
        raise InvalidSignature(f"missing or malformed {SIGNATURE_HEADER} header")
    timestamp = int(stamp)
    if abs(now - timestamp) > tolerance:
        raise InvalidSignature(f"the signature's timestamp is more than {tolerance} s from now")
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    # compared as bytes: compare_digest refuses str with non-ASCII characters (a TypeError, a 500)
    if not hmac.compare_digest(expected.encode(), parts.get("v1", "").encode("utf-8", "replace")):
        raise InvalidSignature("the signature does not match the body")
