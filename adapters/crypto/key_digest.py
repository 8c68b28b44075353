"""API keys: high-entropy random text shown once, stored only as HMAC-SHA256 under a
server-side pepper, compared in constant time.

What may be shown of a key afterwards (its ``visible_prefix``) is its kind and its last
4 characters, ``thk_…x9Qz``: PRODUCT.md's masking rule, the same as a provider
credential's hint. Authentication never looks at it: a key is found by its digest."""

import hashlib
import hmac
import secrets

USER_KEY_PREFIX = "thk_"
ADMIN_KEY_PREFIX = "tha_"
SHOWN_TAIL_CHARS = 4


class HmacApiKeyScheme:
    def __init__(self, pepper: bytes) -> None:
        if len(pepper) < 32:
            raise ValueError("pepper must be at least 32 bytes")
        self._pepper = pepper

    def new_user_key(self) -> str:
        return USER_KEY_PREFIX + secrets.token_urlsafe(32)

    def new_admin_key(self) -> str:
        return ADMIN_KEY_PREFIX + secrets.token_urlsafe(32)

    def visible_prefix(self, key: str) -> str:
        """The key's kind (``thk_``/``tha_``) and its last 4 characters; nothing else of it."""
        kind = key[: len(USER_KEY_PREFIX)] if key.startswith((USER_KEY_PREFIX, ADMIN_KEY_PREFIX)) else ""
        tail = key[-SHOWN_TAIL_CHARS:] if len(key) >= 4 * SHOWN_TAIL_CHARS else ""
        return f"{kind}…{tail}"

    def digest(self, key: str) -> str:
        return hmac.new(self._pepper, key.encode(), hashlib.sha256).hexdigest()

    def matches(self, key: str, digest: str) -> bool:
        return hmac.compare_digest(self.digest(key), digest)
